"""Calibration maps from a model's raw log-odds to probabilities of default, fitted on held-out rows.

Platt (a * logit + b), temperature (logit / T) and isotonic regression share one tiny interface
(`fit(logit, y)`, `transform(logit)`). The PD model fits the map either on the cross-fitted held-out
logits of its inner folds (every training row trains members and calibrates; `EnsembleRescaled` then
carries the map from one fold's members over to the average of all of them), or on training rows set
aside from its members, scored by the averaged ensemble. Either way the map is never fitted on rows
that produced the logits.
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


class EnsembleRescaled:
    """A map fitted on single members' held-out logits, applied to the average of several members.

    Why: the map learns how far to trust one member's logit; the average of K members is less noisy, so it
    deserves a steeper slope. With member logit m = s + e (shared signal s, member noise e of variance v),
    the best linear read-out of s from m has slope var(s) / var(m), from the average var(s) / var(avg): the
    map's input is stretched about `center` by `stretch` = var(m) / var(avg) (both measured across rows
    the members all score) before the fitted map is applied. Same interface as the maps above. Checked out
    of sample on German credit: pooled single-member slope x stretch matched the average's slope in every
    fold; but the map's own estimation error is stretched too, so on a few hundred rows `none` can be better.
    """

    def __init__(self, inner, stretch: float, center: float):
        self.inner, self.stretch, self.center = inner, float(stretch), float(center)
        self.name = inner.name

    def _member_scale(self, logit: np.ndarray) -> np.ndarray:
        return self.center + self.stretch * (np.asarray(logit, float) - self.center)

    def transform_logit(self, logit: np.ndarray) -> np.ndarray:
        return self.inner.transform_logit(self._member_scale(logit))

    def transform(self, logit: np.ndarray) -> np.ndarray:
        return self.inner.transform(self._member_scale(logit))


def ensemble_stretch(unit_logits: np.ndarray) -> tuple[float, float]:
    """(var(one unit) / var(their average), mean of the average) from a (units, rows) matrix of logits.

    A unit is what one held-out logit came from (an inner fold's members); the ratio is at least 1.
    """
    unit_logits = np.asarray(unit_logits, float)
    avg = unit_logits.mean(axis=0)
    var_avg = float(avg.var())
    var_unit = float(unit_logits.var(axis=1).mean())
    stretch = var_unit / var_avg if var_avg > 0 else 1.0
    return max(stretch, 1.0), float(avg.mean())


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
