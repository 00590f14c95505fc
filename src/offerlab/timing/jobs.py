"""The timing step of the main job: train a small model on the synthetic data, log it, score everyone."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from offerlab.timing.baselines import end_of_day
from offerlab.timing.train import CONFIG_DIR, load_config, train_and_log

log = logging.getLogger(__name__)

# small and fast: one seed, fixed epochs (no validation pass), fewer Monte Carlo paths
FAST = {"training": {"seeds": [0], "max_epochs": 6, "validation_days": 0},
        "prediction": {"n_samples": 50}, "counts": {"steps": 120}, "trainer": {"enable_progress_bar": False}}


def main_job_step(synth_dir: Path, workdir: Path) -> dict:
    """Train on the synthetic calibration period (MLflow run with metrics and oracle gap), then score every
    customer as of the end of the data into `workdir/timing_scores.parquet`."""
    from offerlab.data.synth import load_synth

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = load_synth(synth_dir).meta
    end = pd.Timestamp(meta["end"])
    overrides = {**FAST, "data": {"synth_dir": str(synth_dir), "holdout_end": str(end.date()),
                                  "calibration_end": str((end - pd.Timedelta(days=183)).date())}}
    cfg = load_config(CONFIG_DIR / "synth.yaml", overrides)
    summary, model, tx = train_and_log(cfg, CONFIG_DIR / "synth.yaml", progress=False, workdir=None,
                                       run_name="main-job-timing")
    t0 = time.perf_counter()
    scores = model.predictor.predict_frame(tx, end_of_day(end), horizon_days=cfg.prediction.horizon_days,
                                           within_days=tuple(cfg.prediction.within_days),
                                           n_samples=cfg.prediction.n_samples)
    out = workdir / "timing_scores.parquet"
    tmp = out.with_suffix(".parquet.tmp")
    scores.to_parquet(tmp, index=False)
    tmp.replace(out)
    basket = _baskets(model, synth_dir, end, workdir)
    oracle = summary.get("oracle") or {}
    return {
        "run_id": summary["run_id"],
        "count_rmse": summary["metrics"]["count_rmse"],
        "brier_30d": summary["metrics"]["brier_30d"],
        "c_index": summary["metrics"]["c_index"],
        "nll_gap_relative_to_oracle": oracle.get("nll_gap_relative"),
        "brier_30d_oracle": oracle.get("brier_30d_true"),
        "scored_customers": len(scores),
        "scoring_seconds": round(time.perf_counter() - t0, 1),
        "output": str(out),
        **({"basket": basket} if basket else {}),
    }


def _baskets(model, synth_dir: Path, end: pd.Timestamp, workdir: Path) -> dict | None:
    """Every customer's prepared basket as of the end of the data (one row per customer and item) into
    `workdir/baskets.parquet`, with the holdout metrics and one basket as an example (no customer id)."""
    basket = getattr(model, "basket", None)
    lines_path = Path(synth_dir) / "lines.parquet"
    if basket is None or not lines_path.is_file():
        return None
    import numpy as np

    from offerlab.timing.basket import baskets, days

    as_of = end_of_day(end)
    L = basket.lines(pd.read_parquet(lines_path))
    cut = np.full(len(L.customers), float(days(pd.Series([as_of]))[0]))
    b = baskets(basket.predict(L, cut), L.customers, L.items, as_of.normalize() + pd.Timedelta(days=1),
                basket.cfg.min_p, basket.cfg.max_items, basket.item_names)
    out = workdir / "baskets.parquet"
    tmp = out.with_suffix(".parquet.tmp")
    b.to_parquet(tmp, index=False)
    tmp.replace(out)
    example = None
    if len(b):
        first = b[b["customer_id"] == b["customer_id"].iloc[0]]
        example = {"reminder_date": str(first["reminder_date"].iloc[0].date()),
                   "items": [f"{r.quantity} x {r.item_name} (P30d {r.p_30d:.2f}, due "
                             f"{'-' if pd.isna(r.due_date) else r.due_date.date()})"
                             for r in first.itertuples()]}
    log.info("baskets: %d customers with a prepared basket, %.1f items on average", b["customer_id"].nunique(),
             b.groupby("customer_id").size().mean() if len(b) else 0.0)
    return {"holdout": {k: round(v, 4) for k, v in (basket.fit_report.get("holdout") or {}).items()},
            "customers_with_basket": int(b["customer_id"].nunique()), "output": str(out), "example": example}
