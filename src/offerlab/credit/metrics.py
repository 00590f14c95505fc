"""Discrimination and calibration metrics for probabilities of default (DESIGN.md credit protocol).

One implementation for every model: AUC, Gini, KS, Brier, expected calibration error over 10
equal-count (quantile) bins, and calibration-in-the-large (observed minus predicted default rate).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {len(y)} vs {len(p)}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("predicted probabilities must lie in [0, 1]")
    return y, p


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (probability a defaulter is ranked above a payer)."""
    y, p = _check(y, p)
    return float(roc_auc_score(y, p))


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: largest gap between the score distributions of defaulters and payers."""
    y, p = _check(y, p)
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2))


def quantile_bins(p: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin index per prediction: equal-count bins over the sorted predictions (ties broken by order)."""
    order = np.argsort(p, kind="stable")
    bins = np.empty(len(p), dtype=np.int64)
    bins[order] = np.arange(len(p)) * n_bins // len(p)
    return bins


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Per quantile bin: count, mean predicted PD and observed default rate (the reliability curve)."""
    y, p = _check(y, p)
    b = quantile_bins(p, n_bins)
    count = np.bincount(b, minlength=n_bins)
    pred = np.bincount(b, weights=p, minlength=n_bins) / np.maximum(count, 1)
    obs = np.bincount(b, weights=y, minlength=n_bins) / np.maximum(count, 1)
    return pd.DataFrame({"bin": np.arange(n_bins), "count": count, "mean_pd": pred, "default_rate": obs})


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: count-weighted mean |observed - predicted| over quantile bins."""
    t = reliability_table(y, p, n_bins)
    return float(np.sum(t["count"] * np.abs(t["default_rate"] - t["mean_pd"])) / t["count"].sum())


def calibration_in_the_large(y: np.ndarray, p: np.ndarray) -> float:
    """Observed default rate minus mean predicted PD (0 = right on average; > 0 = PDs too low)."""
    y, p = _check(y, p)
    return float(y.mean() - p.mean())


def credit_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The protocol's metric keys for one set of predictions."""
    a = auc(y, p)
    return {
        "auc": a,
        "gini": 2.0 * a - 1.0,
        "ks": ks_statistic(y, p),
        "brier": brier(y, p),
        "ece": ece(y, p),
        "citl": calibration_in_the_large(y, p),
    }


def delong_paired(y: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> dict[str, float]:
    """DeLong's test of two correlated AUCs on the same rows (fast midrank form, Sun & Xu 2014).

    Returns the AUC difference p1 - p2, its standard error, a 95 % normal interval and the two-sided p-value.
    """
    from scipy.stats import norm, rankdata

    y, p1 = _check(y, p1)
    _, p2 = _check(y, p2)
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both classes")
    v01, v10 = [], []
    for p in (p1, p2):
        tz = rankdata(p)  # midranks over all rows
        tx, ty = rankdata(p[pos]), rankdata(p[neg])
        v01.append((tz[pos] - tx) / n)  # per defaulter: share of payers ranked below it
        v10.append(1.0 - (tz[neg] - ty) / m)  # per payer: share of defaulters ranked above it
    aucs = [float(v.mean()) for v in v01]
    s01, s10 = np.cov(np.stack(v01)), np.cov(np.stack(v10))
    var = (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / m + (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / n
    diff, se = aucs[0] - aucs[1], float(np.sqrt(max(var, 0.0)))
    p_value = float(2 * norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return {"auc_difference": diff, "se": se, "ci95": [diff - 1.96 * se, diff + 1.96 * se], "p_value": p_value}
