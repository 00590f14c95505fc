"""Holdout metrics of the timing protocol (DESIGN.md): one implementation for ours and every peer."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

METRIC_KEYS = ("count_mae", "count_rmse", "auc_holdout", "brier_holdout", "auc_30d", "brier_30d", "c_index",
               "total_pred", "total_true")


def _dominance_counts(order_key: np.ndarray, value: np.ndarray) -> np.ndarray:
    """For each element i: #{j before i in `order_key` order with value_j > value_i}.

    Vectorised merge counting: at each of log2(n) levels, every element in the right half of a block
    counts the elements of the left half above it with one global `searchsorted` (block id as offset).
    """
    n = len(value)
    order = np.lexsort(order_key) if isinstance(order_key, tuple) else np.argsort(order_key, kind="stable")
    v = np.unique(value, return_inverse=True)[1][order].astype(np.int64)  # dense ranks 0..m-1
    span = int(v.max()) + 2 if n else 1
    pos = np.arange(n)
    counts = np.zeros(n, dtype=np.int64)
    size = 1
    while size < n:
        block = pos // (2 * size)
        left = (pos % (2 * size)) < size
        keys_left = np.sort(block[left] * span + v[left])
        right = ~left
        hi = np.searchsorted(keys_left, (block[right] + 1) * span, side="left")
        le = np.searchsorted(keys_left, block[right] * span + v[right], side="right")
        counts[right] += hi - le
        size *= 2
    out = np.empty(n, dtype=np.int64)
    out[order] = counts
    return out


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: among pairs where i has the event strictly before j's time, P(risk_i > risk_j), ties 1/2.

    O(n log^2 n) and exact (checked against the O(n^2) definition in the tests).
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    risk = np.asarray(risk, dtype=float)
    # later time among elements of lower risk: order by (risk asc, time asc) counts strictly lower risk,
    # order by (risk asc, time desc) counts lower-or-equal risk; the difference is the tied-risk pairs.
    strict = _dominance_counts((time, risk), time)
    loose = _dominance_counts((-time, risk), time)
    t_sorted = np.sort(time)
    comparable = len(time) - np.searchsorted(t_sorted, time, side="right")
    num = (strict + 0.5 * (loose - strict))[event].sum()
    den = comparable[event].sum()
    return float(num / den) if den else float("nan")


def timing_metrics(*, true_counts: np.ndarray, pred_counts: np.ndarray, p_any: np.ndarray, p_30d: np.ndarray,
                   bought_30d: np.ndarray, first_time: np.ndarray, risk_score: np.ndarray,
                   horizon_days: float) -> dict[str, float]:
    """The DESIGN.md timing metrics for one model on one holdout.

    `first_time`: days from the cutoff to the first holdout purchase (NaN / inf if none: censored at the
    horizon); `risk_score`: higher means an earlier first purchase (used for the C-index).
    """
    true_counts = np.asarray(true_counts, dtype=float)
    pred_counts = np.asarray(pred_counts, dtype=float)
    any_true = (true_counts > 0).astype(int)
    bought_30d = np.asarray(bought_30d).astype(int)
    first_time = np.asarray(first_time, dtype=float)
    event = np.isfinite(first_time)
    time = np.where(event, first_time, horizon_days)
    err = pred_counts - true_counts
    p_any = np.clip(np.asarray(p_any, dtype=float), 0, 1)
    p_30d = np.clip(np.asarray(p_30d, dtype=float), 0, 1)
    return {
        "count_mae": float(np.mean(np.abs(err))),
        "count_rmse": float(np.sqrt(np.mean(err**2))),
        "auc_holdout": float(roc_auc_score(any_true, p_any)) if 0 < any_true.sum() < len(any_true) else float("nan"),
        "brier_holdout": float(brier_score_loss(any_true, p_any)),
        "auc_30d": float(roc_auc_score(bought_30d, p_30d)) if 0 < bought_30d.sum() < len(bought_30d) else float("nan"),
        "brier_30d": float(brier_score_loss(bought_30d, p_30d)),
        "c_index": concordance_index(time, event, risk_score),
        "total_pred": float(pred_counts.sum()),
        "total_true": float(true_counts.sum()),
    }


def holdout_truth(transactions: pd.DataFrame, cutoff: str | pd.Timestamp, holdout_end: str | pd.Timestamp,
                  customers: pd.Index, same_day: str = "merge") -> pd.DataFrame:
    """Per customer: purchases in (cutoff, holdout_end] (distinct days when merging), days to the first."""
    from offerlab.timing.baselines import end_of_day, purchase_events

    cut, end = end_of_day(cutoff), end_of_day(holdout_end)
    ev = purchase_events(transactions, same_day)
    ho = ev[(ev["timestamp"] > cut) & (ev["timestamp"] <= end)]
    g = ho.groupby("customer_id")["timestamp"]
    count = g.size().reindex(customers, fill_value=0)
    first = ((g.min() - cut) / pd.Timedelta(days=1)).reindex(customers)
    return pd.DataFrame({"count": count.to_numpy(), "first_days": first.fillna(np.inf).to_numpy()}, index=customers)


def horizon_days(cutoff: str | pd.Timestamp, holdout_end: str | pd.Timestamp) -> float:
    """Length of the holdout in days (both dates inclusive whole days)."""
    return float((pd.Timestamp(holdout_end).normalize() - pd.Timestamp(cutoff).normalize()) / pd.Timedelta(days=1))


def evaluate_predictions(pred: pd.DataFrame, truth: pd.DataFrame, horizon: float, within_days: float = 30.0
                         ) -> dict[str, float]:
    """Metrics of one forecaster's `predict` frame against `holdout_truth` (aligned on customer_id)."""
    truth = truth.reindex(pred.index)
    return timing_metrics(
        true_counts=truth["count"].to_numpy(), pred_counts=pred["expected_count"].to_numpy(),
        p_any=pred["p_any"].to_numpy(), p_30d=pred["p_within"].to_numpy(),
        bought_30d=(truth["first_days"] <= within_days).to_numpy(), first_time=truth["first_days"].to_numpy(),
        risk_score=pred["risk_score"].to_numpy(), horizon_days=horizon,
    )
