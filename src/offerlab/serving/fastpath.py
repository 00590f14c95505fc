"""Per-request fast paths: the serving batch as flat numpy arrays, no pandas round trips.

Why: for one or a few customers the library feature code (`offerlab.data.features.behaviour_features_at`)
spends nearly all its time on DataFrame plumbing (id factorizing, sorting, datetime parsing, index
look-ups), not on arithmetic. A serving batch is already in the shape that plumbing produces: customers
are batch positions (0..n-1, i.e. sorted ids), each history is oldest first (the contract refuses
anything else), so the events are already sorted by (customer, time). `HistoryArrays` builds those arrays
straight from the requests, and `behaviour_features_fast` hands them to the library's own numpy core
(`_features_core`), so the numbers are the library's, bit for bit (tests/test_serving_fastpath.py checks
them against the library path on random histories).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlab.data.features import _check_windows, _features_core
from offerlab.serving.contracts import CustomerHistory

EPOCH = dt.datetime(1970, 1, 1)
US = dt.timedelta(microseconds=1)


def datetime_ns(when: dt.datetime) -> int:
    """A naive-UTC datetime as exact int64 nanoseconds since the epoch (what pandas' `.value` gives)."""
    return ((when - EPOCH) // US) * 1000


@dataclass
class HistoryArrays:
    """A batch of histories as flat arrays, sorted by (batch position, time)."""

    codes: np.ndarray  # int64 batch position of each event
    ts: np.ndarray  # int64 ns
    amount: np.ndarray | None  # float64; None for histories without amounts (the library's date-only logs)
    category: np.ndarray  # object: str or None
    as_of: np.ndarray  # int64 ns, one per request
    ids: list[str]  # r000000, r000001, ...: sorted, so batch positions are the library's dense customer codes

    @classmethod
    def of(cls, reqs: Sequence[CustomerHistory]) -> HistoryArrays:
        n = np.fromiter((len(r.history) for r in reqs), dtype=np.int64, count=len(reqs))
        rows = [p for r in reqs for p in r.history]
        return cls(
            codes=np.repeat(np.arange(len(reqs), dtype=np.int64), n),
            ts=np.fromiter((datetime_ns(p.timestamp) for p in rows), dtype=np.int64, count=len(rows)),
            amount=np.fromiter((p.amount for p in rows), dtype=np.float64, count=len(rows)),
            category=np.array([p.category for p in rows], dtype=object),
            as_of=np.array([datetime_ns(r.answer_time()) for r in reqs], dtype=np.int64),
            ids=[f"r{i:06d}" for i in range(len(reqs))],
        )

    def frame(self) -> pd.DataFrame:
        """The library's `transactions` table of this batch (customer_id, timestamp, amount, category).

        Ids are categorical: the library then takes their codes as they are (no hashing pass over the rows).
        Without amounts the table has no `amount` column.
        """
        cols = {
            "customer_id": pd.Categorical.from_codes(self.codes, categories=self.ids),
            "timestamp": self.ts.view("datetime64[ns]"),
            "amount": self.amount,
            "category": pd.Series(self.category, dtype=object),
        }
        if self.amount is None:
            del cols["amount"]
        return pd.DataFrame(cols)


_RECENT = threading.local()  # per thread: the last batch's arrays and features, for the next family's call


def histories(reqs: Sequence[CustomerHistory]) -> HistoryArrays:
    """`HistoryArrays.of(reqs)`, built once for the three families of one offers batch.

    The parts of an offers request share its history list, so a batch whose histories (same list objects,
    held here so their ids stay theirs) and `as_of` values are the last one's in this thread reuses its
    arrays (and one "now" for requests without `as_of`).
    """
    key = tuple((id(r.history), r.as_of) for r in reqs)
    last = getattr(_RECENT, "histories", None)
    if last is not None and last[0] == key:
        return last[2]
    h = HistoryArrays.of(reqs)
    _RECENT.histories = (key, [r.history for r in reqs], h)
    _RECENT.features = {}
    return h


def behaviour_cached(h: HistoryArrays, windows: Sequence[float], categories: list[str] | None) -> dict[str, np.ndarray]:
    """`behaviour_features_fast` (inclusive), computed once per batch and feature set (uplift and credit
    often ask for the same). Callers get a fresh dict of the shared, read-only arrays."""
    cache = getattr(_RECENT, "features", None)
    last = getattr(_RECENT, "histories", None)
    key = (tuple(windows), tuple(categories) if categories is not None else None)
    if cache is None or last is None or last[2] is not h:
        return behaviour_features_fast(h, windows, categories)
    if key not in cache:
        cache[key] = behaviour_features_fast(h, windows, categories)
    return dict(cache[key])


def category_codes(category: np.ndarray, visible: np.ndarray, categories: list[str] | None) -> tuple[np.ndarray, list]:
    """(0 = unknown/missing, 1..C) per event and the vocabulary, as `offerlab.data.sequences.category_index`."""
    if categories is None:
        categories = sorted({c for c in category[visible] if c is not None})
    lut = {name: j for j, name in enumerate(categories, start=1)}
    return np.fromiter((lut.get(c, 0) for c in category), dtype=np.int64, count=len(category)), list(categories)


def behaviour_features_fast(h: HistoryArrays, windows: Sequence[float] = (30, 90, 365),
                            categories: list[str] | None = None, inclusive: bool = True) -> dict[str, np.ndarray]:
    """`behaviour_features_at(h.frame(), anchors=(ids, h.as_of))` as a dict of columns, one row per request."""
    windows = _check_windows(windows)
    n_req = len(h.as_of)
    has_events = np.bincount(h.codes, minlength=n_req) > 0
    dense = np.cumsum(has_events) - 1  # customers without events are absent from the library's id list
    codes = dense[h.codes]
    a_code = np.where(has_events, dense, -1)
    cut = h.as_of[h.codes]
    visible = h.ts <= cut if inclusive else h.ts < cut
    cat, vocab = category_codes(h.category, visible, categories)
    return _features_core(codes, h.ts, h.amount, cat, vocab, int(has_events.sum()), a_code, h.as_of,
                          windows, inclusive)


# ------------------------------------------------------------------------------ encoders on numpy columns
SMALL_BATCH = 256  # below this many values a dict look-up beats building a pandas index


def _level_index(values: np.ndarray, levels: list[str] | pd.Index, missing: str | None) -> np.ndarray:
    """Position of each value's string in `levels` (-1 unseen); None/NaN -> `missing` (or unseen)."""
    values = np.asarray(values, dtype=object)
    if len(values) <= SMALL_BATCH:
        pos = {name: j for j, name in enumerate(levels)}
        return np.fromiter((pos.get(missing if pd.isna(v) else str(v), -1) for v in values), dtype=np.int64,
                           count=len(values))
    absent = pd.isna(values)
    names = values.astype(str).astype(object)
    names[absent] = missing
    index = levels if isinstance(levels, pd.Index) else pd.Index(levels, dtype=object)
    return index.get_indexer(names)


def _onehot(idx: np.ndarray, width: int, dtype: type = np.float32) -> np.ndarray:
    out = np.zeros((len(idx), width), dtype=dtype)
    seen = idx >= 0
    out[np.flatnonzero(seen), idx[seen]] = 1.0
    return out


def _floats(x: np.ndarray) -> np.ndarray:
    """A column as float64; anything that is not a number becomes NaN (as `pd.to_numeric(errors='coerce')`)."""
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(x), errors="coerce").to_numpy(dtype=np.float64)


def uplift_matrix(encoder, columns: dict[str, np.ndarray]) -> np.ndarray:
    """`offerlab.uplift.data.FeatureEncoder.transform` of a frame with these columns, without the frame."""
    n = len(next(iter(columns.values()))) if columns else 0
    parts = []
    if encoder.numeric:
        cols = []
        for c in encoder.numeric:
            v = _floats(columns[c])
            cols.append(np.log1p(np.clip(v, 0, None)) if c in encoder.log_columns else v)
        x = (np.stack(cols, axis=1) - np.asarray(encoder.mean)) / np.asarray(encoder.std)
        parts.append(np.nan_to_num(x, nan=0.0))
    else:
        parts.append(np.zeros((n, 0)))
    for c, levels in encoder.categorical.items():
        parts.append(_onehot(_level_index(columns[c], list(levels), None), len(levels), np.float64))
    return np.concatenate(parts, axis=1).astype(np.float32)


@dataclass
class _CreditPlan:
    """An encoder's per-column constants as arrays, so the numerics encode as whole matrices."""

    vocab: list[pd.Index]
    log: np.ndarray  # (k,) bool
    fill: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    ple_col: np.ndarray  # (p,) numeric column of each PLE component
    ple_lo: np.ndarray
    ple_width: np.ndarray

    @classmethod
    def of(cls, enc) -> _CreditPlan:
        nums = enc.numeric
        ple = [(j, enc.ple_edges[c]) for j, c in enumerate(nums) if enc.ple and len(enc.ple_edges[c]) > 1]
        return cls(vocab=[pd.Index(enc.vocab[c], dtype=object) for c in enc.categorical],
                   log=np.array([c in enc.log_cols for c in nums], dtype=bool),
                   fill=np.array([enc.fill[c] for c in nums]), center=np.array([enc.center[c] for c in nums]),
                   scale=np.array([enc.scale[c] for c in nums]),
                   ple_col=np.concatenate([np.full(len(q) - 1, j) for j, q in ple] or [np.zeros(0)]).astype(np.int64),
                   ple_lo=np.concatenate([q[:-1] for _, q in ple] or [np.zeros(0)]),
                   ple_width=np.concatenate([np.diff(q) for _, q in ple] or [np.zeros(0)]))


_PLANS: dict[int, tuple[object, _CreditPlan]] = {}


def _plan(enc) -> _CreditPlan:
    hit = _PLANS.get(id(enc))
    if hit is None or hit[0] is not enc:
        hit = _PLANS[id(enc)] = (enc, _CreditPlan.of(enc))
    return hit[1]


def credit_encoded(encoder, columns: dict[str, np.ndarray]):
    """`offerlab.credit.data.FeatureEncoder.transform` of a frame with these columns, without the frame.

    Same arithmetic element by element, done on whole (rows, features) matrices instead of column by column.
    """
    from offerlab.credit.data import Encoded

    missing = [c for c in encoder.categorical + encoder.numeric if c not in columns]
    if missing:
        raise ValueError(f"application features are missing column(s) the model was trained on: {missing[:10]}")
    plan = _plan(encoder)
    n = len(next(iter(columns.values()))) if columns else 0
    cat = np.zeros((n, len(encoder.categorical)), dtype=np.int64)
    for j, c in enumerate(encoder.categorical):
        cat[:, j] = _level_index(columns[c], plan.vocab[j], "<missing>") + 1
    k = len(encoder.numeric)
    t = np.stack([_floats(columns[c]) for c in encoder.numeric], axis=1) if k else np.zeros((n, 0))
    t[:, plan.log] = np.log1p(np.maximum(t[:, plan.log], 0.0))
    t = np.where(np.isfinite(t), t, plan.fill)
    num = np.clip((t - plan.center) / plan.scale, -encoder.clip, encoder.clip).astype(np.float32)
    bins = np.zeros((n, k), dtype=np.int64)
    for j, c in enumerate(encoder.numeric):  # per column only the bin look-up (edges differ in length)
        bins[:, j] = np.searchsorted(encoder.edges[c], t[:, j], side="right")
    ple = np.clip((t[:, plan.ple_col] - plan.ple_lo) / plan.ple_width, 0.0, 1.0).astype(np.float32)
    return Encoded(cat, num, bins, ple, encoder.cat_sizes, encoder.bin_sizes)


def credit_logit(model, columns: dict[str, np.ndarray]) -> np.ndarray:
    """`CreditModel.predict_logit` (all members' mean logit in one stacked pass, calibrated) on numpy columns."""
    return model.encoded_logit(credit_encoded(model.encoder, columns))
