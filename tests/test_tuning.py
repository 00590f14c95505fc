import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from offerlab import tuning
from toy_objective import TOY_CONFIG, TOY_SPACE, toy_objective

TESTS = Path(__file__).parent


def space():
    return tuning.SearchSpace.model_validate(TOY_SPACE)


def test_search_space_refuses_unknown_key(tmp_path):
    bad = {**TOY_SPACE, "params": {"model.width": {"type": "int", "low": 1, "high": 3}}}
    with pytest.raises(ValueError, match="search parameter 'model.width': the config has no key 'model.width'"):
        tuning.run_study("timing", TOY_CONFIG, tuning.SearchSpace.model_validate(bad), toy_objective, trials=1,
                         storage=f"sqlite:///{tmp_path}/s.db", study_name="s", out_path=tmp_path / "b.yaml")
    (tmp_path / "s.yaml").write_text("direction: minimize\nmetric: m\nparams: {a: {type: int, low: 3, high: 1}}\n")
    with pytest.raises(ValueError, match="needs low <= high"):
        tuning.load_search_space(tmp_path / "s.yaml")


def test_study_nested_runs_best_config_and_resume(tmp_path, mlflow_store):
    storage = f"sqlite:///{tmp_path}/study.db"
    out = tmp_path / "best.yaml"
    r1 = tuning.run_study("timing", TOY_CONFIG, space(), toy_objective, trials=3, storage=storage,
                          study_name="toy", out_path=out, show_progress=False)
    assert r1.n_finished == 3
    r2 = tuning.run_study("timing", TOY_CONFIG, space(), toy_objective, trials=5, storage=storage,
                          study_name="toy", out_path=out, show_progress=False)
    assert r2.n_finished == 5 and r2.parent_run_id == r1.parent_run_id
    assert r2.best_value <= r1.best_value
    best = yaml.safe_load(out.read_text())
    assert best["model"]["hidden"] == r2.best_params["model.hidden"]
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{r1.parent_run_id}'", search_all_experiments=True)
    assert len(children) == 5  # every trial is a nested run
    study = optuna.load_study(study_name="toy", storage=storage)
    assert len(study.trials) == 5
    assert study.trials[0].params == {"model.hidden": 8, "model.lr": 0.01}  # trial 0 = the base config, to beat


@pytest.mark.slow
def test_killed_study_resumes_with_same_command(tmp_path, mlflow_store):
    storage = f"sqlite:///{tmp_path}/study.db"
    marks = tmp_path / "marks"
    marks.mkdir()
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(TESTS)!r})
        from offerlab import tuning
        from toy_objective import TOY_CONFIG, TOY_SPACE, toy_objective
        tuning.run_study("timing", TOY_CONFIG, tuning.SearchSpace.model_validate(TOY_SPACE), toy_objective, trials=4,
                         storage={storage!r}, study_name="k", out_path={str(tmp_path / 'b.yaml')!r}, show_progress=False)
    """)
    env = {**os.environ, "TOY_MARK_DIR": str(marks), "TOY_KILL_AT_RUN": "2", "OFFERLAB_TUNE_HEARTBEAT_S": "1",
           "OFFERLAB_TUNE_GRACE_S": "2"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed inside its third trial
    study = optuna.load_study(study_name="k", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == 2
    assert optuna.trial.TrialState.RUNNING in states
    env.pop("TOY_KILL_AT_RUN")
    import time

    time.sleep(3)  # past the grace period: the dead worker's trial is stale
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = optuna.load_study(study_name="k", storage=storage)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 4
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert (tmp_path / "b.yaml").exists()


def test_a_pruned_trial_run_is_tagged_and_killed_not_failed(mlflow_store):
    """A trial the pruner stopped is an MLflow run with status KILLED and trial_state 'pruned' (the context
    that closed on TrialPruned had marked it FAILED, as if it had crashed); a finished one is 'complete'."""
    from types import SimpleNamespace

    from offerlab import tracking
    from offerlab.tune_job import PRUNED_TAG, make_objective

    def objective(cfg: dict, callbacks: list):
        with tracking.start_run("timing", "trial") as run:
            mlflow.log_metric("val_loss", 1.0)
            if cfg["prune"]:
                raise optuna.TrialPruned()
        return 0.5, run.info.run_id

    module = SimpleNamespace(METRIC=("val_loss", "minimize"), PRUNE_ON="val_loss", objective=objective)
    space = tuning.SearchSpace.model_validate(TOY_SPACE)
    wrapped = make_objective("timing", module, space, "s")
    assert wrapped({"prune": False}, []) == 0.5
    with pytest.raises(optuna.TrialPruned):
        wrapped({"prune": True}, [])
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=["attributes.start_time"])
    states = {r.data.tags.get(PRUNED_TAG): r.info.status for r in runs}
    assert len(runs) == 2 and states == {"complete": "FINISHED", "pruned": "KILLED"}


def test_only_the_worker_that_creates_a_study_enqueues_the_base_trial(tmp_path, mlflow_store):
    """Workers started together race to open a fresh study; the storage lets one create it, and only that
    one enqueues the base config, so it is trial 0 once (before, each worker that saw no trials added it)."""
    storage = f"sqlite:///{tmp_path}/study.db"
    optuna.create_study(study_name="race", storage=storage)  # another worker created it, has not enqueued yet
    tuning.run_study("timing", TOY_CONFIG, space(), toy_objective, trials=1, storage=storage,
                     study_name="race", out_path=tmp_path / "b.yaml", show_progress=False)
    base = {"model.hidden": 8, "model.lr": 0.01}
    assert [t.params == base for t in optuna.load_study(study_name="race", storage=storage).trials] == [False]
