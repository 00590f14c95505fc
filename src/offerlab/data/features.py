"""Tabular behaviour features of customers as of a date, point-in-time correct (no leakage).

Same cut as `offerlab.data.sequences`: an event counts for an as-of time ``a`` when ``timestamp <= a``
(``inclusive=True``, the default) or ``timestamp < a``. Windows are ``(a - w days, a]``.

Columns (one row per customer / anchor):

- ``has_history`` 1 when at least one event is visible, else 0.
- ``recency_days`` a - last event; ``tenure_days`` a - first event (days, fractional).
- ``frequency`` number of purchases (events); ``n_purchase_days`` distinct calendar days with a purchase.
- ``monetary_total``, ``monetary_mean``, ``amount_std`` (population, ddof=0), ``last_amount``.
- ``mean_gap_days``, ``std_gap_days`` (ddof=0), ``cv_gap`` = std/mean: over the whole-day gaps between
  consecutive *purchase days* (as BTYD counts them); NaN with fewer than two purchase days.
- ``count_{w}d``, ``spend_{w}d`` per window ``w``.
- ``trend`` = count in (a-90, a] minus count in (a-180, a-90]; ``trend_ratio`` = (last + 1) / (previous + 1).
- ``n_categories`` distinct known categories bought; ``cat_share_<name>`` share of purchases in each
  category of the vocabulary (unknown / missing categories count in ``frequency`` but in no share).

Amounts are optional. A date-only purchase log (a `transactions` table without an ``amount`` column)
gets no amount features (`is_amount_feature`: ``monetary_total``, ``monetary_mean``, ``amount_std``,
``last_amount``, ``spend_{w}d``): they are left out of the frame (not NaN, not 0, so a model fitted on
such a log never takes them for "no spend"), with one INFO log line per call; every other column is
the same as with amounts.

Fill values without history (``has_history`` = 0, only from `behaviour_features_at`): counts, sums,
shares, ``n_categories`` and ``trend`` are 0, ``trend_ratio`` is 1; recency, tenure, means, stds,
``last_amount`` and the gap statistics are NaN. The same NaNs appear where a statistic is undefined
with history (e.g. gap statistics of a one-day customer, ``cv_gap`` when the mean gap is 0).

Vocabulary: ``categories=None`` learns the sorted category names from visible events only (for
`behaviour_features_at`: events visible to at least one anchor row), so a category that first appears
later never adds a column. Pass ``categories`` for a fixed column set across dates.

Method (vectorised, scales to millions of anchors): one stable sort of the events by (customer,
time) with an exact monotone int64 key ``customer << bits | time`` (`EventIndex`); each anchor's
history end and window starts are exact `np.searchsorted` look-ups in that key; counts come from
positions, integer statistics from global integer cumulative sums (exact), and amount statistics from
per-customer cumulative sums (``groupby().cumsum()``), so values never depend on other customers' or
later events.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from offerlab.data.sequences import (
    DAY_NS,
    EventIndex,
    category_index,
    event_columns,
    factorize_ids,
    sorted_lut,
    timestamps_ns,
    to_ns,
)

log = logging.getLogger(__name__)
TREND_DAYS = 90
AMOUNT_FEATURES = ("monetary_total", "monetary_mean", "amount_std", "last_amount")  # plus spend_<w>d
NO_AMOUNTS = "transactions carry no amounts: monetary features left out"


def is_amount_feature(name: str) -> bool:
    """Whether a behaviour feature column needs amounts (absent for a log without an ``amount`` column)."""
    return name in AMOUNT_FEATURES or re.fullmatch(r"spend_[0-9.e+-]+d", name) is not None


def _cumsum0(x: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    out = np.zeros(len(x) + 1, dtype=dtype)
    np.cumsum(x, out=out[1:])
    return out


def segment_cumsum(x: np.ndarray, code_s: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Per-customer running sums of each column of `x` (events sorted by customer), restarting per customer.

    Float64 sums within each customer only, so a value never depends on other customers. Few customers
    (a serving batch): one `np.cumsum` over a (customers, longest history) grid; else pandas' grouped
    cumsum (compensated summation: the two agree to ~1e-14 relative, checked in tests/test_features.py).
    """
    n, n_cust = len(x), len(counts)
    width = int(counts.max()) if n_cust else 0
    if n_cust * width > 4 * n + 4096:
        loc = pd.DataFrame(x).groupby(code_s, sort=False).cumsum()
        return [loc[j].to_numpy() for j in range(x.shape[1])]
    col = np.arange(n, dtype=np.int64) - offsets[code_s]
    grid = np.zeros((n_cust, width, x.shape[1]))
    grid[code_s, col] = x
    np.cumsum(grid, axis=1, out=grid)
    out = grid[code_s, col]
    return [out[:, j] for j in range(x.shape[1])]


def _window_name(w: float) -> str:
    return f"{w:g}d"


