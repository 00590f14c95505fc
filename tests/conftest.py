import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("OFFERLAB_DATA_DIR", str(SHARED_DATA))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    """An isolated SQLite MLflow store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri
