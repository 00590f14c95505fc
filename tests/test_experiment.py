"""Experiment specs: validation before work, a quick end-to-end run, table numbers = bench JSON numbers."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from offerlab.cli import main
from offerlab.experiment import expand_dotted, plan_experiment, run_experiment
from offerlab.experiment_report import aggregate_runs, markdown_table, results_table

CREDIT_TINY = {
    "family": "credit",
    "data": {"dataset": "german"},
    "config": "configs/credit/german.yaml",
    "overlay": {"net.members": 2, "trainer": {"max_epochs": 3}, "evaluation.folds": 3},
    "report": {"metrics": ["auc", "brier", "ece", "auc_fold"], "peers": ["logistic"]},
}


def write_spec(tmp_path, spec: dict, name: str = "tiny.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expand_dotted_merges_with_nested_keys():
    got = expand_dotted({"net.members": 2, "net": {"lr": 0.1}, "trainer": {"a.b": 1}})
    assert got == {"net": {"members": 2, "lr": 0.1}, "trainer": {"a": {"b": 1}}}


@pytest.mark.parametrize("change, message", [
    ({"overlays": {}}, "key 'overlays': Extra inputs are not permitted"),
    ({"family": "churn"}, "key 'family'"),
    ({"seeds": [0, 0]}, "key 'seeds'"),
    ({"report": {"metrics": ["aucc"]}}, "key 'report.metrics': unknown 'aucc'"),
    ({"report": {"peers": ["xgboost"]}}, "key 'report.peers': unknown 'xgboost'"),
    ({"config": "configs/credit/nosuch.yaml"}, "key 'config': file not found"),
    ({"overlay": {"net.memberz": 2}}, "memberz"),
])
def test_bad_spec_is_refused_naming_file_and_key(tmp_path, change, message):
    path = write_spec(tmp_path, {**CREDIT_TINY, **change})
    with pytest.raises(ValueError) as e:
        plan_experiment(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_uplift_seeds_must_be_consecutive(tmp_path):
    spec = {"family": "uplift", "data": {"dataset": "synth", "customers": 200}, "seeds": [0, 2]}
    with pytest.raises(ValueError, match="key 'seeds': uplift split seeds must be consecutive"):
        plan_experiment(write_spec(tmp_path, spec))


def test_cli_refuses_bad_spec_in_one_line(tmp_path):
    path = write_spec(tmp_path, {**CREDIT_TINY, "seeds": []})
    r = CliRunner().invoke(main, ["experiment", "check", str(path)])
    assert r.exit_code == 2
    assert f"error: experiment spec {path}: key 'seeds'" in r.output


def test_shipped_specs_validate():
    specs = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
    assert {"timing_cdnow", "uplift_hillstrom", "credit_german"} <= {p.stem for p in specs}
    for path in specs:
        for quick in (False, True):
            plan = plan_experiment(path, quick)
            assert plan.spec.name == path.stem and plan.seeds and plan.peers


def test_empty_peers_means_ours_alone(tmp_path):
    plan = plan_experiment(write_spec(tmp_path, {**CREDIT_TINY, "report": {"peers": []}}))
    assert plan.peers == [] and plan.metrics == ["auc", "gini", "ks", "brier", "ece", "auc_fold"]


def test_quick_run_end_to_end_table_equals_bench_json(tmp_path, mlflow_store):
    path = write_spec(tmp_path, {**CREDIT_TINY, "quick": {"overlay": {"trainer.max_epochs": 2}}})
    r = CliRunner().invoke(main, ["experiment", "run", str(path), "--quick", "--out-dir", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "res" / "tiny_quick"
    assert {p.name for p in folder.iterdir()} == {"tiny_quick.json", "tiny_quick.md", "tiny_quick.csv",
                                                  "tiny_quick_metrics.png"}
    bench = json.loads((folder / "tiny_quick.json").read_text())
    assert bench["task"] == "credit" and list(bench["models"]) == ["offerlab", "logistic"]
    assert bench["experiment"]["overlay"]["trainer"]["max_epochs"] == 2  # quick block on top of the overlay
    assert bench["experiment"]["overlay"]["evaluation"]["folds"] == 3
    table = pd.read_csv(folder / "tiny_quick.csv", index_col="model")
    for model, m in bench["models"].items():
        for k in ("auc", "brier", "ece"):
            assert table.loc[model, k] == pytest.approx(m[k], rel=1e-12)
        assert table.loc[model, "auc_fold"] == pytest.approx(m["auc_fold"]["mean"], rel=1e-12)
        assert table.loc[model, "auc_fold_std"] == pytest.approx(m["auc_fold"]["std"], rel=1e-12)
    md = (folder / "tiny_quick.md").read_text()
    assert f"{bench['models']['logistic']['auc']:.4f}" in md and "MLflow" not in md
    assert "MLflow: run " in r.output


def test_failed_run_keeps_earlier_outputs(tmp_path, monkeypatch):
    from offerlab import experiment

    path = write_spec(tmp_path, CREDIT_TINY)
    folder = tmp_path / "res" / "tiny"
    folder.mkdir(parents=True)
    (folder / "tiny.md").write_text("earlier")

    def boom(plan, out):
        raise RuntimeError("bench failed")

    monkeypatch.setitem(experiment.FAMILIES, "credit", experiment.FAMILIES["credit"].__class__(
        **{**experiment.FAMILIES["credit"].__dict__, "run": boom}))
    with pytest.raises(RuntimeError):
        run_experiment(path, tmp_path / "res", track=False)
    assert (folder / "tiny.md").read_text() == "earlier" and [p.name for p in folder.iterdir()] == ["tiny.md"]


def test_seed_aggregation_is_mean_and_sample_std():
    runs = [{"models": {"offerlab": {"auc": a, "auc_fold": {"mean": a, "std": 0.1}, "qini": {"A": q}}}}
            for a, q in ((0.70, 1.0), (0.80, 2.0), (0.75, 6.0))]
    agg = aggregate_runs(runs, ["auc", "auc_fold", "qini"])["offerlab"]
    assert agg["auc"]["mean"] == pytest.approx(0.75) and agg["auc"]["std"] == pytest.approx(0.05)
    assert agg["qini.A"] == {"mean": pytest.approx(3.0), "std": pytest.approx(math.sqrt(7.0))}
    assert "auc_fold_std" not in agg  # within-run fold spreads are not averaged over seeds
    table = results_table({"models": {"offerlab": agg}, "runs": runs}, ["auc"])
    assert table.loc["offerlab", "qini.A_std"] == pytest.approx(math.sqrt(7.0))
    assert "0.7500 ± 0.0500" in markdown_table(table)


def test_per_treatment_metrics_and_ci_become_columns():
    result = {"models": {"x": {"qini": {"A": {"mean": 0.1, "std": 0.0}}, "policy_value_ci": [-0.5, 1.5]},
                         "offerlab": {"qini": {"A": {"mean": 0.2, "std": 0.0}}, "policy_value_ci": [0.0, 2.0]}}}
    table = results_table(result, ["qini", "policy_value_ci"])
    assert list(table.index) == ["offerlab", "x"]  # ours first
    assert list(table.columns) == ["qini.A", "policy_value_ci.low", "policy_value_ci.high"]  # all-zero std dropped
    assert "| **offerlab** | 0.2000 | [0.0000, 2.0000] |" in markdown_table(table)


@pytest.mark.slow
def test_timing_two_seeds_on_small_synth(tmp_path):
    spec = {"family": "timing", "data": {"dataset": "synth", "customers": 300, "synth_seed": 1},
            "seeds": [0, 1], "quick": {"seeds": [0, 1]}, "report": {"peers": ["naive"], "metrics": ["count_mae", "auc_holdout"]}}
    out = run_experiment(write_spec(tmp_path, spec, "t.yaml"), tmp_path / "res", quick=True, track=False)
    bench = json.loads((tmp_path / "res" / "t_quick" / "t_quick.json").read_text())
    assert [r["experiment"] if "experiment" in r else None for r in bench["runs"]] == [None, None]
    seeds = [r["config"]["training"]["seeds"] for r in bench["runs"]]
    assert seeds == [[0], [1000]]
    maes = [r["models"]["offerlab"]["count_mae"] for r in bench["runs"]]
    assert out["table"].loc["offerlab", "count_mae"] == pytest.approx(sum(maes) / 2)
    naive = [r["models"]["naive"]["count_mae"] for r in bench["runs"]]
    assert naive[0] == naive[1]  # the peer is deterministic: the same split, the same number
