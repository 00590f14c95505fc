"""An ensemble's next-gap mixtures for many customers as float64 numpy arrays, and the answers read off them.

Why: each question (P(purchase within k days), the drop-out belief, quantiles of the next purchase date)
is a few vectorised evaluations of the same parameters, taken once per member. The quantiles come from
a two-level grid over log-time with linear interpolation: a coarse grid shared by every level (its last
point is the ceiling: a level above P(any further purchase) is out of reach, inf), then a fine grid
inside each level's bracket; between fine points the log-time resolution is 1/63^2 of the range (0.006,
i.e. 0.6% of the answer), and the interpolation goes far below that. Two evaluations instead of a
bisection's forty. Used by `TimingPredictor.quantiles` and by serving (`offerlab.serving.timing_fast`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import log_ndtr

from offerlab.timing.distributions import LOG_T_MAX, LOG_T_MIN

GRID = 64  # points per level of the quantile grid
BLOCK = 8192  # customers per block in `quantiles` (bounded memory: block x levels x GRID x components)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.exp(x - m).sum(-1)) + m[..., 0]


class EnsembleMixture:
    """Every member's mixture for a `CustomerState`; answers are ensemble means over the members."""

    def __init__(self, predictor, state) -> None:
        self.elapsed = state.elapsed.double().numpy()
        self.params = []
        with torch.inference_mode():
            for i, m in enumerate(predictor.models):
                d = m.gap_distribution(state.h[i])
                self.params.append(tuple(x.double().numpy() for x in
                                         (d.log_w, d.mu, d.sigma, d.log_p_never, d.log_p_event)))
        self.log_s0 = [self._log_survival(j, self.elapsed) for j in range(len(self.params))]
        self._within: dict[float, np.ndarray] = {}

    def _block(self, rows: slice) -> EnsembleMixture:
        out = EnsembleMixture.__new__(EnsembleMixture)
        out.elapsed, out._within = self.elapsed[rows], {}
        out.params = [tuple(x[rows] for x in p) for p in self.params]
        out.log_s0 = [s[rows] for s in self.log_s0]
        return out

    def _log_survival(self, j: int, t: np.ndarray) -> np.ndarray:
        """log P(no purchase within t days of the last one) of member j; t is (N,) or (N, ...)."""
        log_w, mu, sigma, log_never, log_event = self.params[j]
        lead = (slice(None),) + (None,) * (t.ndim - 1)
        z = (np.log(np.maximum(t, 1e-30))[..., None] - mu[lead]) / sigma[lead]
        return np.logaddexp(log_never[lead], log_event[lead] + _logsumexp(log_w[lead] + log_ndtr(-z)))

    def cond_cdf(self, after: np.ndarray) -> np.ndarray:
        """P(a purchase within `after` days of the as-of instant | none since the last one); (N, ...)."""
        e = self.elapsed.reshape((-1,) + (1,) * (after.ndim - 1))
        parts = [-np.expm1(self._log_survival(j, e + after) - s0.reshape(e.shape))
                 for j, s0 in enumerate(self.log_s0)]
        return np.mean(parts, axis=0)

    def precompute(self, horizons: tuple[float, ...]) -> None:
        """P(purchase within k days) for every k in `horizons` in one evaluation (later `prob_within` reads it)."""
        ks = np.asarray(horizons, dtype=np.float64)
        cdf = self.cond_cdf(np.broadcast_to(ks, (len(self.elapsed), len(ks))))
        self._within.update({float(k): cdf[:, j] for j, k in enumerate(ks)})

    def prob_within(self, state, k: float) -> np.ndarray:  # noqa: ARG002 - `TimingPredictor.prob_within`'s signature
        if float(k) not in self._within:
            self.precompute((float(k),))
        return self._within[float(k)]

    def prob_never(self, state) -> np.ndarray:  # noqa: ARG002 - `TimingPredictor.prob_never`'s signature
        return np.mean([np.exp(p[3] - s0) for p, s0 in zip(self.params, self.log_s0, strict=True)], axis=0)

    def quantiles(self, qs: tuple[float, ...]) -> np.ndarray:
        """Days from the as-of instant to the next purchase at levels `qs` (N, Q); inf where out of reach."""
        n = len(self.elapsed)
        if n > BLOCK:  # a loop over blocks of customers, vectorised inside
            return np.concatenate([self._block(slice(s, s + BLOCK)).quantiles(qs) for s in range(0, n, BLOCK)])
        q = np.asarray(qs, dtype=np.float64)
        grid = np.broadcast_to(np.linspace(LOG_T_MIN, LOG_T_MAX, GRID), (n, 1, GRID))
        cdf = self.cond_cdf(np.exp(grid))
        ceiling = cdf[:, 0, -1]
        for fine in (False, True):
            k = np.clip((cdf < q[None, :, None]).sum(-1) - 1, 0, GRID - 2)  # last grid point below the level
            c0, c1 = (np.take_along_axis(cdf, (k + d)[..., None], -1)[..., 0] for d in (0, 1))
            lo, hi = (np.take_along_axis(grid, (k + d)[..., None], -1)[..., 0] for d in (0, 1))
            if not fine:
                grid = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, GRID)  # (N, Q, G)
                cdf = self.cond_cdf(np.exp(grid))
        w = np.clip((q - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0, 1.0)
        t = np.exp(lo + w * (hi - lo))
        return np.where(ceiling[:, None] < q[None, :], np.inf, t)
