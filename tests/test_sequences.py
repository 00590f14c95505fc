"""Event sequences: hand-computed values, no leakage, truncation, same-day merge, padding, the search index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from event_tables import make_tx as _tx
from offerlab.data.sequences import EventIndex, build_sequences, calendar_features

AS_OF = pd.Timestamp("2024-03-01")


@pytest.fixture()
def tx() -> pd.DataFrame:
    # rows deliberately out of order; 2024 is a leap year
    return _tx(
        [
            ("b", "2024-02-28", 15.0, "z"),
            ("a", "2024-01-11 12:00", 30.0, "x"),
            ("a", "2024-01-01", 10.0, "x"),
            ("c", "2024-03-05", 99.0, "w"),  # after as_of only → absent
            ("a", "2024-02-20", 40.0, "x"),
            ("b", "2023-12-01", 5.0, "y"),
            ("a", "2024-01-11", 20.0, "y"),
        ]
    )


def _future(tx: pd.DataFrame) -> pd.DataFrame:
    """Events after AS_OF with huge amounts, a new category and a new customer."""
    extra = _tx(
        [
            ("a", "2024-03-01 00:00:01", 1e9, "NEW"),
            ("b", "2024-06-01", 1e9, "NEW"),
            ("a", "2025-01-01", 5e8, "x"),
            ("d", "2024-04-01", 1e9, "NEW"),
        ]
    )
    return pd.concat([extra.iloc[:2], tx, extra.iloc[2:]], ignore_index=True)


def test_hand_computed(tx):
    s = build_sequences(tx, AS_OF)
    assert s.customer_ids.tolist() == ["a", "b"]
    assert s.absent_ids.tolist() == ["c"]
    np.testing.assert_array_equal(s.offsets, [0, 4, 6])
    np.testing.assert_array_equal(s.lengths, [4, 2])
    np.testing.assert_allclose(s.gap_days, [0, 10, 0.5, 39.5, 0, 89])
    np.testing.assert_allclose(s.censored_gap_days, [10, 2])
    np.testing.assert_allclose(s.log_amount, np.log1p([10, 20, 30, 40, 5, 15]), rtol=1e-6)
    assert s.categories == ["x", "y", "z"]
    np.testing.assert_array_equal(s.category, [1, 2, 1, 1, 2, 3])
    assert s.origin == pd.Timestamp("2023-12-01") and s.as_of == AS_OF
    np.testing.assert_allclose(s.event_time_days, [31, 41, 41.5, 81, 0, 89])
    # 2024-01-01 is a Monday in January, day 1
    np.testing.assert_allclose(s.calendar[0, :5], [0, 1, 0, 1, 1 / 31], atol=1e-6)
    assert s.calendar.shape == (6, len(s.calendar_names)) and s.calendar.dtype == np.float32


def test_as_of_is_inclusive_and_exclusive_option(tx):
    at = pd.Timestamp("2024-02-28")
    assert build_sequences(tx, at).lengths.tolist() == [4, 2]
    assert build_sequences(tx, at, inclusive=False).lengths.tolist() == [4, 1]


@pytest.mark.parametrize("kw", [{}, {"same_day": "merge"}, {"max_len": 2}, {"categories": ["x", "y"]}])
def test_no_leakage(tx, kw):
    base = build_sequences(tx, AS_OF, **kw)
    more = build_sequences(_future(tx), AS_OF, **kw)
    for f in (
        "customer_ids",
        "offsets",
        "gap_days",
        "log_amount",
        "category",
        "calendar",
        "event_time_days",
        "censored_gap_days",
    ):
        np.testing.assert_array_equal(getattr(base, f), getattr(more, f), err_msg=f)
    assert (base.categories, base.origin, base.as_of) == (more.categories, more.origin, more.as_of)
    assert more.absent_ids.tolist() == ["c", "d"]


def test_max_len_keeps_most_recent(tx):
    s = build_sequences(tx, AS_OF, max_len=2)
    np.testing.assert_array_equal(s.offsets, [0, 2, 4])
    np.testing.assert_allclose(s.gap_days, [0.5, 39.5, 0, 89])  # true gap to the dropped previous event
    np.testing.assert_allclose(np.expm1(s.log_amount), [30, 40, 5, 15], rtol=1e-6)
    np.testing.assert_allclose(s.censored_gap_days, [10, 2])


def test_same_day_merge(tx):
    s = build_sequences(tx, AS_OF, same_day="merge")
    np.testing.assert_array_equal(s.offsets, [0, 3, 5])
    np.testing.assert_allclose(np.expm1(s.log_amount), [10, 50, 40, 5, 15], rtol=1e-6)
    np.testing.assert_array_equal(s.category, [1, 1, 1, 2, 3])  # 30 ("x") beats 20 ("y") on 2024-01-11
    np.testing.assert_allclose(s.gap_days, [0, 10, 40, 0, 89])  # merged event at the day's first purchase


def test_unseen_category_maps_to_zero(tx):
    s = build_sequences(tx, AS_OF, categories=["x", "y"])
    assert s.categories == ["x", "y"]
    np.testing.assert_array_equal(s.category, [1, 2, 1, 1, 2, 0])
    no_cat = build_sequences(tx.drop(columns="category"), AS_OF)
    assert no_cat.categories == [] and not no_cat.category.any()


def test_padded_left_and_right(tx):
    s = build_sequences(tx, AS_OF)
    left = s.padded()
    assert left["gap"].shape == (2, 4) and left["calendar"].shape == (2, 4, 7)
    assert left["mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert left["lengths"].tolist() == [4, 2]
    torch.testing.assert_close(left["censored_gap"], torch.tensor([10.0, 2.0]))
    assert left["category"][1].tolist() == [2, 3, 0, 0] and left["gap"].dtype == torch.float32
    right = s.padded(np.array([1, 0]), max_len=3, align="right")
    assert right["gap"].shape == (2, 3)
    assert right["mask"].tolist() == [[False, True, True], [True, True, True]]
    torch.testing.assert_close(right["gap"], torch.tensor([[0, 0, 89], [10, 0.5, 39.5]]))
    assert right["index"].tolist() == [1, 0] and right["lengths"].tolist() == [2, 3]
    assert right["event_time"][:, -1].tolist() == [89.0, 81.0]  # the latest event is always last


def test_subset_and_index_of(tx):
    s = build_sequences(tx, AS_OF)
    sub = s.subset([1, 0])
    assert sub.customer_ids.tolist() == ["b", "a"]
    np.testing.assert_array_equal(sub.offsets, [0, 2, 6])
    np.testing.assert_allclose(sub.gap_days, [0, 89, 0, 10, 0.5, 39.5])
    np.testing.assert_allclose(sub.censored_gap_days, [2, 10])
    assert s.index_of(["b", "zz", "a"]).tolist() == [1, -1, 0]


def test_calendar_matches_pandas():
    rng = np.random.default_rng(0)
    ts = rng.integers(-(10**18), 2 * 10**18, 2_000)  # 1938 .. 2033, nanosecond resolution
    cal = calendar_features(ts)
    d = pd.DatetimeIndex(ts.astype("datetime64[ns]"))
    np.testing.assert_allclose(cal[:, 0], np.sin(2 * np.pi * d.dayofweek / 7), atol=1e-6)
    np.testing.assert_allclose(cal[:, 3], np.cos(2 * np.pi * (d.month - 1) / 12), atol=1e-6)
    np.testing.assert_allclose(cal[:, 4], d.day / 31, atol=1e-6)
    tod = (d.hour * 3600 + d.minute * 60 + d.second) / 86_400
    np.testing.assert_allclose(cal[:, 5], np.sin(2 * np.pi * tod), atol=1e-4)


@pytest.mark.parametrize(
    ("unit", "span", "n_cust", "ranked"),
    [(86_400 * 10**9, 3_000, 50, False), (10**9, 10**8, 50, False), (1, 1_300_000_000_000_000_000, 50, True)],
)
def test_event_index_positions(unit, span, n_cust, ranked):
    rng = np.random.default_rng(1)
    codes = rng.integers(0, n_cust, 3_000)
    ts = rng.integers(0, span, 3_000) * unit + 631_152_000 * 10**9  # from 1990
    ts[:50] = ts[50:100]  # ties
    idx = EventIndex(codes, ts)
    assert (idx.utimes is not None) == ranked
    assert ranked or idx.unit == unit
    order = np.lexsort((ts, codes))
    np.testing.assert_array_equal(idx.order, order)
    q_code = rng.integers(0, n_cust, 400)
    q_t = np.concatenate([ts[rng.integers(0, 3_000, 200)], rng.integers(ts.min() - 10**12, ts.max() + 10**12, 200)])
    start = np.searchsorted(codes[order], q_code, side="left")
    for inclusive in (True, False):
        got = idx.position(q_code, q_t, inclusive) - start
        op = np.less_equal if inclusive else np.less
        want = (op(ts[None, :], q_t[:, None]) & (codes[None, :] == q_code[:, None])).sum(1)
        np.testing.assert_array_equal(got, want)


def test_empty_history():
    tx = _tx([("a", "2024-05-01", 1.0, "x")])
    s = build_sequences(tx, AS_OF)
    assert len(s) == 0 and s.n_events == 0 and s.absent_ids.tolist() == ["a"]
    assert s.padded()["gap"].shape == (0, 1)


def test_categorical_ids_match_strings(tx):
    from offerlab.data.features import behaviour_features, behaviour_features_at

    cat = tx.assign(customer_id=pd.Categorical(tx.customer_id, categories=["zz", "c", "b", "a"]))
    s, t = build_sequences(tx, AS_OF), build_sequences(cat, AS_OF)
    assert t.customer_ids.tolist() == ["a", "b"] and t.absent_ids.tolist() == ["c"]  # unused "zz" is not absent
    np.testing.assert_array_equal(s.gap_days, t.gap_days)
    pd.testing.assert_frame_equal(behaviour_features(tx, AS_OF), behaviour_features(cat, AS_OF))
    anchors = pd.DataFrame({"customer_id": ["zz", "a", "b"], "as_of": [AS_OF] * 3})
    pd.testing.assert_frame_equal(behaviour_features_at(tx, anchors), behaviour_features_at(cat, anchors))
