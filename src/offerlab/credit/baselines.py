"""Peers in the same `fit(X, y)` / `predict_pd(X)` interface as ours, so one benchmark loop runs them all.

- `LightGBMPD`: gradient boosting, small trees, categorical fields as pandas categories.
- `WoELogisticPD`: the classic scorecard: each feature binned (quantile bins for numbers, levels for
  categories, rare ones pooled), bins replaced by their weight of evidence, features kept by
  information value, then a logistic regression on the WoE values.
- `LogisticPD`: logistic regression on one-hot categories and robustly scaled numerics.
- `OptBinningScorecardPD`: the WoE scorecard as risk teams build it with optbinning: optimal binning of
  every feature (`BinningProcess`, features kept by information value) and a logistic regression on the
  WoE values (`Scorecard`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from offerlab.credit.data import FeatureEncoder, _is_categorical


class LightGBMPD:
    """LightGBM classifier; its probabilities are used as PDs as they come (no extra calibration)."""

    name = "lightgbm"

    def __init__(self, seed: int = 0, **params):
        self.params = {
            "n_estimators": 300, "learning_rate": 0.03, "num_leaves": 8, "min_child_samples": 20,
            "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.7, "reg_lambda": 2.0,
            "verbose": -1, "random_state": seed, "n_jobs": 2, **params,
        }  # fmt: skip

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X[self.columns].copy()
        for c, levels in self.levels.items():
            X[c] = pd.Categorical(X[c].astype("string"), categories=levels)
        return X

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LightGBMPD:
        import lightgbm as lgb

        self.columns = list(X.columns)
        self.levels = {c: sorted(X[c].astype("string").dropna().unique().tolist()) for c in X if _is_categorical(X[c])}
        self.model = lgb.LGBMClassifier(**self.params).fit(self._frame(X), np.asarray(y))
        return self

    def predict_pd(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._frame(X))[:, 1]


@dataclass
class WoEBinning:
    """Weight-of-evidence bins per feature, learned on training rows (0.5 pseudo-counts avoid log 0)."""

    n_bins: int = 5
    min_share: float = 0.05
    min_iv: float = 0.02
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    levels: dict[str, dict[str, int]] = field(default_factory=dict)
    woe: dict[str, np.ndarray] = field(default_factory=dict)
    iv: dict[str, float] = field(default_factory=dict)

    def _bin(self, X: pd.DataFrame, c: str) -> np.ndarray:
        if c in self.levels:
            # unseen and rare levels share the last bin ("other")
            other = max(self.levels[c].values(), default=-1) + 1
            return X[c].astype("string").fillna("<missing>").map(self.levels[c]).fillna(other).to_numpy(dtype=np.int64)
        x = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype="float64")
        b = np.searchsorted(self.edges[c], x, side="right")
        return np.where(np.isnan(x), len(self.edges[c]) + 1, b)  # missing: its own bin

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> WoEBinning:
        y = np.asarray(y, dtype=float)
        for c in X.columns:
            if _is_categorical(X[c]):
                share = X[c].astype("string").fillna("<missing>").value_counts(normalize=True)
                common = sorted(share.index[share >= self.min_share].tolist())
                self.levels[c] = {v: i for i, v in enumerate(common)}
                n_b = len(common) + 1
            else:
                x = pd.to_numeric(X[c], errors="coerce").to_numpy(dtype="float64")
                x = x[np.isfinite(x)]
                qs = np.quantile(x, np.linspace(0, 1, self.n_bins + 1)[1:-1]) if len(x) else np.array([])
                self.edges[c] = np.unique(qs)
                n_b = len(self.edges[c]) + 2
            b = self._bin(X, c)
            bad = np.bincount(b, weights=y, minlength=n_b) + 0.5
            good = np.bincount(b, weights=1 - y, minlength=n_b) + 0.5
            dist_bad, dist_good = bad / bad.sum(), good / good.sum()
            self.woe[c] = np.log(dist_bad / dist_good)  # > 0: riskier than average
            self.iv[c] = float(np.sum((dist_bad - dist_good) * self.woe[c]))
        return self

    @property
    def selected(self) -> list[str]:
        return [c for c, v in self.iv.items() if v >= self.min_iv]

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        cols = self.selected
        return np.column_stack([self.woe[c][self._bin(X, c)] for c in cols]) if cols else np.zeros((len(X), 0))


class WoELogisticPD:
    """WoE-binned logistic scorecard."""

    name = "woe_logistic"

    def __init__(self, n_bins: int = 5, min_iv: float = 0.02, C: float = 1.0):
        self.binning = WoEBinning(n_bins=n_bins, min_iv=min_iv)
        self.C = C

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> WoELogisticPD:
        self.binning.fit(X, y)
        self.model = LogisticRegression(C=self.C, max_iter=2000).fit(self.binning.transform(X), np.asarray(y))
        return self

    def predict_pd(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self.binning.transform(X))[:, 1]


class LogisticPD:
    """Logistic regression on one-hot categories and scaled (log where skewed) numerics."""

    name = "logistic"

    def __init__(self, C: float = 1.0):
        self.C = C

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        e = self.encoder.transform(X)
        n_onehot = sum(self.encoder.cardinalities)
        return np.concatenate([e.wide[:, :n_onehot], e.num], axis=1)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LogisticPD:
        self.encoder = FeatureEncoder(ple=False).fit(X)
        self.model = LogisticRegression(C=self.C, max_iter=2000).fit(self._design(X), np.asarray(y))
        return self

    def predict_pd(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._design(X))[:, 1]


class OptBinningScorecardPD:
    """optbinning's scorecard: optimal WoE bins per feature (IV >= min_iv kept), logistic regression on the WoE."""

    name = "optbinning"

    def __init__(self, min_iv: float = 0.02, C: float = 1.0):
        self.min_iv, self.C = min_iv, C

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X[self.columns].copy()
        for c in self.categorical:  # optbinning bins categories given as plain strings
            X[c] = X[c].astype("string").fillna("<missing>").astype(object)
        return X

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> OptBinningScorecardPD:
        from optbinning import BinningProcess, Scorecard

        self.columns = list(X.columns)
        self.categorical = [c for c in X if _is_categorical(X[c])]
        binning = BinningProcess(self.columns, categorical_variables=self.categorical or None,
                                 selection_criteria={"iv": {"min": self.min_iv}})
        self.model = Scorecard(binning, LogisticRegression(C=self.C, max_iter=2000)).fit(self._frame(X), np.asarray(y))
        return self

    def predict_pd(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._frame(X))[:, 1]


PEERS = {"lightgbm": LightGBMPD, "woe_logistic": WoELogisticPD, "optbinning": OptBinningScorecardPD,
         "logistic": LogisticPD}
