"""Behaviour features: hand-computed values, point-in-time anchors, no leakage, reference check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from event_tables import make_tx as _tx
from offerlab.data.features import behaviour_features, behaviour_features_at

AS_OF = pd.Timestamp("2024-03-01")


@pytest.fixture()
def tx() -> pd.DataFrame:
    return _tx(
        [
            ("b", "2024-02-28", 15.0, "z"),
            ("a", "2024-01-11 12:00", 30.0, "x"),
            ("a", "2024-01-01", 10.0, "x"),
            ("c", "2024-03-05", 99.0, "w"),
            ("a", "2024-02-20", 40.0, "x"),
            ("b", "2023-12-01", 5.0, "y"),
            ("a", "2024-01-11", 20.0, "y"),
        ]
    )


def _future(tx: pd.DataFrame, after: dict[str, str]) -> pd.DataFrame:
    """Huge purchases in a new category after each customer's given time, plus a new customer."""
    rows = [(c, t, 1e9, "NEW") for c, t in after.items()] + [("d", "2024-04-01", 1e9, "NEW")]
    extra = _tx(rows)
    return pd.concat([extra, tx, extra], ignore_index=True)


EXPECTED = {
    "a": dict(
        has_history=1,
        recency_days=10,
        tenure_days=60,
        frequency=4,
        n_purchase_days=3,
        monetary_total=100,
        monetary_mean=25,
        amount_std=np.sqrt(125),
        last_amount=40,
        mean_gap_days=25,
        std_gap_days=15,
        cv_gap=0.6,
        count_30d=1,
        spend_30d=40,
        count_90d=4,
        spend_90d=100,
        count_365d=4,
        spend_365d=100,
        trend=4,
        trend_ratio=5,
        n_categories=2,
        cat_share_x=0.75,
        cat_share_y=0.25,
        cat_share_z=0,
    ),
    "b": dict(
        has_history=1,
        recency_days=2,
        tenure_days=91,
        frequency=2,
        n_purchase_days=2,
        monetary_total=20,
        monetary_mean=10,
        amount_std=5,
        last_amount=15,
        mean_gap_days=89,
        std_gap_days=0,
        cv_gap=0,
        count_30d=1,
        spend_30d=15,
        count_90d=1,
        spend_90d=15,
        count_365d=2,
        spend_365d=20,
        trend=0,
        trend_ratio=1,
        n_categories=2,
        cat_share_x=0,
        cat_share_y=0.5,
        cat_share_z=0.5,
    ),
}


def test_hand_computed(tx):
    f = behaviour_features(tx, AS_OF)
    assert f.index.tolist() == ["a", "b"] and f.index.name == "customer_id"
    assert list(f.columns) == list(EXPECTED["a"])
    want = pd.DataFrame(EXPECTED).T.astype(float)
    pd.testing.assert_frame_equal(f.astype(float), want, check_names=False, rtol=1e-9)


def test_window_boundaries():
    tx = _tx([("a", "2024-01-31", 1.0, "x"), ("a", "2024-01-31 00:00:01", 2.0, "x"), ("a", "2024-03-01", 4.0, "x")])
    f = behaviour_features(tx, AS_OF, windows=(30,))
    assert f.loc["a", "count_30d"] == 2 and f.loc["a", "spend_30d"] == 6  # window is (as_of - 30 d, as_of]
    g = behaviour_features(tx, AS_OF, windows=(30,), inclusive=False)
    assert g.loc["a", "count_30d"] == 1 and g.loc["a", "frequency"] == 2 and g.loc["a", "recency_days"] > 29


def test_at_anchors_point_in_time(tx):
    anchors = pd.DataFrame(
        {
            "customer_id": ["a", "b", "zz", "c", "a"],
            "as_of": pd.to_datetime(["2024-01-11", "2024-03-01", "2024-01-01", "2024-03-01", "2024-03-01"]),
        },
        index=[10, 11, 12, 13, 14],
    )
    f = behaviour_features_at(tx, anchors)
    assert f.index.tolist() == [10, 11, 12, 13, 14]
    r = f.loc[10]  # 2024-01-01 (10, x) and 2024-01-11 00:00 (20, y); the 12:00 purchase is later
    assert (r.frequency, r.monetary_total, r.recency_days, r.tenure_days, r.last_amount) == (2, 30, 0, 10, 20)
    assert (r.cat_share_x, r.cat_share_y, r.mean_gap_days) == (0.5, 0.5, 10)
    whole = behaviour_features(tx, AS_OF)
    for i, cid in ((11, "b"), (14, "a")):
        pd.testing.assert_series_equal(f.loc[i], whole.loc[cid], check_names=False)
    for i in (12, 13):  # unknown customer, and a customer whose purchases all come later
        r = f.loc[i]
        assert r.has_history == 0 and r.frequency == 0 and r.monetary_total == 0 and r.count_365d == 0
        assert r.trend == 0 and r.trend_ratio == 1 and r.cat_share_x == 0 and r.n_categories == 0
        assert np.isnan([r.recency_days, r.tenure_days, r.monetary_mean, r.mean_gap_days]).all()


def test_no_leakage_single_as_of(tx):
    for kw in ({}, {"categories": ["x", "y"]}, {"inclusive": False}):
        base = behaviour_features(tx, AS_OF, **kw)
        more = behaviour_features(
            _future(tx, {"a": "2024-03-01 00:00:01", "b": "2024-06-01", "c": "2024-03-02"}), AS_OF, **kw
        )
        pd.testing.assert_frame_equal(base, more, check_exact=True)
    assert "cat_share_NEW" not in base.columns


