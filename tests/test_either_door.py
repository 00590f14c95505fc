"""The same model through either door: the synthetic marketplace exported as a stranger's files and benched from
one data spec on the command line gives the numbers the built-in route gives through the Python API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from offerlab.cli import main
from offerlab.data.stranger import LEVEL_NAMES, write_stranger_files

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "timing": {"defaults": str(ROOT / "configs/timing/default.yaml"), "data": {"returns": "keep"},
               "training": {"max_epochs": 2, "seeds": [0], "patience": 1, "validation_days": 28},
               "prediction": {"n_samples": 20}, "counts": {"steps": 40, "members": 1}},
    "uplift": {"base": str(ROOT / "configs/uplift/default.yaml"),
               "net": {"hidden": [16], "head_hidden": 8, "ensemble": 1, "patience": 2}, "trainer": {"max_epochs": 6}},
    "credit": {"base": str(ROOT / "configs/credit/default.yaml"), "net": {"members": 2, "patience": 2, "hidden": [8]},
               "trainer": {"max_epochs": 6}, "evaluation": {"peers": ["logistic"]}},
}


@pytest.fixture(scope="module")
def doors(tmp_path_factory):
    from offerlab.data.synth import synth_to_dir

    tmp = tmp_path_factory.mktemp("doors")
    synth_to_dir(2500, 4, tmp / "synth")
    from offerlab.data.synth import load_synth

    spec = write_stranger_files(load_synth(tmp / "synth"), tmp / "stranger")
    configs = {}
    for family, cfg in TINY.items():
        configs[family] = tmp / f"{family}.yaml"
        configs[family].write_text(yaml.safe_dump(cfg))
    return tmp, spec, configs


def _cli(*args) -> None:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_timing_through_either_door(doors):
    from offerlab.timing.bench import run_bench

    tmp, spec, configs = doors
    built = run_bench("synth", tmp / "t_built.json", synth_dir=str(tmp / "synth"), config=configs["timing"],
                      calibration_end="2024-06-30", holdout_end="2024-12-31", models=("offerlab", "pareto_nbd"))
    _cli("bench", "timing", "--data", spec, "--config", configs["timing"], "--models", "offerlab,pareto_nbd",
         "--out", tmp / "t_cli.json")
    cli = json.loads((tmp / "t_cli.json").read_text())
    assert cli["dataset"] == "stranger"
    for model in ("offerlab", "pareto_nbd"):
        for k in ("count_rmse", "auc_holdout", "c_index", "total_true"):
            assert cli["models"][model][k] == pytest.approx(built["models"][model][k], rel=1e-4, abs=1e-4), (model, k)


@pytest.mark.slow
def test_uplift_through_either_door(doors):
    from offerlab.uplift.bench import run_bench
    from offerlab.uplift.config import load_config

    tmp, spec, configs = doors
    cfg = load_config(configs["uplift"], {"data": {"dataset": "synth", "synth_dir": str(tmp / "synth")},
                                          "policy": {"margin": 0.4, "contact_cost": 0.1,
                                                     "returns": {"counted": True, "handling_cost": 3.0}}})
    built = run_bench(cfg, tmp / "u_built.json", seeds=2, models=("offerlab", "t_learner"), feature_oracle=False)
    _cli("bench", "uplift", "--data", spec, "--config", configs["uplift"], "--seeds", 2, "--models",
         "offerlab,t_learner", "--out", tmp / "u_cli.json")
    cli = json.loads((tmp / "u_cli.json").read_text())
    for model in ("offerlab", "t_learner"):
        ours, ref = cli["models"][model], built["models"][model]
        for lv, name in LEVEL_NAMES.items():
            if lv != "control":
                assert ours["qini"][name]["mean"] == pytest.approx(ref["qini"][lv]["mean"], abs=2e-3), (model, lv)
        assert ours["policy_value"]["mean"] == pytest.approx(ref["policy_value"]["mean"], rel=2e-2, abs=2e-3), model


@pytest.mark.slow
def test_credit_through_either_door(doors):
    from offerlab.credit.bench import run_bench
    from offerlab.credit.config import load_config

    tmp, spec, configs = doors
    built = run_bench(load_config(configs["credit"], {"data": {"dataset": "synth", "synth_dir": str(tmp / "synth")}}))
    _cli("bench", "credit", "--data", spec, "--config", configs["credit"], "--out", tmp / "c_cli.json")
    cli = json.loads((tmp / "c_cli.json").read_text())
    assert cli["rows"] == built["rows"] and cli["features"] == built["features"]
    for model in ("offerlab", "logistic"):
        for k in ("auc", "ece", "brier"):
            assert cli["models"][model][k] == pytest.approx(built["models"][model][k], abs=2e-3), (model, k)
