"""Event sequences -> per-step training examples for the timing model.

Each customer's history up to the as-of date becomes one sequence. At step i (after purchase i) the
target is the gap to purchase i+1; after the last purchase the target is the open gap to the as-of date,
right-censored ("no purchase yet"). All features are computed per event with numpy over the flat (CSR)
arrays of `EventSequences`; batches are padded on the fly from index arrays, never per customer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

EPOCH = pd.Timestamp("1970-01-01")
MIN_GAP_DAYS = 1e-3  # same-instant events: a log-normal needs a positive gap
N_CALENDAR = 4  # sin/cos of day of week, sin/cos of day of year
N_GAP_STATS = 4  # see gap_stat_features


def calendar_features(abs_day: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Day-of-week and day-of-year cycles from days since 1970-01-01 (works on numpy and torch alike)."""
    lib = torch if isinstance(abs_day, torch.Tensor) else np
    dow = 2 * np.pi * ((abs_day + 3) % 7) / 7  # 1970-01-01 was a Thursday; Monday = 0
    doy = 2 * np.pi * (abs_day % 365.25) / 365.25
    return lib.stack([lib.sin(dow), lib.cos(dow), lib.sin(doy), lib.cos(doy)], -1)


def as_of_days(as_of: str | pd.Timestamp) -> float:
    """The as-of instant in days since 1970-01-01."""
    return float((pd.Timestamp(as_of) - EPOCH) / pd.Timedelta(days=1))


def gap_sums(abs_day: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n_events, 4) running sums over each customer's gaps so far: count, sum log1p(gap), its square, sum gap.

    Summed within each customer only (`segment_cumsum`), so a customer's sums never depend on the others
    in the batch (serving scores a few customers at a time, training all of them at once).
    """
    from offerlab.data.features import segment_cumsum

    lengths = np.diff(offsets)
    cust = np.repeat(np.arange(len(lengths)), lengths)
    gap = np.maximum(np.diff(abs_day, prepend=abs_day[:1] if len(abs_day) else abs_day), 0.0)
    lg = np.log1p(gap)
    x = np.stack([np.ones_like(gap), lg, lg**2, gap], -1)
    x[offsets[:-1][lengths > 0]] = 0.0  # the first purchase closes no gap
    return np.stack(segment_cumsum(x, cust, offsets, lengths), -1)


def gap_stat_features(sums: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Inputs from `gap_sums` (numpy or torch): 1/(1+n), mean and sd of log1p(gap), log1p(mean gap).

    Why: a customer's own rhythm (typical gap and its regularity) is what a renewal process is
    identified by; handed over as summaries, the GRU need not learn to average over dozens of steps.
    All bounded in the count (1/(1+n), not n), so simulating far ahead never leaves the training range.
    """
    lib = torch if isinstance(sums, torch.Tensor) else np
    n, s1, s2, sg = (sums[..., j] for j in range(4))
    k = n.clip(min=1)
    mean = s1 / k
    sd = lib.sqrt((s2 / k - mean**2).clip(min=0))
    return lib.stack([1 / (1 + n), mean, sd, lib.log1p(sg / k)], -1)


@dataclass
class FeatureStats:
    """Training-set statistics that every later input is standardised with (kept in the model's hparams),
    and which derived inputs the model was trained on (so every later caller builds the same ones)."""

    amount_mean: float = 0.0
    amount_std: float = 1.0
    gap_stats: bool = False
    uses_amount: bool = True  # False: trained on dates alone (the log-amount input is 0, amounts are ignored)

    @classmethod
    def fit(cls, log_amount: np.ndarray, gap_stats: bool = False, uses_amount: bool = True) -> FeatureStats:
        if len(log_amount) == 0 or not uses_amount:
            return cls(gap_stats=gap_stats, uses_amount=uses_amount)
        return cls(float(np.mean(log_amount)), float(np.std(log_amount) or 1.0), gap_stats)


def model_log_amount(seqs, stats: FeatureStats) -> np.ndarray:
    """The log-amounts the model reads: the sequences' own, or 0 for a model trained on dates alone.

    A model trained with amounts refuses sequences built without them: a constant 0 would read as
    "every purchase was the smallest" and shift every answer without a word.
    """
    from offerlab.data.schema import DataValidationError

    if not stats.uses_amount:
        return np.zeros(len(seqs.log_amount))
    if not getattr(seqs, "has_amount", True):
        raise DataValidationError("transactions", "amount", "the timing model was trained with amounts; "
                                  "the transactions to score have no 'amount' column")
    return np.asarray(seqs.log_amount, dtype=np.float64)