def _features_core(
    codes: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray | None,
    cat: np.ndarray,
    vocab: list[str],
    n_cust: int,
    a_code: np.ndarray,
    a_ts: np.ndarray,
    windows: Sequence[float],
    inclusive: bool,
) -> dict[str, np.ndarray]:
    """Feature arrays for anchors (a_code, a_ts); a_code = -1 marks a customer without any events.

    ``amount=None`` (no amounts): the amount features are left out of the result.
    """
    index = EventIndex(codes, ts)
    order = index.order
    code_s, ts_s = codes[order], ts[order]
    amt_s = amount[order] if amount is not None else None
    cat_s = cat[order]
    del order
    n = len(ts_s)
    counts = np.bincount(code_s, minlength=n_cust)
    offsets = _cumsum0(counts)
    first = np.ones(n, dtype=bool)
    np.not_equal(code_s[1:], code_s[:-1], out=first[1:])

    # purchase days and whole-day gaps between them (integers → exact global cumsums)
    day_s = ts_s // DAY_NS
    newday = first.copy()
    newday[1:] |= day_s[1:] != day_s[:-1]
    dgap = np.zeros(n, dtype=np.int64)
    dgap[1:] = day_s[1:] - day_s[:-1]
    dgap[~newday | first] = 0
    cum_days = _cumsum0(newday)
    cum_dgap2 = _cumsum0(dgap * dgap)
    del dgap, newday

    # amounts: per-customer cumulative sums (shifted by the customer's first amount for the variance)
    if amt_s is not None:
        k0 = amt_s[offsets[:-1][counts > 0]] if n else np.zeros(0)
        k_cust = np.zeros(n_cust)
        k_cust[counts > 0] = k0
        shifted = amt_s - k_cust[code_s]
        cum_amt, cum_sq = segment_cumsum(np.stack([amt_s, shifted * shifted], 1), code_s, offsets, counts)
        del shifted

    # anchor look-ups, in (customer, time) order: sorted queries make np.searchsorted cache-friendly
    perm = None
    if len(a_code) > 1 and not (np.all(np.diff(a_code) >= 0) and np.all(np.diff(a_ts) >= 0)):
        perm = np.lexsort((a_ts, a_code))
        a_code, a_ts = a_code[perm], a_ts[perm]
    known = a_code >= 0
    c = np.where(known, a_code, 0)
    start = offsets[c] if n_cust else np.zeros(len(c), dtype=np.int64)

    def upto(t: np.ndarray, incl: bool) -> np.ndarray:
        """Flat position after the last event of customer c with time <= t (< t when not incl)."""
        return np.where(known, index.position(c, t, incl), start)

    end = upto(a_ts, inclusive)
    freq = end - start
    has = freq > 0
    last = np.where(has, end - 1, 0)
    first_i = np.where(has, start, 0)
    nan = np.float64("nan")

    def on_hist(values: np.ndarray, fill: float = nan) -> np.ndarray:
        return np.where(has, values, fill) if n else np.full(len(c), fill)

    def span_sum(cum: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Sum of per-customer cumulative `cum` over events lo..end-1 (0 when empty)."""
        if not n:
            return np.zeros(len(c))
        upper = cum[last]
        lower = np.where(lo > start, cum[np.maximum(lo - 1, 0)], 0.0)
        return np.where(end > lo, upper - lower, 0.0)

    out: dict[str, np.ndarray] = {"has_history": has.astype(np.int64)}
    safe_n = np.maximum(freq, 1)
    if n:
        out["recency_days"] = on_hist((a_ts - ts_s[last]) / DAY_NS)
        out["tenure_days"] = on_hist((a_ts - ts_s[first_i]) / DAY_NS)
    else:
        out["recency_days"] = out["tenure_days"] = np.full(len(c), nan)
    out["frequency"] = freq
    npd = cum_days[end] - cum_days[start]
    out["n_purchase_days"] = npd
    if amt_s is not None:
        total = span_sum(cum_amt, start)
        out["monetary_total"] = total
        mean = on_hist(total / safe_n)
        out["monetary_mean"] = mean
        if n:
            mean_shift = mean - k_cust[c]
            var = np.maximum(cum_sq[last] / safe_n - mean_shift * mean_shift, 0.0)
            out["amount_std"] = on_hist(np.sqrt(var))
            out["last_amount"] = on_hist(amt_s[last])
        else:
            out["amount_std"] = out["last_amount"] = np.full(len(c), nan)
    k = npd - 1
    two = k > 0
    safe_k = np.maximum(k, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        span_days = (day_s[last] - day_s[first_i]).astype(np.float64) if n else np.zeros(len(c))
        mean_gap = np.where(two, span_days / safe_k, nan)
        s2 = (cum_dgap2[end] - cum_dgap2[start]).astype(np.float64)
        std_gap = np.where(two, np.sqrt(np.maximum(s2 / safe_k - mean_gap * mean_gap, 0.0)), nan)
        out["mean_gap_days"] = mean_gap
        out["std_gap_days"] = std_gap
        out["cv_gap"] = np.where(two & (mean_gap > 0), std_gap / mean_gap, nan)

    lows: dict[float, np.ndarray] = {}

    def low(w: float) -> np.ndarray:
        if w not in lows:
            lows[w] = upto(a_ts - int(round(w * DAY_NS)), True)
        return lows[w]

    for w in windows:
        lo = low(w)
        out[f"count_{_window_name(w)}"] = np.maximum(end - lo, 0)
        if amt_s is not None:
            out[f"spend_{_window_name(w)}"] = span_sum(cum_amt, lo)
    recent = np.maximum(end - low(TREND_DAYS), 0)
    before = np.maximum(low(TREND_DAYS) - low(2 * TREND_DAYS), 0)
    out["trend"] = recent - before
    out["trend_ratio"] = (recent + 1.0) / (before + 1.0)

    n_cats = np.zeros(len(c), dtype=np.int64)
    shares = {}
    for j, name in enumerate(vocab, start=1):
        cj = _cumsum0(cat_s == j, np.int32 if n < 2**31 else np.int64)
        cnt = cj[end] - cj[start]
        n_cats += cnt > 0
        shares[f"cat_share_{name}"] = np.where(has, cnt / safe_n, 0.0)
    out["n_categories"] = n_cats
    out.update(shares)
    if perm is not None:
        inv = np.empty_like(perm)
        inv[perm] = np.arange(len(perm), dtype=perm.dtype)
        out = {k: v[inv] for k, v in out.items()}
    return out


def _check_windows(windows: Sequence[float]) -> tuple[float, ...]:
    windows = tuple(windows)
    if any(not (w > 0) for w in windows):
        raise ValueError(f"windows must be positive numbers of days, got {windows}")
    if len({_window_name(w) for w in windows}) != len(windows):
        raise ValueError(f"duplicate windows: {windows}")
    return windows


def behaviour_features(
    transactions: pd.DataFrame,
    as_of: object,
    *,
    windows: Sequence[float] = (30, 90, 365),
    categories: list[str] | None = None,
    inclusive: bool = True,
) -> pd.DataFrame:
    """Behaviour features as of ``as_of`` for every customer with at least one visible event.

    Returns a frame indexed by ``customer_id`` (sorted); see the module docstring for the columns.
    """
    windows = _check_windows(windows)
    cid, ts_all, amount_all, cat_all = event_columns(transactions)
    if amount_all is None:
        log.info(NO_AMOUNTS)
    as_of_ns = to_ns(as_of)
    rows = np.flatnonzero(ts_all <= as_of_ns if inclusive else ts_all < as_of_ns)
    codes_all, uniq = factorize_ids(cid)
    present = np.zeros(len(uniq), dtype=bool)
    present[codes_all[rows]] = True
    lut, ids = sorted_lut(uniq, present)
    codes = lut[codes_all[rows]]
    if cat_all is not None:
        cat, vocab = category_index(cat_all.iloc[rows], None, categories)
    else:
        cat, vocab = np.zeros(len(rows), dtype=np.int64), list(categories or [])
    n_cust = len(ids)
    feats = _features_core(
        codes,
        ts_all[rows],
        amount_all[rows] if amount_all is not None else None,
        cat,
        vocab,
        n_cust,
        np.arange(n_cust, dtype=np.int64),
        np.full(n_cust, as_of_ns, dtype=np.int64),
        windows,
        inclusive,
    )
    return pd.DataFrame(feats, index=pd.Index(ids, name="customer_id"))


def behaviour_features_at(
    transactions: pd.DataFrame,
    anchors: pd.DataFrame,
    *,
    time_col: str = "as_of",
    windows: Sequence[float] = (30, 90, 365),
    categories: list[str] | None = None,
    inclusive: bool = True,
) -> pd.DataFrame:
    """Point-in-time behaviour features for each anchor row (``customer_id`` and its own as-of ``time_col``).

    Returns one row per anchor row with the anchors' index, in the same order. Anchors whose customer
    has no visible events (or does not appear at all) get ``has_history`` = 0 and the documented fills.
    """
    windows = _check_windows(windows)
    for col in ("customer_id", time_col):
        if col not in anchors.columns:
            raise ValueError(f"anchors lack column {col!r}; present: {list(anchors.columns)}")
    cid, ts, amount, cat_all = event_columns(transactions)
    if amount is None:
        log.info(NO_AMOUNTS)
    a_ts = timestamps_ns(anchors[time_col], "anchors", time_col)
    codes, uniq = factorize_ids(cid)
    lut, ids = sorted_lut(uniq)
    codes = lut[codes]
    n_cust = len(ids)
    a_code = pd.Index(ids).get_indexer(pd.Index(anchors["customer_id"].astype(str)).astype(object))
    a_code = np.asarray(a_code, dtype=np.int64)

    if cat_all is not None:
        # vocabulary from events visible to at least one anchor of their customer
        latest = np.full(n_cust, np.iinfo(np.int64).min, dtype=np.int64)
        k = a_code >= 0
        np.maximum.at(latest, a_code[k], a_ts[k])
        seen = ts <= latest[codes] if inclusive else ts < latest[codes]
        cat, vocab = category_index(cat_all, seen, categories)
    else:
        cat, vocab = np.zeros(len(ts), dtype=np.int64), list(categories or [])
    feats = _features_core(codes, ts, amount, cat, vocab, n_cust, a_code, a_ts, windows, inclusive)
    return pd.DataFrame(feats, index=anchors.index)
