"""Population stability index (PSI) between the training population and new applications.

The PSI itself lives in `offerlab.monitor.psi` (one implementation for training-time and production
monitoring); this module keeps credit's stored training profile, `PopulationProfile`, which a credit model
carries so that PSI needs no training rows later.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.monitor.psi import (  # noqa: F401 - the credit names, kept for their callers
    SIGNIFICANT,
    STABLE,
    psi_categorical,
    psi_from_shares,
    psi_numeric,
    psi_report,
    psi_status,
)


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
