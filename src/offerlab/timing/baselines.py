"""Peers of the timing model behind one small interface: BG/NBD, Pareto/NBD (lifetimes) and a naive rate.

Every forecaster is fitted on the calibration transactions up to a cutoff and answers, per customer
with a purchase by then: expected purchases in a horizon, P(any purchase in the horizon), P(purchase
within k days) and a ranking score for the C-index (higher = sooner). The RFM summary is built here
(lifetimes' `calibration_and_holdout_data` breaks on pandas 3); purchases are distinct purchase days
when `same_day="merge"` (the BTYD convention), else every transaction.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
WEEK = 7.0


def end_of_day(day: str | pd.Timestamp) -> pd.Timestamp:
    """The last instant of a calendar day: a cutoff date includes the whole day."""
    return pd.Timestamp(day).normalize() + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)


def purchase_events(transactions: pd.DataFrame, same_day: str = "merge") -> pd.DataFrame:
    """customer_id, timestamp of purchase events: one per customer and day when merging."""
    tx = transactions[["customer_id", "timestamp"]]
    if same_day == "merge":
        tx = tx.assign(timestamp=tx["timestamp"].dt.normalize()).drop_duplicates()
    return tx


def rfm_summary(transactions: pd.DataFrame, cutoff: str | pd.Timestamp, same_day: str = "merge",
                unit_days: float = WEEK) -> pd.DataFrame:
    """BTYD summary per customer as of `cutoff` (inclusive day): frequency (repeat purchases), recency
    (first to last purchase) and T (first purchase to cutoff), times in `unit_days`."""
    end = end_of_day(cutoff)
    ev = purchase_events(transactions, same_day)
    ev = ev[ev["timestamp"] <= end]
    g = ev.groupby("customer_id", sort=True)["timestamp"]
    first, last, n = g.min(), g.max(), g.size()
    day = pd.Timedelta(days=1)
    out = pd.DataFrame({
        "frequency": (n - 1).astype(float),
        "recency": (last - first) / day / unit_days,
        "T": (end - first) / day / unit_days,
    })
    out.index.name = "customer_id"
    return out


class TimingForecaster(Protocol):
    """What the benchmark needs from every model, ours included."""

    name: str

    def fit(self, transactions: pd.DataFrame, cutoff: str | pd.Timestamp) -> TimingForecaster: ...

    def predict(self, horizon_days: float, within_days: float = 30.0) -> pd.DataFrame:
        """Index customer_id; columns expected_count, p_any, p_within, risk_score."""
        ...


class _BTYD:
    """Shared fit/predict of the lifetimes BTYD models on a self-built RFM summary."""

    name = "btyd"
    fitter_cls = None

    def __init__(self, same_day: str = "merge", penalizer: float = 0.0):
        self.same_day = same_day
        self.penalizer = penalizer

    def fit(self, transactions: pd.DataFrame, cutoff: str | pd.Timestamp) -> _BTYD:
        self.rfm = rfm_summary(transactions, cutoff, self.same_day)
        self.model = self._fitter()(penalizer_coef=self.penalizer)
        self.model.fit(self.rfm["frequency"], self.rfm["recency"], self.rfm["T"])
        return self

    def _fitter(self):
        raise NotImplementedError

    def _p_zero(self, t_weeks: float) -> np.ndarray:
        raise NotImplementedError

    def predict(self, horizon_days: float, within_days: float = 30.0) -> pd.DataFrame:
        f, r, T = (self.rfm[c].to_numpy() for c in ("frequency", "recency", "T"))
        t = horizon_days / WEEK
        expected = np.asarray(self.model.conditional_expected_number_of_purchases_up_to_time(t, f, r, T), dtype=float)
        p_any = 1.0 - self._p_zero(t)
        return pd.DataFrame({
            "expected_count": expected,
            "p_any": np.clip(p_any, 0, 1),
            "p_within": np.clip(1.0 - self._p_zero(within_days / WEEK), 0, 1),
            "risk_score": p_any,
        }, index=self.rfm.index)


class BGNBD(_BTYD):
    """Beta-geometric / NBD (Fader, Hardie & Lee 2005): drop-out after a purchase with probability p."""

    name = "bg_nbd"

    def _fitter(self):
        from lifetimes import BetaGeoFitter

        return BetaGeoFitter

    def _p_zero(self, t_weeks: float) -> np.ndarray:
        """P(no purchase in (T, T+t] | history) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+t))^(r+x).

        An alive BG/NBD customer who buys nothing cannot drop out (drop-out follows purchases only), so
        only the posterior Gamma(r+x, alpha+T) of the rate matters for the alive part.
        """
        f, r_, T = (self.rfm[c].to_numpy() for c in ("frequency", "recency", "T"))
        p_alive = np.asarray(self.model.conditional_probability_alive(f, r_, T), dtype=float)
        r, alpha = self.model.params_["r"], self.model.params_["alpha"]
        return 1.0 - p_alive + p_alive * ((alpha + T) / (alpha + T + t_weeks)) ** (r + f)


class ParetoNBD(_BTYD):
    """Pareto/NBD (Schmittlein, Morrison & Colombo 1987): exponential lifetime, Poisson purchases."""

    name = "pareto_nbd"

    def _fitter(self):
        from lifetimes import ParetoNBDFitter

        return ParetoNBDFitter

    def _p_zero(self, t_weeks: float) -> np.ndarray:
        f, r_, T = (self.rfm[c].to_numpy() for c in ("frequency", "recency", "T"))
        p0 = self.model.conditional_probability_of_n_purchases_up_to_time(0, t_weeks, f, r_, T)
        return np.asarray(p0, dtype=float)


class NaiveRate:
    """Each customer keeps buying at their own past rate (repeat purchases / age), Poisson; no drop-out."""

    name = "naive"

    def __init__(self, same_day: str = "merge"):
        self.same_day = same_day

    def fit(self, transactions: pd.DataFrame, cutoff: str | pd.Timestamp) -> NaiveRate:
        rfm = rfm_summary(transactions, cutoff, self.same_day, unit_days=1.0)
        self.index = rfm.index
        self.rate = (rfm["frequency"] / rfm["T"].clip(lower=1.0)).to_numpy()
        return self

    def predict(self, horizon_days: float, within_days: float = 30.0) -> pd.DataFrame:
        p_any = -np.expm1(-self.rate * horizon_days)
        return pd.DataFrame({
            "expected_count": self.rate * horizon_days,
            "p_any": p_any,
            "p_within": -np.expm1(-self.rate * within_days),
            "risk_score": self.rate,
        }, index=self.index)


PEERS = {"bg_nbd": BGNBD, "pareto_nbd": ParetoNBD, "naive": NaiveRate}
