"""The timing model's answers for a serving batch with few, large operations.

Why: for one customer the library path (`TimingPredictor`) is dominated by fixed per-call costs, not
arithmetic: building a transactions frame and factorising it, then ~40 small torch evaluations of the
log-normal mixture (three horizons, five count-head horizons, the drop-out belief, and a 24-step
bisection per quantile, each once per ensemble member). Here the histories go straight from request
arrays into the sequence builder's numpy core, each member's mixture parameters are taken once
(float64 numpy), and every question is a vectorised evaluation of those parameters: the quantiles by
a two-level grid over log-time with linear interpolation (1/63^2 of the log-time range between grid
points, then interpolated; the bisection resolved 2^-24 of it, both far below a day). The count head
gets its inputs from the library's own `count_features`, fed these probabilities.
tests/test_serving_timing_fast.py checks every answer against the library path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.special import log_ndtr

from offerlab.data.sequences import sequences_from_arrays
from offerlab.serving.fastpath import HistoryArrays, category_codes

GRID = 64  # points per level of the quantile grid


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.exp(x - m).sum(-1)) + m[..., 0]


def timing_state(predictor, h: HistoryArrays):
    """`TimingPredictor.encode` of a serving batch, each open gap measured at the request's own as-of instant."""
    from offerlab.timing.data import build_examples

    latest = int(h.as_of.max())
    cat, vocab = category_codes(h.category, np.ones(len(h.ts), dtype=bool), predictor.categories or None)
    seqs = sequences_from_arrays(h.codes, np.asarray(h.ids, dtype=object), h.ts, h.amount, cat, vocab, latest,
                                 same_day=predictor.same_day)
    ex, _ = build_examples(seqs, pd.Timestamp(latest), predictor.stats, use_calendar=predictor.use_calendar,
                           age_inputs=predictor.age_inputs)
    last = ex.offsets[1:] - 1
    # the batch was built as of the latest instant; every request's open gap ends at its own
    own = h.as_of / 86_400e9
    ex.target_gap[last] = np.maximum(own - ex.abs_day[last], 0.0).astype(np.float32)
    with torch.inference_mode():
        return predictor.encode_examples(ex, np.asarray(seqs.log_amount, dtype=np.float64))


class MixtureAnswers:
    """Every member's next-gap mixture for a batch as numpy arrays; answers are ensemble means.

    Quacks like the `TimingPredictor` methods `count_features` uses (`stats`, `prob_within`, `prob_never`).
    """

    def __init__(self, predictor, state) -> None:
        self.predictor, self.state, self.stats = predictor, state, predictor.stats
        self.elapsed = state.elapsed.double().numpy()
        self.params = []
        with torch.inference_mode():
            for i, m in enumerate(predictor.models):
                d = m.gap_distribution(state.h[i])
                self.params.append(tuple(x.double().numpy() for x in
                                         (d.log_w, d.mu, d.sigma, d.log_p_never, d.log_p_event)))
        self.log_s0 = [self._log_survival(j, self.elapsed) for j in range(len(self.params))]
        self._within: dict[float, np.ndarray] = {}

    def precompute(self, horizons: tuple[float, ...]) -> None:
        """P(purchase within k days) for every k in `horizons` in one evaluation (later `prob_within` reads it)."""
        ks = np.asarray(horizons, dtype=np.float64)
        cdf = self.cond_cdf(np.broadcast_to(ks, (len(self.elapsed), len(ks))))
        self._within.update({float(k): cdf[:, j] for j, k in enumerate(ks)})

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

    def prob_within(self, state, k: float) -> np.ndarray:  # noqa: ARG002 - the predictor's signature
        if float(k) not in self._within:
            self.precompute((float(k),))
        return self._within[float(k)]

    def prob_never(self, state) -> np.ndarray:  # noqa: ARG002 - the predictor's signature
        return np.mean([np.exp(p[3] - s0) for p, s0 in zip(self.params, self.log_s0, strict=True)], axis=0)

    def quantiles(self, qs: tuple[float, ...]) -> np.ndarray:
        """Days from the as-of instant to the next purchase at levels `qs` (N, Q); inf where out of reach."""
        from offerlab.timing.distributions import LOG_T_MAX, LOG_T_MIN

        n, q = len(self.elapsed), np.asarray(qs, dtype=np.float64)
        # coarse: one grid over the whole range, shared by every level (its last point is the ceiling)
        grid = np.broadcast_to(np.linspace(LOG_T_MIN, LOG_T_MAX, GRID), (n, 1, GRID))
        cdf = self.cond_cdf(np.exp(grid))
        ceiling = cdf[:, 0, -1]
        for fine in (False, True):  # then a fine grid inside each level's bracket
            k = np.clip((cdf < q[None, :, None]).sum(-1) - 1, 0, GRID - 2)  # last grid point below the level
            c0, c1 = (np.take_along_axis(cdf, (k + d)[..., None], -1)[..., 0] for d in (0, 1))
            lo, hi = (np.take_along_axis(grid, (k + d)[..., None], -1)[..., 0] for d in (0, 1))
            if not fine:
                grid = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, GRID)  # (N, Q, G)
                cdf = self.cond_cdf(np.exp(grid))
        w = np.clip((q - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0, 1.0)
        t = np.exp(lo + w * (hi - lo))
        return np.where(ceiling[:, None] < q[None, :], np.inf, t)

    def expected_counts(self, horizon: float, n_samples: int) -> np.ndarray:
        """The count head's closed form on inputs built from these probabilities; else the library's simulation."""
        from offerlab.timing.counts import count_features

        head = getattr(self.predictor, "count_head", None)
        with torch.inference_mode():
            if head is None:
                return self.predictor.simulate_counts(self.state, horizon, n_samples, seed=0)
            x = torch.from_numpy(count_features(self, self.state))
            return head.expected_count(x, float(horizon)).double().numpy()


def count_horizons() -> tuple[float, ...]:
    """The horizons the count head reads P(purchase within) at (none when the library has no such list)."""
    from offerlab.timing import counts

    return tuple(getattr(counts, "TPP_HORIZONS", ()))
