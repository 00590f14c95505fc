"""The credit step of the main job on a small synthetic marketplace (purchase-history features included)."""

import mlflow
import pandas as pd
import pytest

from offerlab.credit.jobs import main_job_step
from offerlab.data.synth import synth_to_dir


@pytest.mark.slow
def test_main_job_step_scores_every_application(tmp_path, mlflow_store):
    synth_dir = tmp_path / "synth"
    synth_to_dir(3000, 1, synth_dir)
    res = main_job_step(synth_dir, tmp_path / "credit")
    out = pd.read_parquet(res["output"])
    apps = pd.read_parquet(synth_dir / "applications.parquet")
    assert len(out) == len(apps) == res["scored_applications"]
    assert out["pd"].between(0, 1).all() and set(out["decision"]) <= {"approve", "decline"}
    # calibrated on average and better than chance against the known truth
    assert out["pd"].mean() == pytest.approx(apps["default"].mean(), abs=0.03)
    assert res["eval_auc"] > 0.6 and res["eval_auc_true_pd"] > res["eval_auc"] - 0.02
    # the observable oracle (the target's reference) is reported beside the raw true PD
    assert res["eval_auc_gap"] == pytest.approx(res["eval_auc_oracle"] - res["eval_auc"], abs=2e-5)  # rounded
    assert res["auc_true_pd_all"] > res["auc_oracle_all"] > 0.65
    # purchase history enters the reasons through the configured groups
    reasons = pd.concat([out[f"reason_{k}"] for k in range(1, 5)])
    assert reasons.str.startswith(("Time since last purchase", "Number of past purchases", "Spending with us",
                                   "Time as a customer", "Categories bought")).any()
    run = mlflow.get_run(res["run_id"])
    assert run.data.tags["data.name"] == "synth"
    assert "customer_id" not in mlflow.load_table("tables/reason_code_examples.json", run_ids=[res["run_id"]]).columns