def test_no_leakage_per_row_anchors(tx):
    anchors = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "c", "b"],
            "as_of": pd.to_datetime(["2024-01-11", "2024-03-01", "2024-02-25", "2024-01-01", "2024-01-15"]),
        },
        index=list("pqrst"),
    )
    future = _future(tx, {"a": "2024-02-25 00:00:01", "b": "2024-03-01 00:00:01", "c": "2024-01-01 00:00:01"})
    for kw in ({}, {"windows": (7, 30)}, {"inclusive": False}):
        base = behaviour_features_at(tx, anchors, **kw)
        more = behaviour_features_at(future, anchors, **kw)
        pd.testing.assert_frame_equal(base, more, check_exact=True)
    assert "cat_share_NEW" not in base.columns and "cat_share_w" not in base.columns


def test_matches_reference_on_random_data():
    rng = np.random.default_rng(3)
    n = 600
    secs = rng.integers(0, 400 * 86_400, n) // 3_600 * 3_600  # hourly, with ties
    tx = pd.DataFrame(
        {
            "customer_id": rng.choice([f"u{i}" for i in range(12)], n),
            "timestamp": (np.datetime64("2023-01-01", "s") + secs).astype("datetime64[ns]"),
            "amount": np.round(rng.gamma(2.0, 10.0, n), 2),
            "category": rng.choice(["p", "q", "r"], n),
        }
    )
    anchors = pd.DataFrame(
        {
            "customer_id": rng.choice([f"u{i}" for i in range(14)], 40),
            "as_of": (np.datetime64("2023-01-01", "s") + rng.integers(0, 450 * 86_400, 40)).astype("datetime64[ns]"),
        }
    )
    anchors.loc[:4, "as_of"] = tx["timestamp"].iloc[:5].to_numpy()  # anchors exactly on an event
    anchors.loc[:4, "customer_id"] = tx["customer_id"].iloc[:5].to_numpy()
    cats = ["p", "q", "r"]
    f = behaviour_features_at(tx, anchors, categories=cats)
    for i, (cid, t) in anchors.iterrows():  # reference: filter, then the single-as-of path / plain pandas
        hist = tx[(tx.customer_id == cid) & (tx.timestamp <= t)]
        assert f.loc[i, "frequency"] == len(hist)
        if len(hist):
            np.testing.assert_allclose(f.loc[i, "monetary_total"], hist.amount.sum())
            np.testing.assert_allclose(f.loc[i, "amount_std"], hist.amount.std(ddof=0), atol=1e-9)
            recent = hist[hist.timestamp > t - pd.Timedelta(days=30)]
            assert f.loc[i, "count_30d"] == len(recent)
            np.testing.assert_allclose(f.loc[i, "spend_30d"], recent.amount.sum(), atol=1e-9)
            days = np.unique(hist.timestamp.to_numpy().astype("datetime64[D]").astype(np.int64))
            assert f.loc[i, "n_purchase_days"] == len(days)
            if len(days) > 1:
                np.testing.assert_allclose(f.loc[i, "std_gap_days"], np.diff(days).std())
            ref = behaviour_features(tx, t, categories=cats).loc[cid]
            pd.testing.assert_series_equal(f.loc[i], ref, check_names=False, rtol=1e-9)
        else:
            assert f.loc[i, "has_history"] == 0


def test_unseen_category_and_no_category_column(tx):
    f = behaviour_features(tx, AS_OF, categories=["x", "y"])
    assert [c for c in f.columns if c.startswith("cat_share_")] == ["cat_share_x", "cat_share_y"]
    assert f.loc["b", "cat_share_y"] == 0.5 and f.loc["b", "frequency"] == 2  # "z" is unknown: in no share
    assert f.loc["b", "n_categories"] == 1
    g = behaviour_features(tx.drop(columns="category"), AS_OF)
    assert not any(c.startswith("cat_share_") for c in g.columns) and (g.n_categories == 0).all()


def test_segment_cumsum_grid_and_grouped_paths_agree():
    """The serving-size grid path and the grouped path give the same per-customer running sums."""
    from offerlab.data.features import segment_cumsum

    rng = np.random.default_rng(0)
    counts = rng.integers(1, 60, size=200)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    code = np.repeat(np.arange(200), counts)
    x = rng.gamma(2.0, 30.0, size=(len(code), 2))
    grid = segment_cumsum(x, code, offsets, counts)  # 200 x 59 cells <= 4 x events: the grid path
    want = [np.concatenate([np.cumsum(x[a:b, j]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
            for j in range(2)]
    for j in range(2):
        np.testing.assert_array_equal(grid[j], want[j])
    skewed = counts.copy()
    skewed[0] = 5000  # one very long history: the grid would be mostly padding, so the grouped path runs
    off2 = np.concatenate([[0], np.cumsum(skewed)])
    code2 = np.repeat(np.arange(200), skewed)
    x2 = rng.gamma(2.0, 30.0, size=(len(code2), 2))
    grouped = segment_cumsum(x2, code2, off2, skewed)
    np.testing.assert_allclose(grouped[0][:5000], np.cumsum(x2[:5000, 0]), rtol=1e-13)
    np.testing.assert_allclose(grouped[1][5000:5000 + skewed[1]], np.cumsum(x2[5000:5000 + skewed[1], 1]), rtol=1e-13)
