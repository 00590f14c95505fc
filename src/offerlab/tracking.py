"""MLflow tracking: where runs go, how experiments are named, and what a run may hold.

Default store: SQLite in the working folder (`sqlite:///mlflow.db`, artifacts under `mlartifacts/`);
`MLFLOW_TRACKING_URI` wins (a team server on PostgreSQL). Runs hold pseudonymous ids only: raw
customer ids never reach MLflow — `pseudonymize` turns them into salted hashes when an artifact needs
a per-customer key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FAMILIES = ("data", "timing", "uplift", "credit", "campaign")  # one MLflow experiment each (campaign: plans, evaluations)
PSEUDONYM_SALT_ENV = "OFFERLAB_PSEUDONYM_SALT"


def tracking_uri(workdir: str | Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite store `mlflow.db` in `workdir` (default: cwd)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    folder = Path(workdir or os.getcwd()).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def experiment_name(family: str) -> str:
    """One MLflow experiment per model family: `offerlab-<family>`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return f"offerlab-{family}"


def setup(family: str, workdir: str | Path | None = None) -> str:
    """Point MLflow at the store and select (creating if needed) the family's experiment; returns its id."""
    import mlflow

    uri = tracking_uri(workdir)
    mlflow.set_tracking_uri(uri)
    name = experiment_name(family)
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        artifact_location = None
        if uri.startswith("sqlite:///"):
            # keep artifacts beside the local database instead of MLflow's deprecated ./mlruns default
            artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        try:
            exp_id = mlflow.create_experiment(name, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:  # another worker created it between our look-up and now
            exp_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextlib.contextmanager
def start_run(family: str, run_name: str | None = None, *, nested: bool = False, tags: dict | None = None,
              workdir: str | Path | None = None) -> Iterator:
    """Start an MLflow run in the family's experiment; on exit prints a one-line summary with its link."""
    import mlflow

    nested = nested or mlflow.active_run() is not None  # inside a tuning study's parent run: one child per trial
    if not nested:
        setup(family, workdir)
    with mlflow.start_run(run_name=run_name, nested=nested, tags={"offerlab.family": family, **(tags or {})}) as run:
        yield run
    log.info("logged MLflow %s", run_link(run.info.run_id, run.info.experiment_id))


def run_link(run_id: str, experiment_id: str) -> str:
    """A link to the run: the server's UI for an http store, else the `mlflow ui` command to open it."""
    uri = tracking_uri()
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} in {uri} (open with: mlflow ui --backend-store-uri {uri})"


def pseudonymize(ids: pd.Series | np.ndarray, salt: str | None = None) -> np.ndarray:
    """Salted SHA-256 pseudonyms (16 hex chars) for customer ids; the salt comes from the environment."""
    salt = salt if salt is not None else os.environ.get(PSEUDONYM_SALT_ENV, "offerlab")
    codes, uniques = pd.factorize(pd.Series(ids).astype(str))
    hashed = np.array([hashlib.sha256((salt + u).encode()).hexdigest()[:16] for u in uniques], dtype=object)
    return hashed[codes]


def data_fingerprint(df: pd.DataFrame) -> str:
    """Content hash of a table (values and column names), stable across runs; reveals nothing about rows."""
    row_hashes = pd.util.hash_pandas_object(df, index=False).to_numpy()
    h = hashlib.sha256(row_hashes.tobytes())
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    return h.hexdigest()[:20]


def table_summary(df: pd.DataFrame, table: str) -> dict[str, float | int | str]:
    """Aggregate figures of a canonical table (counts, ranges, rates) — no row-level values."""
    out: dict[str, float | int | str] = {f"{table}.rows": len(df), f"{table}.fingerprint": data_fingerprint(df)}
    if "customer_id" in df:
        out[f"{table}.customers"] = int(df["customer_id"].nunique())
    for col in ("timestamp", "applied_at"):
        if col in df:
            out[f"{table}.{col}_min"] = str(df[col].min().date())
            out[f"{table}.{col}_max"] = str(df[col].max().date())
    for col in ("amount", "revenue"):
        if col in df:
            out[f"{table}.{col}_mean"] = float(df[col].mean())
    for col in ("conversion", "default"):
        if col in df:
            out[f"{table}.{col}_rate"] = float(df[col].mean())
    if "treatment" in df:
        for level, n in df["treatment"].value_counts().sort_index().items():
            out[f"{table}.n_{level}"] = int(n)
    return out


def log_data_summary(tables: dict[str, pd.DataFrame], run_name: str = "data-summary", params: dict | None = None) -> str:
    """Log one MLflow run in `offerlab-data` with each table's summary and fingerprint; returns the run id."""
    import mlflow

    with start_run("data", run_name) as run:
        if params:
            mlflow.log_params(params)
        summary: dict = {}
        for name, df in tables.items():
            summary.update(table_summary(df, name))
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        mlflow.set_tags({k: v for k, v in summary.items() if isinstance(v, str)})
        mlflow.log_dict(summary, "data_summary.json")
    return run.info.run_id
