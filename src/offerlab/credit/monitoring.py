"""Population stability index (PSI) between the training population and new applications.

PSI = sum over bins of (new% - train%) * ln(new% / train%). Numeric features are binned at the
training deciles (edges from the training data only), categorical features by level; empty shares
are floored at `eps` so an unseen bin counts as a large shift rather than infinity. Usual reading:
< 0.10 stable, 0.10-0.25 moderate shift, >= 0.25 significant shift.
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


class PopulationProfile:
    """The training population kept as bin edges and shares only (no rows), to compute PSI later.

    `fit` on the training features (and scores); `psi(new_X, new_score)` gives the same report as
    `psi_report(train, new)` without keeping the training table inside the model.
    """

    def __init__(self, n_bins: int = 10, eps: float = 1e-4):
        self.n_bins, self.eps = n_bins, eps
        self.numeric: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.categorical: dict[str, pd.Series] = {}

    def _numeric_shares(self, x: np.ndarray, edges: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        b = np.where(np.isfinite(x), np.searchsorted(edges, x, side="right"), len(edges) + 1)
        return np.bincount(b, minlength=len(edges) + 2) / max(len(x), 1)

    def _add_numeric(self, name: str, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=float)
        finite = x[np.isfinite(x)]
        q = np.quantile(finite, np.linspace(0, 1, self.n_bins + 1)[1:-1]) if len(finite) else np.zeros(0)
        edges = np.unique(q)
        self.numeric[name] = (edges, self._numeric_shares(x, edges))

    def fit(self, X: pd.DataFrame, score: np.ndarray | None = None) -> PopulationProfile:
        for c in X.columns:
            if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c]):
                self._add_numeric(c, X[c].to_numpy(dtype=float))
            else:
                self.categorical[c] = X[c].astype("string").fillna("<missing>").value_counts(normalize=True)
        if score is not None:
            self._add_numeric("score", score)
        return self

    def psi(self, X: pd.DataFrame, score: np.ndarray | None = None) -> pd.DataFrame:
        rows = []
        for c, (edges, shares) in self.numeric.items():
            new = score if c == "score" else (X[c].to_numpy(dtype=float) if c in X.columns else None)
            if new is not None:
                rows.append({"variable": c, "psi": psi_from_shares(shares, self._numeric_shares(new, edges), self.eps)})
        for c, shares in self.categorical.items():
            if c in X.columns:
                a = X[c].astype("string").fillna("<missing>").value_counts(normalize=True)
                levels = shares.index.union(a.index)
                rows.append({"variable": c, "psi": psi_from_shares(
                    shares.reindex(levels, fill_value=0).to_numpy(), a.reindex(levels, fill_value=0).to_numpy(), self.eps)})
        out = pd.DataFrame(rows, columns=["variable", "psi"])
        out["status"] = out["psi"].map(psi_status)
        return out.sort_values("psi", ascending=False, ignore_index=True)
