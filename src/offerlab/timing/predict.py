"""Answers as of a date, for every customer at once: when will they buy, how often, and what.

`TimingPredictor` wraps one or more trained `TimingModel`s (an ensemble of seeds averages their answers).
Questions, per customer, conditional on the days already elapsed since the last purchase:
P(purchase within k days), expected purchases in a horizon (Monte Carlo over the point process, the GRU
state carried forward through sampled purchases), median / quantiles of the next purchase date,
P(no purchase in the next 90 days) and the top categories of the next basket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from offerlab.timing.counts import CountHead, CountHeads, count_features
from offerlab.timing.data import (
    FeatureStats,
    TimingExamples,
    build_examples,
    calendar_features,
    gap_stat_features,
    gap_sums,
)
from offerlab.timing.model import TimingModel


@dataclass
class CustomerState:
    """Per-model encoder state after each customer's last purchase, plus what simulation needs to go on."""

    customer_ids: np.ndarray
    h: torch.Tensor  # (M, N, H) final GRU state per ensemble member
    elapsed: torch.Tensor  # (N,) days since the last purchase, at the as-of date
    last_day: torch.Tensor  # (N,) absolute day of the last purchase
    step: torch.Tensor  # (N,) index of the last purchase in the sequence
    tenure: torch.Tensor  # (N,) days from first to last purchase
    log_amount: torch.Tensor  # (N,) raw log-amount of the last purchase (0 for a model trained on dates alone)
    category: torch.Tensor  # (N,) category of the last purchase
    as_of_day: float
    gap_sums: torch.Tensor | None = None  # (N, 4) running gap sums at the last purchase (data.gap_sums)


