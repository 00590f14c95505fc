import mlflow
import pandas as pd

from offerlab import tracking


def test_uri_default_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u@h/db")
    assert tracking.tracking_uri(tmp_path) == "postgresql://u@h/db"


def test_experiment_names():
    assert tracking.experiment_name("timing") == "offerlab-timing"


def test_pseudonyms_are_stable_and_not_raw():
    ids = pd.Series(["c1", "c2", "c1"])
    p = tracking.pseudonymize(ids, salt="s")
    assert p[0] == p[2] and p[0] != p[1]
    assert not set(p) & set(ids)
    assert tracking.pseudonymize(ids, salt="other")[0] != p[0]


def test_data_summary_run_holds_no_raw_ids(mlflow_store):
    tx = pd.DataFrame(
        {"customer_id": ["SECRET-ID-1", "SECRET-ID-2"], "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
         "amount": [1234.5, 10.0]}
    )
    run_id = tracking.log_data_summary({"transactions": tx})
    run = mlflow.get_run(run_id)
    assert run.data.metrics["transactions.rows"] == 2
    assert run.data.metrics["transactions.customers"] == 2
    text = str(run.data.params) + str(run.data.tags) + str(run.data.metrics)
    summary = mlflow.artifacts.load_dict(f"runs:/{run_id}/data_summary.json")
    assert "SECRET-ID" not in text and "SECRET-ID" not in str(summary)
    assert tracking.data_fingerprint(tx) == summary["transactions.fingerprint"]
    assert tracking.data_fingerprint(tx.assign(amount=[1.0, 2.0])) != summary["transactions.fingerprint"]
