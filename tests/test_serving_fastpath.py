"""The serving fast path gives the library's behaviour features (to 1e-9) on random and edge-case histories."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from offerlab.data.features import behaviour_features_at
from offerlab.serving.contracts import CustomerHistory
from offerlab.serving.fastpath import HistoryArrays, behaviour_features_fast, datetime_ns
from serving_models import serving_models  # noqa: F401

CATS = ["books", "grocery", "toys"]
T0 = dt.datetime(2023, 1, 1)


def _request(rng: np.random.Generator, i: int, n: int, same_day: bool = False) -> CustomerHistory:
    gaps = rng.exponential(20.0, size=n) * (0 if same_day else 1)
    when = [T0 + dt.timedelta(days=float(g), microseconds=int(rng.integers(0, 10**6))) for g in np.cumsum(gaps)]
    when.sort()
    cats = rng.choice(CATS + ["outdoors", None], size=n)  # "outdoors" is outside the model's vocabulary
    history = [{"timestamp": t, "amount": float(rng.gamma(2.0, 30.0)), "category": c}
               for t, c in zip(when, cats, strict=True)]
    as_of = when[-1] + dt.timedelta(days=float(rng.uniform(0, 200)))
    return CustomerHistory(customer_id=f"c{i}", history=history, as_of=as_of)


def _batch() -> list[CustomerHistory]:
    rng = np.random.default_rng(7)
    reqs = [_request(rng, i, int(rng.integers(2, 60))) for i in range(8)]
    reqs.append(_request(rng, 8, 1))  # one purchase
    reqs.append(_request(rng, 9, 5, same_day=True))  # all on one day
    only_unknown = CustomerHistory(customer_id="u", history=[
        {"timestamp": T0, "amount": 0.0, "category": "outdoors"},
        {"timestamp": T0 + dt.timedelta(days=3), "amount": 5.0, "category": None}], as_of=T0 + dt.timedelta(days=3))
    return [*reqs, only_unknown]


def _library(reqs: list[CustomerHistory], windows, categories) -> pd.DataFrame:
    """The reference: the library on a table built the plain pandas way."""
    ids = [f"r{i:06d}" for i in range(len(reqs))]
    tx = pd.DataFrame({
        "customer_id": [ids[i] for i, r in enumerate(reqs) for _ in r.history],
        "timestamp": pd.to_datetime([p.timestamp for r in reqs for p in r.history]).as_unit("ns"),
        "amount": [p.amount for r in reqs for p in r.history],
        "category": pd.Series([p.category for r in reqs for p in r.history], dtype=object)})
    anchors = pd.DataFrame({"customer_id": ids, "as_of": pd.to_datetime([r.as_of for r in reqs]).as_unit("ns")})
    return behaviour_features_at(tx, anchors, windows=windows, categories=categories, inclusive=True)


@pytest.mark.parametrize("categories", [CATS, None])
@pytest.mark.parametrize("windows", [(30.0, 90.0, 365.0), (7.0, 45.5)])
def test_fast_behaviour_equals_library(categories, windows):
    reqs = _batch()
    want = _library(reqs, windows, categories)
    got = pd.DataFrame(behaviour_features_fast(HistoryArrays.of(reqs), windows, categories))
    assert list(got.columns) == list(want.columns)
    np.testing.assert_allclose(got.to_numpy(dtype=float), want.to_numpy(dtype=float), rtol=1e-9, atol=1e-9)
    # edge cases carry the values they must: one purchase, one purchase day, only unknown categories
    assert got["frequency"].iloc[8] == 1 and np.isnan(got["mean_gap_days"].iloc[8])
    assert got["n_purchase_days"].iloc[9] == 1 and got["frequency"].iloc[9] == 5
    assert got["n_categories"].iloc[10] == (1 if categories is None else 0)


def test_single_customer_and_frame_round_trip():
    reqs = _batch()[:1]
    h = HistoryArrays.of(reqs)
    assert h.ts[0] == pd.Timestamp(reqs[0].history[0].timestamp).value == datetime_ns(reqs[0].history[0].timestamp)
    assert list(h.frame()["customer_id"].unique()) == ["r000000"]
    want = _library(reqs, (30.0,), CATS)
    got = pd.DataFrame(behaviour_features_fast(h, (30.0,), CATS))
    np.testing.assert_allclose(got.to_numpy(dtype=float), want.to_numpy(dtype=float), rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def adapters(serving_models):  # noqa: F811
    from offerlab.serving.models import CreditAdapter, UpliftAdapter

    return UpliftAdapter.load(), CreditAdapter.load()


def _rows(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """`n` random rows of `frame` with a few values knocked out (NaN numbers, missing / unseen levels)."""
    X = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True).copy()
    for c in X.columns:
        if pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype(float) * rng.uniform(0.5, 2.0, n)
            X.loc[0, c] = np.nan
        else:
            X[c] = X[c].astype(object)
            X.loc[0, c], X.loc[1, c] = None, "never-seen-level"
    return X


def test_fast_encoders_equal_the_model_encoders(adapters, serving_models):  # noqa: F811
    from offerlab.serving.contracts import CreditRequest, DiscountRequest
    from offerlab.serving.fastpath import credit_logit, uplift_matrix

    uplift, credit = adapters
    rng = np.random.default_rng(3)
    body = serving_models.offers_request(n=50)
    bodies = [serving_models.offers_request(n=k) for k in (1, 5, 50)]
    dreqs = [DiscountRequest.model_validate({k: b[k] for k in ("customer_id", "history", "as_of", "attributes")})
             for b in bodies]
    Xu = uplift.features(dreqs)
    want = uplift.model.encoder.transform(Xu)
    got = uplift_matrix(uplift.model.encoder, {c: Xu[c].to_numpy() for c in Xu.columns})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert got.dtype == want.dtype == np.float32

    creq = CreditRequest.model_validate({k: body[k] for k in ("customer_id", "history", "as_of", "application")})
    apps = credit.applications([creq])
    Xc = _rows(credit.features([creq], apps), 12, rng)
    want = credit.model.predict_logit(Xc)
    got = credit_logit(credit.model, {c: Xc[c].to_numpy() for c in Xc.columns})
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    assert np.isfinite(got).all() and len(np.unique(np.round(got, 6))) > 1
