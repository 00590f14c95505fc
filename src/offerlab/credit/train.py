"""`offerlab train credit`: fit the calibrated PD model, report it on a held-out split, log to MLflow.

The run holds the config (params and YAML), the data fingerprint, held-out metrics (AUC, Gini, KS,
Brier, ECE, calibration-in-the-large; the oracle gap on synthetic data), the reliability plot, a
reason-code example table keyed by pseudonymous ids, PSI of the held-out applications against the
training ones, and the model as an MLflow pyfunc that carries its preprocessing and policy.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from offerlab.config import flatten
from offerlab.credit.bench import BenchData, load_bench_data
from offerlab.credit.calibration import reliability_figure
from offerlab.credit.config import CreditConfig
from offerlab.credit.metrics import auc, credit_metrics, reliability_table
from offerlab.credit.model import CreditModel, EpochProgress
from offerlab.credit.monitoring import psi_report
from offerlab.credit.scorecard import pd_to_score

log = logging.getLogger(__name__)
SAFE_EXAMPLE_COLUMNS = ["pd", "score", "grade", "reason_1", "reason_2", "reason_3", "reason_4", "decision",
                        "decline_reason", "term_options", "insurance_offered"]


def reason_examples(decisions: pd.DataFrame, n: int) -> pd.DataFrame:
    """First n decisions with pseudonymous application ids and no amounts (safe to log)."""
    from offerlab.tracking import pseudonymize

    head = decisions.head(n)
    out = head[[c for c in SAFE_EXAMPLE_COLUMNS if c in head.columns]].copy()
    if "application_id" in head.columns:
        out.insert(0, "applicant", pseudonymize(head["application_id"]))
    return out.reset_index(drop=True)


def train(cfg: CreditConfig, *, progress: bool | None = None, data: BenchData | None = None,
          callbacks: list | None = None) -> dict:
    """Train, evaluate on the held-out split and log everything to MLflow.

    Returns a JSON-able summary plus the fitted model under "model". `data` skips loading when the
    caller already holds the applications and their features; `callbacks` (e.g. Optuna pruning) join every
    member's Lightning fit.
    """
    import mlflow

    from offerlab.credit.pyfunc import log_pyfunc
    from offerlab.tracking import data_fingerprint, start_run, table_summary

    show = cfg.trainer.enable_progress_bar if progress is None else progress
    decision_cfg = cfg.decision_config()
    t0 = time.perf_counter()
    data = data if data is not None else load_bench_data(cfg)
    idx_tr, idx_te = train_test_split(np.arange(len(data.y)), test_size=cfg.evaluation.test_fraction,
                                      stratify=data.y, random_state=cfg.evaluation.fold_seed)
    X_tr, X_te = data.X.iloc[idx_tr], data.X.iloc[idx_te]
    run_name = cfg.tracking.run_name or f"credit-{data.name}"
    with start_run("credit", run_name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(cfg.model_dump(exclude={"decision"})).items()})
        if cfg.source and Path(cfg.source).is_file():
            mlflow.log_artifact(cfg.source, "config")
        mlflow.log_dict(cfg.model_dump(), "config/resolved.yaml")
        mlflow.log_dict(decision_cfg.model_dump(), "config/decision_policy.yaml")
        summary = table_summary(data.applications, "applications")
        eval_fp = data_fingerprint(data.applications.iloc[idx_te])  # registry: compare only on the same rows
        mlflow.set_tags({"data.fingerprint": data_fingerprint(data.applications), "data.name": data.name,
                         "features.fingerprint": data_fingerprint(data.X), "offerlab.eval_fingerprint": eval_fp})
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})

        model = CreditModel(cfg.net, cfg.trainer, seed=cfg.seed)
        with tqdm(total=model.n_fits() * cfg.trainer.max_epochs, desc="credit fit (epochs)", unit="epoch",
                  disable=not show or "spawn" in cfg.trainer.strategy, leave=False) as bar:
            bar_cb = [] if bar.disable else [EpochProgress(bar, cfg.trainer.max_epochs)]
            model.fit(X_tr, data.y[idx_tr], [*(callbacks or []), *bar_cb])
        log.info("credit: fitted %d members on %d rows in %.1f s", model.n_members, len(idx_tr),
                 model.fit_report["seconds"])
        model.decision = decision_cfg
        mlflow.log_dict(model.fit_report, "fit_report.json")  # rows, members, batch, lr, epochs, seconds
        fit_seconds = time.perf_counter() - t0
        apps_te = data.applications.iloc[idx_te]
        decisions = model.decide(apps_te, features=X_te)
        p_te = decisions["pd"].to_numpy()
        metrics = {f"eval_{k}": v for k, v in credit_metrics(data.y[idx_te], p_te).items()}
        for name, ref in (("true_pd", data.true_pd), ("traits_pd", data.traits_pd)):
            if ref is not None:
                metrics[f"eval_auc_{name}"] = auc(data.y[idx_te], ref[idx_te])
        if data.oracle_pd is not None:
            oracle_auc = auc(data.y[idx_te], data.oracle_pd[idx_te])
            metrics.update({"eval_auc_oracle": oracle_auc, "eval_auc_gap": oracle_auc - metrics["eval_auc"]})
        metrics.update({
            "approval_rate": float((decisions["decision"] == "approve").mean()),
            "mean_score": float(decisions["score"].mean()),
            "fit_seconds": fit_seconds,
        })  # fmt: skip
        cal = model.calibrator  # a cross-fitted map wraps the fitted one (`inner`) with the ensemble stretch
        for part in (cal, getattr(cal, "inner", cal)):
            metrics.update({f"calibration_{k}": float(v) for k, v in vars(part).items() if isinstance(v, float)})
        mlflow.log_metrics(metrics)
        mlflow.log_figure(reliability_figure(data.y[idx_te], p_te, title=f"Reliability, held-out {data.name}"),
                          "plots/reliability.png")
        mlflow.log_table(reliability_table(data.y[idx_te], p_te), "tables/reliability.json")
        if cfg.tracking.reason_examples:
            mlflow.log_table(reason_examples(decisions, cfg.tracking.reason_examples), "tables/reason_code_examples.json")
        mlflow.log_table(decisions["grade"].value_counts().sort_index().rename_axis("grade").reset_index(),
                         "tables/grade_counts.json")
        psi = psi_report(X_tr, X_te, train_score=pd_to_score(model.predict_pd(X_tr), decision_cfg.score),
                         new_score=decisions["score"].to_numpy())
        mlflow.log_table(psi, "tables/psi_test_vs_train.json")
        mlflow.log_metric("psi_score", float(psi.loc[psi["variable"] == "score", "psi"].iloc[0]))
        if cfg.tracking.log_model:
            with tempfile.TemporaryDirectory() as tmp:
                example = apps_te.head(5).drop(columns=["default"], errors="ignore")
                behaviour = [c for c in X_te.columns if c not in example.columns]
                example = pd.concat([example, X_te.head(5)[behaviour]], axis=1)
                log_pyfunc(model, example, tmp)
        run_id = run.info.run_id
    return {"run_id": run_id, "dataset": data.name, "rows_train": len(idx_tr), "rows_test": len(idx_te),
            **{k: round(float(v), 5) for k, v in metrics.items()}, "seconds": round(time.perf_counter() - t0, 1),
            "model": model}