@dataclass
class TimingExamples:
    """Flat per-event inputs and targets (CSR by customer) plus optional static features per customer."""

    customer_ids: np.ndarray
    offsets: np.ndarray  # (n_customers + 1,)
    inputs: np.ndarray  # (n_events, F) float32 continuous inputs
    category: np.ndarray  # (n_events,) int64 category of the event (0 = unknown)
    target_gap: np.ndarray  # (n_events,) gap to the next purchase, or the open gap at the last step
    censored: np.ndarray  # (n_events,) bool, True at each customer's last step
    target_category: np.ndarray  # (n_events,) category of the next purchase (0 = unknown / none)
    elapsed_start: np.ndarray  # (n_events,) left truncation: days of the gap already known to be empty
    weight: np.ndarray  # (n_events,) 1 where the step counts in the loss
    abs_day: np.ndarray  # (n_events,) event day since 1970-01-01
    as_of_day: float
    n_categories: int
    static: np.ndarray | None = None  # (n_customers, S)
    categories: list[str] = field(default_factory=list)
    log_amount: np.ndarray | None = None  # (n_events,) raw log-amount as the model reads it (`model_log_amount`)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_customers(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    def padded(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """A padded batch for customers `idx` (B, L, ...), L = the longest of them; `mask` marks real steps."""
        idx = np.asarray(idx)
        lengths = self.lengths[idx]
        max_len = int(lengths.max()) if len(idx) else 1
        steps = np.arange(max_len)
        mask = steps[None, :] < lengths[:, None]
        flat = np.where(mask, self.offsets[idx][:, None] + steps[None, :], 0)
        batch = {
            "inputs": torch.from_numpy(self.inputs[flat]),
            "category": torch.from_numpy(self.category[flat]),
            "target_gap": torch.from_numpy(self.target_gap[flat]),
            "censored": torch.from_numpy(self.censored[flat]),
            "target_category": torch.from_numpy(self.target_category[flat]),
            "weight": torch.from_numpy(np.where(mask, self.weight[flat], 0.0).astype(np.float32)),
            "mask": torch.from_numpy(mask),
            "lengths": torch.from_numpy(lengths),
        }
        elapsed_start = self.elapsed_start[flat]
        if elapsed_start.any():  # left truncation (validation windows); absent = zero, its term skipped
            batch["elapsed_start"] = torch.from_numpy(elapsed_start)
        if self.static is not None:
            batch["static"] = torch.from_numpy(self.static[idx])
        return batch


def step_inputs(gap_in: np.ndarray, log_amount: np.ndarray, step: np.ndarray, tenure: np.ndarray,
                abs_day: np.ndarray, stats: FeatureStats, use_calendar: bool, age_inputs: bool = False,
                sums: np.ndarray | None = None) -> np.ndarray:
    """Continuous per-step inputs: log(1+gap), standardised log-amount, [log(1+step), log(1+tenure)],
    [gap statistics from `sums` when `stats.gap_stats`], calendar.

    Step and tenure are off by default: forecasting runs them past anything seen in training (the
    GRU counts purchases itself), which made long-horizon simulations run away.
    """
    cols = [np.log1p(gap_in), (log_amount - stats.amount_mean) / stats.amount_std]
    if age_inputs:
        cols += [np.log1p(step), np.log1p(tenure)]
    out = np.stack(cols, -1)
    if stats.gap_stats:
        out = np.concatenate([out, gap_stat_features(sums)], -1)
    if use_calendar:
        out = np.concatenate([out, calendar_features(abs_day)], -1)
    return out.astype(np.float32)


def n_inputs(use_calendar: bool, age_inputs: bool = False, gap_stats: bool = False) -> int:
    return 2 + (2 if age_inputs else 0) + (N_GAP_STATS if gap_stats else 0) + (N_CALENDAR if use_calendar else 0)


