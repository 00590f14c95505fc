"""Per-customer event sequences built from `transactions` up to an as-of date (no leakage).

Conventions (shared with `offerlab.data.features`):

- **As-of cut.** An event belongs to the history when ``timestamp <= as_of`` (``inclusive=True``, the
  default) or ``timestamp < as_of`` (``inclusive=False``). Nothing after ``as_of`` is read: the
  vocabulary, the customer list, the origin and every array are computed from the visible events only.
- **Customers.** Only customers with at least one visible event get a sequence; they are ordered by
  customer id (sorted as strings, by code point). Customers that appear in ``transactions`` with events only after
  ``as_of`` are listed in ``EventSequences.absent_ids``.
- **Order.** Events are stably sorted by (customer_id, timestamp): ties keep the input row order.
- **Categories.** Index 0 is reserved for padding / unknown / missing; real categories are 1..C with
  ``categories[i-1]`` the name of index ``i``. ``categories=None`` learns the sorted vocabulary from the
  visible events; a given vocabulary maps unseen categories to 0.
- **Amounts.** Optional: a date-only purchase log (no ``amount`` column) gives ``log_amount`` all 0 and
  ``EventSequences.has_amount`` False, so a model reading it can tell "no amounts" from "zero spend".
- **Days.** Times are measured in days (86,400 s) on naive timestamps (tz-aware input is converted to
  UTC and made naive, as `validate_table` does); a "calendar day" is the date of that timestamp.

Everything is vectorised over the flat (CSR) event arrays: one factorize of the ids, one stable sort
on an exact int64 (customer, time) key (`EventIndex`), `np.diff`, `np.repeat` / `np.cumsum` gathers.
No Python loop over customers or events. Hashing the string ids is the largest single cost; a
``customer_id`` column of pandas ``category`` dtype skips it (its codes are used as they are).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from offerlab.data.schema import DataValidationError

DAY_NS = 86_400 * 10**9
CALENDAR_FEATURES: tuple[str, ...] = (
    "dow_sin",  # day of week (Monday = 0), angle 2*pi*dow/7
    "dow_cos",
    "month_sin",  # month of year (January = 0), angle 2*pi*month/12
    "month_cos",
    "day_of_month",  # day of month / 31, in (0, 1]
    "tod_sin",  # time of day, angle 2*pi*(seconds since midnight)/86400 (constant for date-only data)
    "tod_cos",
)
PADDED_KEYS: tuple[str, ...] = (
    "gap",
    "log_amount",
    "category",
    "calendar",
    "event_time",
    "mask",
    "lengths",
    "censored_gap",
    "index",
)


# --------------------------------------------------------------------------------------------- helpers
def to_ns(when: object) -> int:
    """A timestamp-like value as int64 nanoseconds since the epoch (tz-aware → UTC, made naive)."""
    ts = pd.Timestamp(when)
    if ts is pd.NaT:
        raise ValueError("as-of date is missing (NaT)")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.as_unit("ns").value)


def timestamps_ns(values: pd.Series | np.ndarray, table: str = "transactions", column: str = "timestamp") -> np.ndarray:
    """A timestamp column as int64 nanoseconds (naive UTC); refuses missing values."""
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_any_dtype(s):
        s = pd.to_datetime(s, format="mixed")
    if s.isna().any():
        raise DataValidationError(table, column, "missing timestamp", f"row {s.index[s.isna().to_numpy()][0]!r}")
    return s.to_numpy(dtype="datetime64[ns]").view(np.int64)


def event_columns(
    transactions: pd.DataFrame,
) -> tuple[pd.Series, np.ndarray, np.ndarray | None, pd.Series | None]:
    """(customer_id, timestamp ns, amount float64 or None, category or None) of a `transactions` table.

    ``amount`` is None when the table has no ``amount`` column (a date-only purchase log); when the
    column is there, a negative or missing amount is refused.
    """
    for col in ("customer_id", "timestamp"):
        if col not in transactions.columns:
            raise DataValidationError(
                "transactions", col, f"missing required column; present: {list(transactions.columns)}"
            )
    ts = timestamps_ns(transactions["timestamp"])
    amount = None
    if "amount" in transactions.columns:
        amount = transactions["amount"].to_numpy(dtype=np.float64)
        bad = ~(amount >= 0)
        if bad.any():
            raise DataValidationError(
                "transactions", "amount", "negative or missing amount", f"row {transactions.index[bad][0]!r}"
            )
    cat = transactions["category"] if "category" in transactions.columns else None
    return transactions["customer_id"], ts, amount, cat


def factorize_ids(ids: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pd.factorize` of customer ids: (codes int64, uniques as an object array of str).

    A categorical (or arrow dictionary) column is used as is, skipping the hash pass over the rows.
    """
    dtype = getattr(ids, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype):
        codes, uniques = np.asarray(ids.cat.codes), ids.cat.categories
    else:
        codes, uniques = pd.factorize(ids)
    if len(codes) and codes.min() < 0:
        raise DataValidationError("transactions", "customer_id", "missing value", f"row {int(np.argmin(codes))}")
    return codes.astype(np.int64, copy=False), np.asarray(pd.Index(uniques).astype(str), dtype=object)


