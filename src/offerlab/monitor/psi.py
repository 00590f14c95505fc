"""Population stability index (PSI): how far a population moved from a reference one, per variable.

PSI = sum over bins of (new% - ref%) * ln(new% / ref%). Numeric variables are binned at the reference
deciles (edges from the reference only), categorical ones (and bucket indexes) by level; empty shares are
floored at `eps` so an unseen bin counts as a large shift rather than infinity. Usual reading:
< 0.10 stable, 0.10-0.25 moderate shift, >= 0.25 significant shift.

One implementation for the whole project: credit's training-time check (`offerlab.credit.monitoring`), the
data profile and production drift (`offerlab.monitor.drift`) all call these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STABLE, SIGNIFICANT = 0.10, 0.25


def psi_from_shares(expected: np.ndarray, actual: np.ndarray, eps: float = 1e-4) -> float:
    e = np.maximum(np.asarray(expected, dtype=float), eps)
    a = np.maximum(np.asarray(actual, dtype=float), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_numeric(expected: np.ndarray, actual: np.ndarray, n_bins: int = 10, eps: float = 1e-4) -> float:
    """PSI of a numeric variable, bins at the expected (training) quantiles; missing values get a bin."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    edges = np.unique(np.quantile(e[np.isfinite(e)], np.linspace(0, 1, n_bins + 1)[1:-1]))

    def shares(x: np.ndarray) -> np.ndarray:
        b = np.where(np.isfinite(x), np.searchsorted(edges, x, side="right"), len(edges) + 1)
        return np.bincount(b, minlength=len(edges) + 2) / max(len(x), 1)

    return psi_from_shares(shares(e), shares(a), eps)


def psi_categorical(expected: pd.Series, actual: pd.Series, eps: float = 1e-4) -> float:
    e = pd.Series(expected).astype("string").fillna("<missing>").value_counts(normalize=True)
    a = pd.Series(actual).astype("string").fillna("<missing>").value_counts(normalize=True)
    levels = e.index.union(a.index)
    return psi_from_shares(e.reindex(levels, fill_value=0).to_numpy(), a.reindex(levels, fill_value=0).to_numpy(), eps)


def psi_status(value: float) -> str:
    return "stable" if value < STABLE else ("moderate" if value < SIGNIFICANT else "significant")


def psi_report(
    train: pd.DataFrame,
    new: pd.DataFrame,
    *,
    train_score: np.ndarray | None = None,
    new_score: np.ndarray | None = None,
    n_bins: int = 10,
) -> pd.DataFrame:
    """PSI per feature (columns present in both) and for the score; sorted, worst first."""
    rows = []
    for c in [c for c in train.columns if c in new.columns]:
        numeric = pd.api.types.is_numeric_dtype(train[c]) and not pd.api.types.is_bool_dtype(train[c])
        v = psi_numeric(train[c], new[c], n_bins) if numeric else psi_categorical(train[c], new[c])
        rows.append({"variable": c, "psi": v})
    if train_score is not None and new_score is not None:
        rows.append({"variable": "score", "psi": psi_numeric(train_score, new_score, n_bins)})
    out = pd.DataFrame(rows, columns=["variable", "psi"])
    out["status"] = out["psi"].map(psi_status)
    return out.sort_values("psi", ascending=False, ignore_index=True)
