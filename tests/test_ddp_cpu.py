"""Lightning DDP by config alone: the credit family trains with two CPU processes (gloo) and logs its model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "credit"


@pytest.mark.slow
def test_credit_trains_with_two_ddp_processes_from_config_alone(tmp_path, mlflow_store):
    mlflow.set_tracking_uri(mlflow_store)  # an earlier test may have set another store in this process
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(f"base: {CONFIGS / 'german.yaml'}\n"
                   "net: {members: 1, hidden: [4], patience: 2, batch_size: 64}\n"
                   "trainer: {accelerator: cpu, devices: 2, strategy: ddp_spawn, max_epochs: 2}\n"
                   "tracking: {reason_examples: 0}\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "offerlab.cli", "train", "credit", "--config", str(cfg), "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout  # Lightning really ran two ranks
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    run = mlflow.get_run(summary["run_id"])
    assert run.data.params["trainer.strategy"] == "ddp_spawn" and run.data.params["trainer.devices"] == "2"
    assert 0.5 < run.data.metrics["eval_auc"] <= 1.0
    assert mlflow.models.get_model_info(f"runs:/{summary['run_id']}/model").flavors  # the model is logged
