"""The serving timing path (`offerlab.serving.timing_fast`) gives the library's answers on random histories."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch

from offerlab.serving.contracts import CustomerHistory
from offerlab.serving.fastpath import HistoryArrays
from serving_models import serving_models  # noqa: F401

T0 = dt.datetime(2024, 3, 1)


def _requests(categories: list[str], as_of: dt.datetime | None, n: int = 9) -> list[CustomerHistory]:
    rng = np.random.default_rng(11)
    out = []
    for i in range(n):
        k = 1 if i == 0 else int(rng.integers(2, 70))
        days = np.sort(rng.uniform(0, 250, size=k))
        when = [T0 + dt.timedelta(days=float(d)) for d in days]
        cats = rng.choice([*categories, None], size=k)
        history = [{"timestamp": t, "amount": float(rng.gamma(2.0, 25.0)), "category": c}
                   for t, c in zip(when, cats, strict=True)]
        own = as_of or when[-1] + dt.timedelta(days=float(rng.uniform(0, 300)))
        out.append(CustomerHistory(customer_id=f"c{i}", history=history, as_of=own))
    return out


def _frame(reqs: list[CustomerHistory]) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [f"r{i:06d}" for i, r in enumerate(reqs) for _ in r.history],
        "timestamp": pd.to_datetime([p.timestamp for r in reqs for p in r.history]).as_unit("ns"),
        "amount": [p.amount for r in reqs for p in r.history],
        "category": pd.Series([p.category for r in reqs for p in r.history], dtype=object)})


@pytest.fixture(scope="module")
def predictor(serving_models):  # noqa: F811
    """The served timing model as a two-member ensemble (the second member's weights perturbed)."""
    from offerlab.serving.models import TimingAdapter

    p = copy.copy(TimingAdapter.load().predictor)
    other = copy.deepcopy(p.models[0])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w in other.parameters():
            w.add_(0.2 * torch.randn(w.shape, generator=gen))
    p.models = [p.models[0], other]
    return p


def test_fast_answers_equal_library(predictor):
    from offerlab.serving.timing_fast import MixtureAnswers, timing_state

    as_of = T0 + dt.timedelta(days=320)
    reqs = _requests(predictor.categories, as_of)
    state = timing_state(predictor, HistoryArrays.of(reqs))
    want = predictor.encode(_frame(reqs), pd.Timestamp(as_of))
    torch.testing.assert_close(state.h, want.h)
    torch.testing.assert_close(state.elapsed, want.elapsed)

    mix = MixtureAnswers(predictor, state)
    for k in (7.0, 30.0, 90.0, 273.0):
        np.testing.assert_allclose(mix.prob_within(state, k), predictor.prob_within(want, k), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mix.prob_never(state), predictor.prob_never(want), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(mix.quantiles((0.1, 0.5, 0.9)), predictor.quantiles(want, (0.1, 0.5, 0.9)))
    np.testing.assert_allclose(mix.expected_counts(90.0, 64), predictor.expected_counts(want, 90.0, 64),
                               rtol=1e-4, atol=1e-6)


def test_each_request_keeps_its_own_as_of(predictor):
    """A batch with different as-of instants answers like each customer scored alone at its own instant."""
    from offerlab.serving.timing_fast import MixtureAnswers, timing_state

    reqs = _requests(predictor.categories, None, n=5)
    mix = MixtureAnswers(predictor, timing_state(predictor, HistoryArrays.of(reqs)))
    got = mix.prob_within(None, 30.0)
    for i, r in enumerate(reqs):  # the reference, one customer at a time
        alone = predictor.encode(_frame([r]), pd.Timestamp(r.as_of))
        np.testing.assert_allclose(got[i], predictor.prob_within(alone, 30.0)[0], rtol=1e-4, atol=1e-6)


def test_grid_quantiles_equal_bisection(predictor):
    """The two-level grid finds the levels a 60-step bisection of one member's conditional survival finds."""
    from offerlab.timing.mixture import EnsembleMixture

    single = copy.copy(predictor)
    single.models = predictor.models[:1]
    reqs = _requests(predictor.categories, T0 + dt.timedelta(days=320), n=40)
    state = single.encode(_frame(reqs), pd.Timestamp(T0 + dt.timedelta(days=320)))
    mix = EnsembleMixture(single, state)
    with torch.no_grad():
        dist = single.models[0].gap_distribution(state.h[0])
        levels = (0.01, 0.05, 0.2)  # a tiny model believes in drop-out: higher levels are mostly out of reach
        for j, q in enumerate(levels):
            want = dist.quantile_after(state.elapsed.double(), q, iters=60).numpy()
            got = mix.quantiles(levels)[:, j]
            assert np.array_equal(np.isinf(got), np.isinf(want))
            finite = np.isfinite(want)
            assert finite.sum() >= 5  # reachable levels exist, so the comparison means something
            np.testing.assert_allclose(got[finite], want[finite], rtol=2e-4)
    blocks = EnsembleMixture(single, state)
    import offerlab.timing.mixture as mixture

    old, mixture.BLOCK = mixture.BLOCK, 7  # blocks of customers give the same answers as one pass
    try:
        np.testing.assert_array_equal(blocks.quantiles((0.1, 0.5)), mix.quantiles((0.1, 0.5)))
    finally:
        mixture.BLOCK = old
