"""Two tuning workers share one Optuna study on a real PostgreSQL server, logging to an MLflow server on it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

import pg_server

TESTS = Path(__file__).parent

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not pg_server.available(), reason="PostgreSQL (Debian package) not installed")]


def test_two_workers_one_study_on_postgres_with_mlflow_server(tmp_path):
    with pg_server.postgres_server(("optuna", "mlflow")) as base:
        port = pg_server.free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{base}/mlflow",
             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mlflow.log", "w"),
        )
        try:
            pg_server.wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=server)
            script = textwrap.dedent(f"""
                import sys; sys.path.insert(0, {str(TESTS)!r})
                from offerlab import tuning
                from toy_objective import TOY_CONFIG, TOY_SPACE, toy_objective
                tuning.run_study("timing", TOY_CONFIG, tuning.SearchSpace.model_validate(TOY_SPACE), toy_objective,
                                 trials=6, storage={base + '/optuna'!r}, study_name="shared",
                                 out_path=sys.argv[1], show_progress=False)
            """)
            env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
            workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"best{i}.yaml")], env=env,
                                        cwd=tmp_path, stderr=subprocess.PIPE, text=True) for i in range(2)]
            try:
                for w in workers:
                    _, err = w.communicate(timeout=600)
                    assert w.returncode == 0, err[-3000:]
            finally:
                for w in workers:
                    w.kill()
            study = optuna.load_study(study_name="shared", storage=f"{base}/optuna")
            finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
            assert 6 <= len(finished) <= 7  # the target, give or take the one trial a racing worker had in flight
            import mlflow

            mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
            parent = study.user_attrs["mlflow_parent_run_id"]
            children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent}'", search_all_experiments=True)
            assert len(children) == len(study.trials)
        finally:
            server.terminate()
            server.wait(timeout=30)