def build_examples(seqs, as_of: str | pd.Timestamp, stats: FeatureStats | None = None, *, use_calendar: bool = True,
                   age_inputs: bool = False, gap_stats: bool = False,
                   static: pd.DataFrame | None = None, validation_start: str | pd.Timestamp | None = None,
                   ) -> tuple[TimingExamples, FeatureStats]:
    """Turn `EventSequences` (built as of `as_of`) into per-step examples.

    `gap_stats` only counts when `stats` is fitted here; given `stats`, its own `gap_stats` decides.
    Likewise amounts: fitted here, `stats.uses_amount` is whether the sequences have amounts; given
    `stats`, a model trained on dates alone ignores amounts and one trained with them refuses sequences
    without them (`model_log_amount`).

    `validation_start`: score only what happens after that date (given the history before it): steps
    whose gap ended before it get weight 0, the gap spanning it is left-truncated at it. Used for the
    time-based early stopping on the last weeks of the calibration period.
    """
    offsets = np.asarray(seqs.offsets, dtype=np.int64)
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    if n and lengths.min() < 1:
        raise ValueError("every customer in the sequences needs at least one purchase")
    cust = np.repeat(np.arange(n), lengths)
    first = offsets[:-1]
    last = offsets[1:] - 1
    t = np.asarray(seqs.event_time_days, dtype=np.float64)
    as_of_day = as_of_days(as_of)
    # absolute event day from the open gap, whatever origin event_time_days uses
    abs_day = as_of_day - np.asarray(seqs.censored_gap_days, dtype=np.float64)[cust] - (t[last][cust] - t)
    gap_in = np.diff(abs_day, prepend=abs_day[:1] if len(abs_day) else abs_day)
    gap_in[first] = 0.0
    gap_in = np.maximum(gap_in, 0.0)
    is_last = np.zeros(len(t), dtype=bool)
    is_last[last] = True
    target_gap = np.empty(len(t))
    target_gap[:-1] = gap_in[1:]
    target_gap[last] = as_of_day - abs_day[last]
    target_gap = np.where(is_last, np.maximum(target_gap, 0.0), np.maximum(target_gap, MIN_GAP_DAYS))
    stats = stats or FeatureStats.fit(np.asarray(seqs.log_amount, dtype=np.float64), gap_stats,
                                      uses_amount=getattr(seqs, "has_amount", True))
    log_amount = model_log_amount(seqs, stats)
    step = np.arange(len(t)) - first[cust]
    tenure = abs_day - abs_day[first][cust]
    category = np.asarray(seqs.category, dtype=np.int64)
    target_category = np.zeros(len(t), dtype=np.int64)
    target_category[:-1] = category[1:]
    target_category[last] = 0
    weight = np.ones(len(t), dtype=np.float32)
    elapsed_start = np.zeros(len(t))
    if validation_start is not None:
        v_day = as_of_days(validation_start)
        end_day = abs_day + target_gap
        ends_before = (end_day <= v_day) & ~is_last
        weight[ends_before] = 0.0
        elapsed_start = np.clip(v_day - abs_day, 0.0, None)
        elapsed_start = np.where(ends_before, 0.0, np.minimum(elapsed_start, target_gap))
    static_arr = None
    if static is not None:
        static_arr = static.reindex(pd.Index(seqs.customer_ids)).fillna(0.0).to_numpy(np.float32)
    examples = TimingExamples(
        customer_ids=np.asarray(seqs.customer_ids),
        offsets=offsets,
        inputs=step_inputs(gap_in, log_amount, step, tenure, abs_day, stats, use_calendar, age_inputs,
                           gap_sums(abs_day, offsets) if stats.gap_stats else None),
        category=category,
        target_gap=target_gap.astype(np.float32),
        censored=is_last,
        target_category=target_category,
        elapsed_start=elapsed_start.astype(np.float32),
        weight=weight,
        abs_day=abs_day,
        as_of_day=as_of_day,
        n_categories=len(seqs.categories),
        static=static_arr,
        categories=list(seqs.categories),
        log_amount=log_amount,
    )
    return examples, stats


class LengthBucketBatches(torch.utils.data.Dataset):
    """Batches of customers with similar sequence lengths (little padding), reshuffled every epoch.

    Each item is a whole padded batch, so the DataLoader runs with `batch_size=None`.
    """

    def __init__(self, examples: TimingExamples, max_events: int = 8192, max_customers: int = 512,
                 shuffle: bool = True, seed: int = 0):
        self.examples = examples
        self.max_events = max_events
        self.max_customers = max_customers
        self.shuffle = shuffle
        self.seed = seed
        self.reshuffle(0)

    def reshuffle(self, epoch: int) -> None:
        """New batch composition and order for an epoch (same on every DDP rank: seeded by the epoch)."""
        self.rng = np.random.default_rng([self.seed, epoch])
        self.batches = self._make_batches()

    def _make_batches(self) -> list[np.ndarray]:
        lengths = self.examples.lengths
        jitter = self.rng.random(len(lengths)) if self.shuffle else np.zeros(len(lengths))
        order = np.lexsort((jitter, lengths))
        lens = lengths[order]
        # cut where the padded size (count * max length so far) would exceed the event budget
        per_batch = np.clip(self.max_events // np.maximum(lens, 1), 1, self.max_customers)
        batches, start = [], 0
        cum_cap = per_batch  # the longest sequence in a batch is its last (sorted ascending)
        while start < len(order):  # loop over batches, not customers
            cap = int(cum_cap[min(start + self.max_customers, len(order)) - 1])
            end = min(start + max(cap, 1), len(order))
            # if the batch's longest sequence needs a smaller cap, shrink until it fits
            while end - start > 1 and (end - start) * lens[end - 1] > self.max_events:
                end = start + max(1, int(self.max_events // lens[end - 1]))
            batches.append(order[start:end])
            start = end
        if self.shuffle:
            self.rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.examples.padded(self.batches[i])
