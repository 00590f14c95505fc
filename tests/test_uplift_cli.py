"""`offerlab bench uplift` / `offerlab train uplift` end to end on tiny data, and refused bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from offerlab.cli import main

FAST = {"net": {"hidden": [16], "head_hidden": 8, "ensemble": 1, "batch_size": 512, "patience": 2},
        "trainer": {"max_epochs": 8}}


@pytest.fixture()
def campaign_files(tmp_path):
    """A small user campaign log (Hillstrom-like columns) with a mapping YAML and a fast config."""
    rng = np.random.default_rng(0)
    n = 6000
    arm = rng.choice(["none", "mail"], n)
    recency = rng.integers(1, 13, n)
    buy = (rng.random(n) < 0.1 + 0.3 * (arm == "mail") * (recency < 6)).astype(int)
    pd.DataFrame({"user": [f"u{i}" for i in range(n)], "arm": arm, "bought": buy,
                  "spend": buy * rng.gamma(3, 10, n), "recency": recency,
                  "channel": rng.choice(["web", "phone"], n)}).to_csv(tmp_path / "log.csv", index=False)
    mapping = {"table": "campaign", "columns": {"customer_id": "user", "treatment": "arm", "conversion": "bought",
                                                "revenue": "spend"},
               "treatments": ["none", "mail"], "control": "none", "keep": ["recency", "channel"]}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(mapping))
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump({**FAST, "data": {"dataset": "mapped", "outcome": "conversion"},
                                                        "policy": {"margin": 0.3, "contact_cost": 0.5,
                                                                   "discounts": {"mail": 0.0}}}))
    return tmp_path


def test_bench_on_a_mapped_campaign_log(campaign_files, tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, [
        "bench", "uplift", "--data-path", str(campaign_files / "log.csv"), "--mapping", str(campaign_files / "map.yaml"),
        "--config", str(campaign_files / "fast.yaml"), "--seeds", "2", "--models", "offerlab,t_learner",
        "--margin", "0.3", "--contact-cost", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["task"] == "uplift" and set(r["models"]) == {"offerlab", "t_learner"}
    ours = r["models"]["offerlab"]
    assert set(ours["qini"]) == {"mail"} and {"mean", "std"} <= set(ours["qini"]["mail"])
    assert ours["qini"]["mail"]["mean"] > 0.05  # the effect is real and concentrated on low recency
    assert len(ours["policy_value_ci"]) == 2
    assert "margin 0.3" in r["protocol"] and "contact cost 0.5" in r["protocol"]


def test_bench_refuses_bad_input_and_keeps_earlier_output(campaign_files, tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("earlier")
    res = CliRunner().invoke(main, ["bench", "uplift", "--dataset", "hillstrom", "--models", "offerlab,cart",
                                    "--out", str(out)])
    assert res.exit_code == 2 and "unknown model" in res.output
    bad_map = campaign_files / "bad.yaml"
    m = yaml.safe_load((campaign_files / "map.yaml").read_text())
    m["treatments"] = ["none"]
    bad_map.write_text(yaml.safe_dump(m))
    res = CliRunner().invoke(main, ["bench", "uplift", "--data-path", str(campaign_files / "log.csv"),
                                    "--mapping", str(bad_map), "--config", str(campaign_files / "fast.yaml"),
                                    "--out", str(out)])
    assert res.exit_code == 2 and "treatment" in res.output
    assert out.read_text() == "earlier"


@pytest.mark.slow
def test_train_logs_run_with_pyfunc_model(mlflow_store, tmp_path):
    import mlflow

    from offerlab.data.synth import synth_to_dir

    synth_to_dir(3000, 0, tmp_path / "synth")
    cfg = {"base": None, **FAST, "name": "t", "data": {"dataset": "synth", "synth_dir": str(tmp_path / "synth")},
           "policy": {"margin": 0.4, "contact_cost": 0.1, "returns": {"counted": True, "handling_cost": 3.0}}}
    cfg.pop("base")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(main, ["train", "uplift", "--config", str(tmp_path / "c.yaml"), "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    run = mlflow.get_run(summary["run_id"])
    assert "eval_qini" in run.data.metrics and "oracle_share_budget_0.3" in run.data.metrics
    model = mlflow.pyfunc.load_model(f"runs:/{summary['run_id']}/model")
    from offerlab.data.synth import load_synth
    from offerlab.uplift.data import from_synth

    feats = from_synth(load_synth(tmp_path / "synth")).features.head(20)
    pred = model.predict(feats.assign(customer_id=[f"c{i}" for i in range(20)]))
    assert len(pred) == 20 and set(pred["level"]) <= {"control", "discount_05", "discount_10", "discount_15"}


@pytest.mark.slow
def test_main_job_step(mlflow_store, tmp_path):
    from offerlab.data.synth import synth_to_dir
    from offerlab.uplift.jobs import main_job_step

    synth_to_dir(3000, 1, tmp_path / "synth")
    out = main_job_step(tmp_path / "synth", tmp_path / "work")
    rec = pd.read_parquet(out["output"])
    assert out["customers_scored"] == len(rec) > 1000
    assert {"customer_id", "level", "expected_incremental_profit", "level_budget_30pct"} <= set(rec.columns)
