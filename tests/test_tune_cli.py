"""`offerlab tune FAMILY` end to end on tiny data: trials as nested MLflow runs, a best YAML that
`offerlab train` accepts, promotion of the best trial, resume, and refused bad input."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from click.testing import CliRunner

from offerlab.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TIMING_TINY = ["--set", "data.customers=300", "--set", "training.seeds=[0]", "--set", "training.max_epochs=2",
               "--set", "training.validation_days=30", "--set", "prediction.n_samples=10",
               "--set", "mlflow.log_model=false"]


def _tune(family: str, config: Path, tmp_path: Path, study: str, trials: int, extra: list[str]):
    args = ["tune", family, "--config", str(config), "--trials", str(trials), "--study", study,
            "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--out", str(tmp_path / f"{study}.yaml"),
            "--no-progress", *extra]
    return CliRunner().invoke(main, args)


def _children(parent_id: str) -> list:
    exp = mlflow.get_run(parent_id).info.experiment_id
    return mlflow.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", output_format="list")


def _parent_id(output: str) -> str:
    return output.split("MLflow parent: run ")[1].split()[0]


def test_tune_credit_best_config_trains_and_best_trial_promotes(tmp_path, mlflow_store):
    r = _tune("credit", CONFIGS / "credit" / "german.yaml", tmp_path, "c", 2,
              ["--set", "net.members=2", "--set", "net.hidden=[4]", "--set", "net.patience=2",
               "--set", "trainer.max_epochs=4", "--set", "tracking.reason_examples=0"])
    assert r.exit_code == 0, r.output
    assert "study c: 2 trials" in r.output and "best val_auc=" in r.output
    children = _children(_parent_id(r.output))
    assert len(children) == 2 and all(c.data.tags["offerlab.study"] == "c" for c in children)
    values = [c.data.metrics["val_auc"] for c in children]
    assert all(0.5 < v < 1 for v in values) and all("eval_auc" in c.data.metrics for c in children)
    best_run = r.output.split("best trial run: ")[1].split()[0]
    assert mlflow.get_run(best_run).data.metrics["val_auc"] == pytest.approx(max(values))
    best = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert best["net"]["members"] == 2 and 1e-3 <= best["net"]["lr"] <= 3e-2  # fixed --set kept, lr from the space
    decision = CliRunner().invoke(main, ["promote", "credit", "--run", best_run])
    assert decision.exit_code == 0 and "promoted: version 1 is now 'champion'" in decision.output
    (tmp_path / "c_nolog.yaml").write_text(yaml.safe_dump({**best, "tracking": {"log_model": False, "reason_examples": 0}}))
    trained = CliRunner().invoke(main, ["train", "credit", "--config", str(tmp_path / "c_nolog.yaml"), "--no-progress"])
    assert trained.exit_code == 0, trained.output


def test_tune_timing_resumes_with_the_same_command(tmp_path, mlflow_store):
    first = _tune("timing", CONFIGS / "timing" / "synth.yaml", tmp_path, "t", 1, TIMING_TINY)
    assert first.exit_code == 0, first.output
    again = _tune("timing", CONFIGS / "timing" / "synth.yaml", tmp_path, "t", 2, TIMING_TINY)
    assert again.exit_code == 0, again.output
    assert "study t: 2 trials" in again.output
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 2  # the second call ran one more, not two
    parent = _parent_id(again.output)
    assert parent == _parent_id(first.output)
    children = _children(parent)
    assert len(children) == 2 and all("eval_nll" in c.data.metrics and "val_loss" in c.data.metrics for c in children)
    from offerlab.timing.train import load_config

    assert load_config(tmp_path / "t.yaml").training.seeds == [0]  # `offerlab train timing` reads it


def test_tune_uplift_logs_promotable_trials(tmp_path, mlflow_store):
    r = _tune("uplift", CONFIGS / "uplift" / "synth.yaml", tmp_path, "u", 2,
              ["--set", "data.customers=600", "--set", "net.ensemble=1", "--set", "trainer.max_epochs=2"])
    assert r.exit_code == 0, r.output
    children = _children(_parent_id(r.output))
    assert len(children) == 2
    assert all(c.data.metrics["eval_qini"] == c.data.metrics["eval_qini"] for c in children)  # logged, not NaN
    # the study selects on a validation share of the training rows, never on the test split it reports
    assert all(c.data.metrics["val_qini"] == c.data.metrics["val_qini"] for c in children)
    assert all(int(c.data.metrics["n_train"]) == 336 for c in children)  # 600 rows -> 420 train -> 336 fit, 84 val
    assert all(c.data.tags.get("offerlab.eval_fingerprint") for c in children)
    from offerlab.uplift.config import load_config

    assert load_config(tmp_path / "u.yaml").net.ensemble == 1


def test_tune_refuses_a_search_space_for_another_metric_and_unknown_keys(tmp_path, mlflow_store):
    r = _tune("credit", CONFIGS / "credit" / "german.yaml", tmp_path, "x", 1,
              ["--search", str(CONFIGS / "timing" / "search.yaml")])
    assert r.exit_code == 2 and "metric must be 'val_auc' with direction 'maximize' for credit" in r.output
    r = _tune("credit", CONFIGS / "credit" / "german.yaml", tmp_path, "x", 1, ["--set", "net.nope=3"])
    assert r.exit_code == 2 and "the config has no key 'net.nope'" in r.output
    r = _tune("credit", CONFIGS / "credit" / "german.yaml", tmp_path, "x", 1, ["--set", "net.lr"])
    assert r.exit_code == 2 and "expected KEY=VALUE" in r.output


@pytest.mark.slow
def test_tune_killed_mid_study_resumes_with_the_same_command(tmp_path, mlflow_store):
    """SIGKILL a worker after its first trial; the same command finishes the study (stale trial retried)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "offerlab.cli", "tune", "timing", "--config", str(CONFIGS / "timing" / "synth.yaml"),
           "--trials", "3", "--study", "k", "--storage", storage, "--out", str(tmp_path / "k.yaml"), "--no-progress",
           *TIMING_TINY]
    env = {**os.environ, "OFFERLAB_TUNE_HEARTBEAT_S": "1", "OFFERLAB_TUNE_GRACE_S": "3", "PYTHONWARNINGS": "ignore"}
    worker = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and worker.poll() is None:
        time.sleep(1)
        try:
            study = optuna.load_study(study_name="k", storage=storage)
            done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        except Exception:  # the worker has not created the study yet
            continue
        if done >= 1:
            break
    assert done >= 1, "the worker finished no trial in time"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    time.sleep(4)  # past the grace period: the killed worker's RUNNING trial is stale
    rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "study k: 3 trials" in rerun.stdout
    states = [t.state for t in optuna.load_study(study_name="k", storage=storage).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert optuna.trial.TrialState.RUNNING not in states