def sorted_lut(uniques: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map factorize codes to dense codes in sorted-id order, over the uniques where ``keep`` (all if None).

    Returns (lut, ids): ``lut[code]`` is the new dense code (-1 for dropped uniques), ``ids`` the sorted ids.
    """
    pos = np.arange(len(uniques), dtype=np.int64) if keep is None else np.flatnonzero(keep)
    order = pos[pc.sort_indices(pa.array(uniques[pos], type=pa.string())).to_numpy()]  # stable, code-point order
    lut = np.full(len(uniques), -1, dtype=np.int64)
    lut[order] = np.arange(len(order), dtype=np.int64)
    return lut, uniques[order]


def category_index(
    cat: pd.Series | None, visible: np.ndarray | None, categories: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Category indices (0 = unknown/missing, 1..C) for every row, and the vocabulary.

    With ``categories=None`` the vocabulary is the sorted set of categories among rows where
    ``visible`` is true (all rows when ``visible`` is None), so events that are not visible never add a name.
    """
    if cat is None:
        return np.zeros(0, dtype=np.int64), list(categories or [])
    codes, uniques = pd.factorize(cat)
    names = np.asarray(pd.Index(uniques).astype(str), dtype=object)
    if categories is None:
        used = codes[visible] if visible is not None else codes
        present = np.zeros(len(names), dtype=bool)
        present[used[used >= 0]] = True
        categories = sorted(names[present].tolist())
    lut = pd.Index(list(categories), dtype=object).get_indexer(names) + 1  # unseen → -1 + 1 = 0
    lut = np.append(lut, 0).astype(np.int64)  # code -1 (missing) → lut[-1] = 0
    return lut[codes], list(categories)


def segment_gather(
    offsets: np.ndarray, idx: np.ndarray, take: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Flat event indices of customers ``idx`` (the last ``take[i]`` events of each) and the new offsets."""
    lengths = offsets[idx + 1] - offsets[idx]
    take = lengths if take is None else np.minimum(lengths, take)
    new_off = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(take, out=new_off[1:])
    within = np.arange(new_off[-1], dtype=np.int64) - np.repeat(new_off[:-1], take)
    ev = np.repeat(offsets[idx + 1] - take, take) + within
    return ev, new_off


def _civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(month 1..12, day of month 1..31) of int64 days since 1970-01-01 (H. Hinnant's civil_from_days)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    dom = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return month, dom


_DOW_ANGLE = 2 * np.pi * np.arange(7) / 7
_MONTH_ANGLE = 2 * np.pi * np.arange(12) / 12


def calendar_features(ts_ns: np.ndarray) -> np.ndarray:
    """(n, 7) float32 calendar encoding of int64-ns timestamps; columns are `CALENDAR_FEATURES`."""
    days = ts_ns // DAY_NS
    out = np.empty((len(ts_ns), len(CALENDAR_FEATURES)), dtype=np.float32)
    if not len(days):
        return out
    # the date part through a per-day look-up table over the (short) span of days
    d0 = int(days.min())
    span = int(days.max()) - d0 + 1
    grid = np.arange(d0, d0 + span, dtype=np.int64) if span <= max(len(days), 1 << 16) else days
    dow = (grid + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    month, dom = _civil_from_days(grid)
    table = np.zeros((len(grid), len(CALENDAR_FEATURES)), dtype=np.float32)
    table[:, 0], table[:, 1] = np.sin(_DOW_ANGLE)[dow], np.cos(_DOW_ANGLE)[dow]
    table[:, 2], table[:, 3] = np.sin(_MONTH_ANGLE)[month - 1], np.cos(_MONTH_ANGLE)[month - 1]
    table[:, 4] = dom / 31.0
    if grid is days:
        out[:] = table
    else:
        np.take(table, days - d0, axis=0, out=out)
    tod = ((ts_ns - days * DAY_NS) * (2 * np.pi / DAY_NS)).astype(np.float32)
    out[:, 5] = np.sin(tod)
    out[:, 6] = np.cos(tod)
    return out


class EventIndex:
    """Events stably sorted by (customer code, timestamp) with an exact int64 search key.

    ``key[i] = code << bits | v`` is non-decreasing, where ``v >= 1`` orders the timestamps exactly:
    the timestamp itself in its coarsest exact unit (day, s, ms, us or ns) when code and time fit in
    62 bits (one sort), else the dense rank of the timestamp (two sorts). `position` answers "how many
    events precede the first event of customer c after time t" as a flat index, by `np.searchsorted`.
    """

    def __init__(self, codes: np.ndarray, ts: np.ndarray):
        n = len(ts)
        code_bits = int(codes.max()).bit_length() if n else 0
        self.unit, self.tmin, self.utimes = 1, 0, None
        if n:
            self.tmin = int(ts.min())
            for u in (DAY_NS, 10**9, 10**6, 10**3):
                if not (ts % u).any():
                    self.unit = u
                    break
        self.vmax = ((int(ts.max()) - self.tmin) // self.unit if n else 0) + 1
        self.bits = (self.vmax + 1).bit_length()
        if code_bits + self.bits <= 62:
            key = (codes.astype(np.int64) << self.bits) | ((ts - self.tmin) // self.unit + 1)
            self.order = np.argsort(key, kind="stable")
            self.key = key[self.order]
        else:  # dense time ranks
            o1 = np.argsort(ts, kind="stable")
            t1 = ts[o1]
            new = np.ones(n, dtype=bool)
            np.not_equal(t1[1:], t1[:-1], out=new[1:])
            rank1 = np.cumsum(new, dtype=np.int64)
            self.utimes = t1[new]
            self.vmax = len(self.utimes)
            self.bits = (self.vmax + 1).bit_length()
            o2 = np.argsort(codes[o1], kind="stable")
            self.order = o1[o2]
            self.key = (codes[self.order].astype(np.int64) << self.bits) | rank1[o2]

    def _value(self, t: np.ndarray, inclusive: bool) -> np.ndarray:
        """Largest key value q such that events with value <= q are exactly those with time <= t (< t)."""
        if self.utimes is not None:
            return np.searchsorted(self.utimes, t, side="right" if inclusive else "left")
        u = self.unit
        x = np.clip(t, self.tmin - u, self.tmin + self.vmax * u) - self.tmin
        q = x // u + 1 if inclusive else -(-x // u)
        return np.clip(q, 0, self.vmax)

    def position(self, code: np.ndarray, t: np.ndarray, inclusive: bool = True) -> np.ndarray:
        """Flat index just past the last event of customer ``code`` with time <= t (< t if not inclusive)."""
        q = (np.asarray(code, dtype=np.int64) << self.bits) | self._value(np.asarray(t, dtype=np.int64), inclusive)
        return np.searchsorted(self.key, q, side="right")


# ------------------------------------------------------------------------------------------ the object
@dataclass(eq=False)
class EventSequences:
    """Per-customer event sequences in CSR layout: customer ``i`` owns events ``offsets[i]:offsets[i+1]``.

    Events are in time order within a customer. When built with ``max_len``, ``gap_days`` of the first
    kept event is still the true gap to the (dropped) previous event; it is 0 only for a customer's
    very first purchase.
    """

    customer_ids: np.ndarray  # (n_customers,) str (object), sorted
    offsets: np.ndarray  # (n_customers+1,) int64
    gap_days: np.ndarray  # (n_events,) float32
    log_amount: np.ndarray  # (n_events,) float32, log1p(amount); 0 without amounts (see `has_amount`)
    category: np.ndarray  # (n_events,) int64, 0 = unknown/padding, 1..C
    calendar: np.ndarray  # (n_events, len(CALENDAR_FEATURES)) float32
    event_time_days: np.ndarray  # (n_events,) float64, days since `origin`
    censored_gap_days: np.ndarray  # (n_customers,) float32, as_of - last event
    as_of: pd.Timestamp
    origin: pd.Timestamp
    categories: list[str]
    absent_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    calendar_names: tuple[str, ...] = CALENDAR_FEATURES
    has_amount: bool = True  # False: built from a log without amounts, `log_amount` is all 0

    @property
    def lengths(self) -> np.ndarray:
        """(n_customers,) int64 number of events per customer."""
        return np.diff(self.offsets)

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.n_customers

    def index_of(self, ids: object) -> np.ndarray:
        """Positions of customer ids in this object (-1 where a customer has no sequence)."""
        return pd.Index(self.customer_ids).get_indexer(
            pd.Index(np.atleast_1d(np.asarray(ids, dtype=object)).astype(str))
        )

    def _positions(self, idx: np.ndarray | None) -> np.ndarray:
        if idx is None:
            return np.arange(self.n_customers, dtype=np.int64)
        idx = np.asarray(idx)
        if idx.dtype == bool:
            return np.flatnonzero(idx).astype(np.int64)
        idx = idx.astype(np.int64).reshape(-1)
        return np.where(idx < 0, idx + self.n_customers, idx)

    def subset(self, idx: np.ndarray | list[int]) -> EventSequences:
        """The customers at positions ``idx`` (ints, in the given order, or a boolean mask)."""
        pos = self._positions(idx)
        ev, off = segment_gather(self.offsets, pos)
        return EventSequences(
            customer_ids=self.customer_ids[pos],
            offsets=off,
            gap_days=self.gap_days[ev],
            log_amount=self.log_amount[ev],
            category=self.category[ev],
            calendar=self.calendar[ev],
            event_time_days=self.event_time_days[ev],
            censored_gap_days=self.censored_gap_days[pos],
            as_of=self.as_of,
            origin=self.origin,
            categories=list(self.categories),
            absent_ids=self.absent_ids,
            calendar_names=self.calendar_names,
            has_amount=self.has_amount,
        )

    def padded(
        self, idx: np.ndarray | None = None, max_len: int | None = None, align: str = "left"
    ) -> dict[str, torch.Tensor]:
        """Padded batch tensors for the customers ``idx`` (all when None).

        ``align="left"`` (default): events sit at positions ``0..len-1`` and padding follows, so the
        latest event is at ``lengths - 1``. ``align="right"``: padding comes first and the latest event
        is always at position ``-1``. With ``max_len`` only the most recent ``max_len`` events are kept.
        The width T is the longest (truncated) sequence in the batch (at least 1).

        Keys: ``gap`` (B,T) f32, ``log_amount`` (B,T) f32, ``category`` (B,T) i64 (0 = padding),
        ``calendar`` (B,T,F) f32, ``event_time`` (B,T) f64 days since origin, ``mask`` (B,T) bool,
        ``lengths`` (B,) i64, ``censored_gap`` (B,) f32, ``index`` (B,) i64 positions in this object.
        Padded cells are 0.
        """
        if align not in ("left", "right"):
            raise ValueError(f"align must be 'left' or 'right', got {align!r}")
        pos = self._positions(idx)
        ev, off = segment_gather(self.offsets, pos, None if max_len is None else np.int64(max_len))
        lens = np.diff(off)
        b = len(pos)
        t = max(int(lens.max()) if b else 0, 1)
        rows = np.repeat(np.arange(b, dtype=np.int64), lens)
        cols = np.arange(len(ev), dtype=np.int64) - np.repeat(off[:-1], lens)
        if align == "right":
            cols += np.repeat(t - lens, lens)

        def grid(values: np.ndarray, dtype: np.dtype) -> torch.Tensor:
            out = np.zeros((b, t) + values.shape[1:], dtype=dtype)
            out[rows, cols] = values[ev]
            return torch.from_numpy(out)

        mask = np.zeros((b, t), dtype=bool)
        mask[rows, cols] = True
        return {
            "gap": grid(self.gap_days, np.float32),
            "log_amount": grid(self.log_amount, np.float32),
            "category": grid(self.category, np.int64),
            "calendar": grid(self.calendar, np.float32),
            "event_time": grid(self.event_time_days, np.float64),
            "mask": torch.from_numpy(mask),
            "lengths": torch.from_numpy(lens.astype(np.int64)),
            "censored_gap": torch.from_numpy(self.censored_gap_days[pos].astype(np.float32)),
            "index": torch.from_numpy(pos),
        }


# ------------------------------------------------------------------------------------------ the builder
def build_sequences(
    transactions: pd.DataFrame,
    as_of: object,
    *,
    categories: list[str] | None = None,
    max_len: int | None = None,
    same_day: str = "keep",
    inclusive: bool = True,
    origin: object | None = None,
) -> EventSequences:
    """Per-customer event sequences from `transactions` with ``timestamp <= as_of`` (``< as_of`` if not inclusive).

    ``same_day="merge"`` turns all purchases of one customer on one calendar day into one event: amount
    summed, category of the largest purchase (first one on ties; without amounts the first purchase's),
    timestamp of the first purchase that day (BTYD counts purchase days). A table without an ``amount``
    column (a date-only purchase log) gives ``log_amount`` all 0 and ``has_amount=False``.
    ``max_len`` keeps each customer's most recent ``max_len`` events.
    ``origin`` (default: midnight of the earliest visible event) anchors ``event_time_days``.
    Customers without visible events get no sequence; their ids are in ``absent_ids``.
    """
    if same_day not in ("keep", "merge"):
        raise ValueError(f"same_day must be 'keep' or 'merge', got {same_day!r}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    cid, ts_all, amount_all, cat_all = event_columns(transactions)
    as_of_ns = to_ns(as_of)
    visible = ts_all <= as_of_ns if inclusive else ts_all < as_of_ns

    codes_all, uniq_all = factorize_ids(cid)
    rows = np.flatnonzero(visible)
    present = np.zeros(len(uniq_all), dtype=bool)
    present[codes_all[rows]] = True
    appears = np.bincount(codes_all, minlength=len(uniq_all)) > 0
    absent_ids = np.sort(uniq_all[appears & ~present])
    lut, customer_ids = sorted_lut(uniq_all, present)
    codes, ts = lut[codes_all[rows]], ts_all[rows]
    amount = amount_all[rows] if amount_all is not None else None
    if cat_all is not None:
        cat, vocab = category_index(cat_all.iloc[rows], None, categories)
    else:
        cat, vocab = np.zeros(len(rows), dtype=np.int64), list(categories or [])
    return sequences_from_arrays(codes, customer_ids, ts, amount, cat, vocab, as_of_ns, max_len=max_len,
                                 same_day=same_day, origin=origin, absent_ids=absent_ids)


def sequences_from_arrays(
    codes: np.ndarray,
    customer_ids: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray | None,
    cat: np.ndarray,
    vocab: list[str],
    as_of_ns: int,
    *,
    max_len: int | None = None,
    same_day: str = "keep",
    origin: object | None = None,
    absent_ids: np.ndarray | None = None,
) -> EventSequences:
    """The numpy core of `build_sequences`, for events that are already visible and validated.

    ``codes`` are dense customer codes into the sorted ``customer_ids`` (every customer has an event),
    ``ts`` int64 ns, ``amount`` float64 or None (no amounts: ``log_amount`` all 0, ``has_amount=False``),
    ``cat`` category indices (0 = unknown) into ``vocab``. The serving fast path
    (`offerlab.serving.fastpath`) calls it straight from request arrays, skipping the frame plumbing.
    """
    has_amount = amount is not None
    order = EventIndex(codes, ts).order
    codes, ts, cat = codes[order], ts[order], cat[order]
    amount = amount[order] if has_amount else np.zeros(len(ts))
    n = len(ts)
    first = np.ones(n, dtype=bool)
    np.not_equal(codes[1:], codes[:-1], out=first[1:])

    if same_day == "merge" and n:
        day = ts // DAY_NS
        new = first.copy()
        new[1:] |= day[1:] != day[:-1]
        starts = np.flatnonzero(new)
        if has_amount:  # the category of the day's largest purchase, the first one on ties
            gid = np.cumsum(new) - 1
            gmax = np.maximum.reduceat(amount, starts)
            cand = np.flatnonzero(amount == gmax[gid])
            keep = np.ones(len(cand), dtype=bool)
            keep[1:] = gid[cand[1:]] != gid[cand[:-1]]
            cat = cat[cand[keep]]
            amount = np.add.reduceat(amount, starts)
        else:  # no amounts to rank by: the day's first purchase
            cat, amount = cat[starts], amount[starts]
        codes, ts, first = codes[starts], ts[starts], first[starts]
        n = len(ts)

    gap_ns = np.zeros(n, dtype=np.int64)
    if n:
        gap_ns[1:] = np.diff(ts)
    gap_ns[first] = 0
    n_cust = len(customer_ids)
    counts = np.bincount(codes, minlength=n_cust)
    offsets = np.zeros(n_cust + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    if max_len is not None and n:
        pos_from_end = np.repeat(offsets[1:], counts) - 1 - np.arange(n, dtype=np.int64)
        keep = pos_from_end < max_len
        ts, amount, cat, gap_ns = ts[keep], amount[keep], cat[keep], gap_ns[keep]
        counts = np.minimum(counts, max_len)
        np.cumsum(counts, out=offsets[1:])

    origin_ns = to_ns(origin) if origin is not None else (int(ts.min()) // DAY_NS * DAY_NS if len(ts) else as_of_ns)
    last = ts[offsets[1:] - 1] if n_cust else np.zeros(0, dtype=np.int64)
    return EventSequences(
        customer_ids=customer_ids,
        offsets=offsets,
        gap_days=(gap_ns / DAY_NS).astype(np.float32),
        log_amount=np.log1p(amount).astype(np.float32),
        category=cat.astype(np.int64, copy=False),
        calendar=calendar_features(ts),
        event_time_days=(ts - origin_ns) / DAY_NS,
        censored_gap_days=((as_of_ns - last) / DAY_NS).astype(np.float32),
        as_of=pd.Timestamp(as_of_ns),
        origin=pd.Timestamp(origin_ns),
        categories=list(vocab),
        absent_ids=np.empty(0, dtype=object) if absent_ids is None else absent_ids,
        has_amount=has_amount,
    )
