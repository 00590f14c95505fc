"""Calibration maps from a model's raw log-odds to probabilities of default, fitted on held-out rows.

Platt (a * logit + b), temperature (logit / T) and isotonic regression share one tiny interface
(`fit(logit, y)`, `transform(logit)`). The PD model fits the map on training rows set aside from its
members, scored by the averaged ensemble (the very score the map is applied to), so the map is never
fitted on rows that produced the logits nor on a differently spread score.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.isotonic import IsotonicRegression

from offerlab.credit.metrics import reliability_table

EPS = 1e-6


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    # log(1 + exp(z)) - y z, stable for large |z|
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


class PlattCalibrator:
    """p = sigmoid(a * logit + b): fixes both over-confidence (a) and the average level (b)."""

    name = "platt"

    def __init__(self):
        self.a, self.b = 1.0, 0.0

    def fit(self, logit: np.ndarray, y: np.ndarray) -> PlattCalibrator:
        logit, y = np.asarray(logit, float), np.asarray(y, float)
        res = minimize(lambda w: _nll(w[0] * logit + w[1], y), x0=np.array([1.0, 0.0]), method="Nelder-Mead",
                       options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000})
        self.a, self.b = float(res.x[0]), float(res.x[1])
        return self

    def transform_logit(self, logit: np.ndarray) -> np.ndarray:
        return self.a * np.asarray(logit, float) + self.b

    def transform(self, logit: np.ndarray) -> np.ndarray:
        return _sigmoid(self.transform_logit(logit))


class TemperatureCalibrator:
    """p = sigmoid(logit / T): one parameter, keeps the ranking and the log-odds zero point."""

    name = "temperature"

    def __init__(self):
        self.temperature = 1.0

    def fit(self, logit: np.ndarray, y: np.ndarray) -> TemperatureCalibrator:
        logit, y = np.asarray(logit, float), np.asarray(y, float)
        res = minimize(lambda w: _nll(logit / np.exp(w[0]), y), x0=np.zeros(1), method="Nelder-Mead")
        self.temperature = float(np.exp(res.x[0]))
        return self

    def transform_logit(self, logit: np.ndarray) -> np.ndarray:
        return np.asarray(logit, float) / self.temperature

    def transform(self, logit: np.ndarray) -> np.ndarray:
        return _sigmoid(self.transform_logit(logit))


class IsotonicCalibrator:
    """Monotone step map; flexible, needs more held-out rows than Platt to be stable."""

    name = "isotonic"

    def fit(self, logit: np.ndarray, y: np.ndarray) -> IsotonicCalibrator:
        self.iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(logit, y)
        return self

    def transform(self, logit: np.ndarray) -> np.ndarray:
        return np.clip(self.iso.predict(np.asarray(logit, float)), EPS, 1 - EPS)

    def transform_logit(self, logit: np.ndarray) -> np.ndarray:
        p = self.transform(logit)
        return np.log(p / (1 - p))


class IdentityCalibrator:
    name = "none"

    def fit(self, logit: np.ndarray, y: np.ndarray) -> IdentityCalibrator:
        return self

    def transform_logit(self, logit: np.ndarray) -> np.ndarray:
        return np.asarray(logit, float)

    def transform(self, logit: np.ndarray) -> np.ndarray:
        return _sigmoid(np.asarray(logit, float))


CALIBRATORS = {c.name: c for c in (PlattCalibrator, TemperatureCalibrator, IsotonicCalibrator, IdentityCalibrator)}


def make_calibrator(method: str):
    if method not in CALIBRATORS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {sorted(CALIBRATORS)}")
    return CALIBRATORS[method]()


def reliability_figure(y: np.ndarray, p: np.ndarray, n_bins: int = 10, title: str = "Reliability (10 quantile bins)"):
    """Reliability curve (observed default rate vs mean predicted PD per quantile bin) as a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = reliability_table(y, p, n_bins)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    hi = float(max(t["mean_pd"].max(), t["default_rate"].max())) * 1.05 + 1e-3
    ax.plot([0, hi], [0, hi], ls="--", c="grey", lw=1, label="perfect")
    ax.plot(t["mean_pd"], t["default_rate"], "o-", label="model")
    ax.set_xlabel("mean predicted PD")
    ax.set_ylabel("observed default rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