class TimingPredictor:
    """A trained (ensemble of) timing model(s) plus the preprocessing it was trained with."""

    def __init__(self, models: list[TimingModel], stats: FeatureStats, categories: list[str], same_day: str,
                 use_calendar: bool, batch_events: int = 65536, age_inputs: bool = False,
                 count_head: CountHead | CountHeads | None = None):
        self.models = [m.eval() for m in models]
        self.count_head = count_head  # closed-form long-horizon counts (see counts.py); None = simulate
        self.stats = stats
        self.categories = list(categories)
        self.same_day = same_day
        self.use_calendar = use_calendar
        self.batch_events = batch_events
        self.age_inputs = age_inputs

    @property
    def uses_amount(self) -> bool:
        """False for a model trained on dates alone: amounts in its input are ignored (kept with the stats)."""
        return self.stats.uses_amount

    # -- encoding --------------------------------------------------------------------------------------
    def sequences(self, transactions: pd.DataFrame, as_of: str | pd.Timestamp):
        """Sequences as the model was trained on them; a model trained on dates alone drops any amounts
        first (same-day merging would otherwise pick each day's category by amount)."""
        from offerlab.data.sequences import build_sequences

        if not self.uses_amount and "amount" in transactions.columns:
            transactions = transactions.drop(columns="amount")
        return build_sequences(transactions, as_of, categories=self.categories or None, same_day=self.same_day)

    @torch.no_grad()
    def encode(self, transactions: pd.DataFrame, as_of: str | pd.Timestamp) -> CustomerState:
        """Run every member's GRU over all histories up to `as_of` (batched by length; no per-customer loop)."""
        seqs = self.sequences(transactions, as_of)
        ex, _ = build_examples(seqs, as_of, self.stats, use_calendar=self.use_calendar,
                               age_inputs=self.age_inputs)
        return self.encode_examples(ex)

    @torch.no_grad()
    def encode_examples(self, ex: TimingExamples, log_amount: np.ndarray | None = None) -> CustomerState:
        """`encode` of built examples; `log_amount` defaults to the examples' own (`ex.log_amount`)."""
        log_amount = ex.log_amount if log_amount is None else log_amount
        n = ex.n_customers
        lengths = ex.lengths
        order = np.argsort(lengths, kind="stable")
        hidden = self.models[0].hparams.hidden
        h = torch.zeros(len(self.models), n, hidden)
        start = 0
        while start < n:  # loop over length-sorted batches, not customers
            cap = max(1, self.batch_events // max(int(lengths[order[min(n, start + 4096) - 1]]), 1))
            idx = order[start:start + min(cap, 4096)]
            b = ex.padded(idx)
            last = (b["lengths"] - 1).long()
            for m, model in enumerate(self.models):
                out, _ = model.encode(b["inputs"], b["category"], b.get("static"))
                h[m, torch.from_numpy(idx)] = out[torch.arange(len(idx)), last]
            start += len(idx)
        last_ix = ex.offsets[1:] - 1
        first_ix = ex.offsets[:-1]
        return CustomerState(
            customer_ids=ex.customer_ids,
            h=h,
            elapsed=torch.from_numpy(ex.target_gap[last_ix].astype(np.float32)),
            last_day=torch.from_numpy(ex.abs_day[last_ix]),
            step=torch.from_numpy((last_ix - first_ix).astype(np.float64)),
            tenure=torch.from_numpy(ex.abs_day[last_ix] - ex.abs_day[first_ix]),
            log_amount=torch.from_numpy(log_amount[last_ix]),
            category=torch.from_numpy(ex.category[last_ix]),
            as_of_day=ex.as_of_day,
            gap_sums=torch.from_numpy(gap_sums(ex.abs_day, ex.offsets)[last_ix]) if self.stats.gap_stats else None,
        )

    # -- closed-form answers ---------------------------------------------------------------------------
    @torch.no_grad()
    def prob_within(self, state: CustomerState, k_days: float) -> np.ndarray:
        """P(a purchase within `k_days` of the as-of date | none since the last purchase); ensemble mean."""
        ps = [m.gap_distribution(state.h[i]).prob_within(state.elapsed, float(k_days))
              for i, m in enumerate(self.models)]
        return torch.stack(ps).mean(0).numpy()

    @torch.no_grad()
    def prob_never(self, state: CustomerState) -> np.ndarray:
        """P(no purchase ever again | the open gap so far): the model's drop-out belief."""
        ps = [m.gap_distribution(state.h[i]).log_p_never_given(state.elapsed).exp()
              for i, m in enumerate(self.models)]
        return torch.stack(ps).mean(0).numpy()

    def quantiles(self, state: CustomerState, qs: tuple[float, ...] = (0.1, 0.5, 0.9)) -> np.ndarray:
        """Days from the as-of date to the next purchase at levels `qs` (N, len(qs)); inf = maybe never.

        Levels of the ensemble's conditional cdf (the mean of the members' cdfs), by a two-level grid over
        log-time (`offerlab.timing.mixture`).
        """
        from offerlab.timing.mixture import EnsembleMixture

        return EnsembleMixture(self, state).quantiles(qs)

    @torch.no_grad()
    def category_probs(self, state: CustomerState) -> np.ndarray | None:
        """P(next purchase is in each category) (N, C), ensemble mean; None without categories."""
        if not self.categories:
            return None
        ps = [torch.softmax(m.category_logits(state.h[i]), -1) for i, m in enumerate(self.models)]
        return torch.stack(ps).mean(0).numpy()

    # -- long horizons: the count head when there is one, else Monte Carlo -------------------------------
    @torch.no_grad()
    def expected_counts(self, state: CustomerState, horizon_days: float, n_samples: int = 200,
                        seed: int = 0) -> np.ndarray:
        """Expected purchases in (as_of, as_of + horizon]: the count head's closed form, else a simulation."""
        if self.count_head is None:
            return self.simulate_counts(state, horizon_days, n_samples, seed)
        x = torch.from_numpy(count_features(self, state))
        return self.count_head.expected_count(x, float(horizon_days)).double().numpy()

    @torch.no_grad()
    def prob_any(self, state: CustomerState, horizon_days: float) -> np.ndarray:
        """P(at least one purchase in the next `horizon_days`): the count head's answer, else `prob_within`.

        The head is trained on whole windows of the calibration period, so it is the calibrated choice
        for months-long horizons; `prob_within` is the point process's conditional answer for any k.
        """
        if self.count_head is None:
            return self.prob_within(state, horizon_days)
        x = torch.from_numpy(count_features(self, state))
        return self.count_head.prob_any(x, float(horizon_days)).double().numpy()

    # -- Monte Carlo over the point process -------------------------------------------------------------
    @torch.no_grad()
    def simulate_counts(self, state: CustomerState, horizon_days: float, n_samples: int = 200, seed: int = 0,
                        max_steps: int = 1000, chunk_rows: int = 2_000_000) -> np.ndarray:
        """Expected number of purchases in (as_of, as_of + horizon] by simulating each member forward.

        Samples are split over the members; each sample draws the first gap conditional on the open gap,
        then feeds the sampled purchase back into the GRU and draws the next, until it leaves the
        horizon. Only live samples are carried (rows are compacted each step), so cost tracks the number
        of simulated purchases.
        """
        gen = torch.Generator().manual_seed(seed)
        n = len(state.elapsed)
        per_member = np.full(len(self.models), n_samples // len(self.models))
        per_member[: n_samples % len(self.models)] += 1
        total = torch.zeros(n, dtype=torch.float64)
        for m, model in enumerate(self.models):
            s = int(per_member[m])
            if s == 0:
                continue
            cust_per_chunk = max(1, chunk_rows // s)
            for c0 in range(0, n, cust_per_chunk):  # bounded memory: chunks of customers, vectorised inside
                idx = torch.arange(c0, min(n, c0 + cust_per_chunk))
                counts = self._simulate_member(model, state, m, idx, s, horizon_days, gen, max_steps)
                total[idx] += counts.sum(1) / n_samples
        return total.numpy()

    def _simulate_member(self, model: TimingModel, state: CustomerState, m: int, idx: torch.Tensor, s: int,
                         horizon: float, gen: torch.Generator, max_steps: int) -> torch.Tensor:
        rows = idx.repeat_interleave(s)  # customer index per sample row
        sample_pos = torch.arange(len(rows))
        counts = torch.zeros(len(rows), dtype=torch.float64)
        h = state.h[m, rows]
        t_now = -state.elapsed[rows].double()  # time of the last purchase relative to the as-of date
        gap = model.gap_distribution(h).sample_after(state.elapsed[rows], generator=gen).double()
        gap = gap + state.elapsed[rows].double()  # gap measured from the last purchase
        step, tenure = state.step[rows].double(), state.tenure[rows].double()
        log_amount, category = state.log_amount[rows].double(), state.category[rows]
        sums = state.gap_sums[rows].double() if state.gap_sums is not None else None
        for _ in range(max_steps):  # loop over simulated purchases (depth), vectorised over all samples
            t_event = t_now + gap
            alive = t_event <= horizon
            if not alive.any():
                break
            keep = alive.nonzero().squeeze(1)
            sample_pos, rows, h, t_event, gap = sample_pos[keep], rows[keep], h[keep], t_event[keep], gap[keep]
            step, tenure, log_amount, category = step[keep] + 1, tenure[keep] + gap, log_amount[keep], category[keep]
            if sums is not None:  # the simulated purchase closes a gap: update the running sums
                lg = torch.log1p(gap)
                sums = sums[keep] + torch.stack([torch.ones_like(gap), lg, lg**2, gap], -1)
            counts[sample_pos] += 1
            if self.categories:
                probs = torch.softmax(model.category_logits(h), -1)
                category = torch.multinomial(probs, 1, generator=gen).squeeze(1) + 1
            abs_day = state.as_of_day + t_event
            x = self._step_inputs(gap, log_amount, step, tenure, abs_day, sums)
            _, h_new = model.gru(model.step_features(x, category).unsqueeze(1), h.unsqueeze(0))
            h = h_new.squeeze(0)
            gap = model.gap_distribution(h).sample(generator=gen).double()
            t_now = t_event
        return counts.reshape(len(idx), s)

    def _step_inputs(self, gap: torch.Tensor, log_amount: torch.Tensor, step: torch.Tensor, tenure: torch.Tensor,
                     abs_day: torch.Tensor, sums: torch.Tensor | None = None) -> torch.Tensor:
        cols = [torch.log1p(gap), (log_amount - self.stats.amount_mean) / self.stats.amount_std]
        if self.age_inputs:
            cols += [torch.log1p(step), torch.log1p(tenure)]
        x = torch.stack(cols, -1)
        if self.stats.gap_stats:
            x = torch.cat([x, gap_stat_features(sums)], -1)
        if self.use_calendar:
            x = torch.cat([x, calendar_features(abs_day)], -1)
        return x.float()

    # -- all answers in one table ----------------------------------------------------------------------
    def predict_frame(self, transactions: pd.DataFrame, as_of: str | pd.Timestamp, *, horizon_days: float = 90.0,
                      within_days: tuple[float, ...] = (7, 30, 90), n_samples: int = 200, top_k: int = 3,
                      seed: int = 0) -> pd.DataFrame:
        """One row per customer with a purchase by `as_of`: every answer of the timing model."""
        state = self.encode(transactions, as_of)
        return self.answers(state, horizon_days=horizon_days, within_days=within_days, n_samples=n_samples,
                            top_k=top_k, seed=seed)

    def answers(self, state: CustomerState, *, horizon_days: float = 90.0, within_days: tuple[float, ...] = (7, 30, 90),
                n_samples: int = 200, top_k: int = 3, seed: int = 0) -> pd.DataFrame:
        out = pd.DataFrame({"customer_id": state.customer_ids, "days_since_last": state.elapsed.numpy()})
        for k in within_days:
            out[f"p_within_{int(k)}d"] = self.prob_within(state, k)
        out["p_no_purchase_90d"] = 1.0 - self.prob_within(state, 90.0)
        out["p_never"] = self.prob_never(state)
        qs = self.quantiles(state, (0.1, 0.5, 0.9))
        as_of_ts = pd.Timestamp("1970-01-01") + pd.to_timedelta(state.as_of_day, unit="D")
        for j, name in enumerate(("q10", "median", "q90")):
            out[f"{name}_days"] = qs[:, j]
        finite = np.isfinite(qs[:, 1])
        med = pd.to_timedelta(np.where(finite, qs[:, 1], 0.0), unit="D")
        out["median_next_date"] = (as_of_ts + med).where(finite, pd.NaT).normalize()
        out[f"expected_purchases_{int(horizon_days)}d"] = self.expected_counts(state, horizon_days, n_samples, seed)
        probs = self.category_probs(state)
        if probs is not None:
            top = np.argsort(-probs, axis=1)[:, :top_k]
            names = np.asarray(self.categories, dtype=object)
            for r in range(min(top_k, probs.shape[1])):
                out[f"top{r + 1}_category"] = names[top[:, r]]
                out[f"top{r + 1}_prob"] = probs[np.arange(len(probs)), top[:, r]]
        return out


def _head_blob(head: CountHead | CountHeads | None) -> dict | list | None:
    """A count head (or a list, one per member of `CountHeads`) as plain sizes and weights."""
    if isinstance(head, CountHeads):
        return [_head_blob(h) for h in head.heads]
    if head is None:
        return None
    return {"n_features": head.net[0].in_features, "hidden": head.net[0].out_features, "state_dict": head.state_dict()}


def _head_from_blob(blob: dict | list | None) -> CountHead | CountHeads | None:
    if isinstance(blob, list):
        return CountHeads([_head_from_blob(b) for b in blob]).eval()
    if blob is None:
        return None
    head = CountHead(blob["n_features"], blob["hidden"])
    head.load_state_dict(blob["state_dict"])
    return head.eval()


def save_predictor(predictor: TimingPredictor, path: str | Path) -> Path:
    """One torch file with every member's weights and hyper-parameters and the preprocessing."""
    path = Path(path)
    torch.save({
        "members": [{"hparams": dict(m.hparams), "state_dict": m.state_dict()} for m in predictor.models],
        "stats": vars(predictor.stats), "categories": predictor.categories, "same_day": predictor.same_day,
        "use_calendar": predictor.use_calendar, "age_inputs": predictor.age_inputs,
        "count_head": _head_blob(predictor.count_head),
    }, path)
    return path


def load_predictor(path: str | Path) -> TimingPredictor:
    """Inverse of `save_predictor`."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=False)
    models = []
    for member in blob["members"]:
        m = TimingModel(**member["hparams"])
        m.load_state_dict(member["state_dict"])
        models.append(m.eval())
    head = _head_from_blob(blob.get("count_head"))
    return TimingPredictor(models, FeatureStats(**blob["stats"]), blob["categories"], blob["same_day"],
                           blob["use_calendar"], age_inputs=blob.get("age_inputs", False), count_head=head)
