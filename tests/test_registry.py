import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from offerlab import registry, tracking


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.Series([0.5] * len(model_input))


def candidate(auc: float, fingerprint: str = "fp-a") -> str:
    with tracking.start_run("credit", "cand") as run:
        mlflow.log_metric("eval_auc", auc)
        mlflow.set_tag(registry.EVAL_FINGERPRINT_TAG, fingerprint)
        mlflow.pyfunc.log_model(name="model", python_model=Constant(), input_example=pd.DataFrame({"x": [1.0]}))
    return run.info.run_id


def versions() -> int:
    return len(MlflowClient().search_model_versions("name = 'offerlab-credit'"))


def test_promotion_moves_champion_only_on_evidence(mlflow_store):
    first = registry.promote("credit", candidate(0.70))
    assert first.promoted and first.version == "1" and "first champion" in first.reason

    worse = registry.promote("credit", candidate(0.65))
    assert not worse.promoted
    assert "does not beat champion version 1 eval_auc=0.7" in worse.reason
    assert versions() == 1

    other_data = registry.promote("credit", candidate(0.90, fingerprint="fp-b"))
    assert not other_data.promoted and other_data.reason.startswith("not comparable")
    assert versions() == 1

    better = registry.promote("credit", candidate(0.75))
    assert better.promoted and better.version == "2"
    assert str(MlflowClient().get_model_version_by_alias("offerlab-credit", "champion").version) == "2"
    rows = registry.list_models("credit")
    assert [(r["version"], r["aliases"]) for r in rows] == [(2, ["champion"]), (1, [])]
    assert rows[0]["eval_auc"] == pytest.approx(0.75)


def test_promotion_refuses_run_without_metric(mlflow_store):
    with tracking.start_run("credit", "no-metric") as run:
        mlflow.log_metric("loss", 1.0)
    with pytest.raises(ValueError, match="has no metric 'eval_auc'"):
        registry.promote("credit", run.info.run_id)
    with pytest.raises(ValueError, match="unknown family"):
        registry.promote("pricing", run.info.run_id)


def test_cli_promote_and_models(mlflow_store):
    from click.testing import CliRunner

    from offerlab.cli import main

    good, bad = candidate(0.8), candidate(0.6)
    r = CliRunner().invoke(main, ["promote", "credit", "--run", good])
    assert r.exit_code == 0 and "promoted: version 1 is now 'champion'" in r.output
    r = CliRunner().invoke(main, ["promote", "credit", "--run", bad])
    assert r.exit_code == 1 and "not promoted: candidate eval_auc=0.6 does not beat" in r.output
    r = CliRunner().invoke(main, ["models"])
    assert "offerlab-credit v1 [champion]" in r.output and "eval_auc=0.8" in r.output
