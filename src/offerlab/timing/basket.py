"""Replenishment: per (customer, item), the chance of buying the item soon and its expected need date, and the
prepared basket with its reminder day.

Candidates are bounded, so scoring stays vectorised at a million customers: a customer's own items (the
`max_own` with the highest time-decayed frequency), the `n_popular` most popular items and the `n_cobought`
items most often bought with the customer's last basket (the explore items, never bought by the customer).
Each candidate carries the features of its history as of a cut time, with nothing at or after the cut: how often
and how recently the customer bought it, its personal cycle per unit (days between purchases per unit bought),
the last quantity, the expected days until it is needed again (last quantity x cycle per unit, the personal one
where the item was bought twice, else the population's), the population's popularity, repeat ratio and cycle, the
co-bought score, and the customer's rhythm (baskets, days since the last, mean gap, share of repeat lines).

`BasketNet` (Lightning) maps them to logits of "in the next basket" and "bought within h days" for h in
`HORIZONS`; the within-h probabilities are made monotone in h. Training examples come from cut times inside the
history (the baskets before the held-out one, or dates before the cut-off), labels from what followed each cut,
masked where the data end before a window does.

The basket for a customer (`baskets`): its items are those with P(bought within 30 days) >= `min_p` (at most
`max_items`, by probability); an item's due date is the first day its P(bought within d days) reaches 0.5
(linear between the horizons), else none within 60 days; the reminder day is the first day by which half of the
basket's expected value (sum of P(within 30 d) x quantity x unit price) is due; the quantity is the item's last one.
An overdue customer's basket (the win-back) is the one of the purchase the offer asks for: each item's probabilities
divided by the customer's P(any purchase within 30 days) from the timing model, capped at 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

log = logging.getLogger(__name__)
DAY_NS = 86_400 * 10**9
HORIZONS = (7, 14, 30, 60)
DECAY_DAYS = 90.0
FEATURES = (
    "log_n", "share_of_baskets", "log_days_since", "log_item_gap", "has_item_gap", "log_due_ratio", "log_expected_due",
    "log_days_since_basket", "log_mean_gap", "log_n_baskets", "in_last_basket", "log_decayed", "log_popularity",
    "repeat_ratio", "log_pop_unit_gap", "explore", "log_cobought", "category_share", "log_rank", "log_last_qty",
    "repeat_share", "log_since_over_gap", "last_basket_category_share", "log_share_in_category",
)


def days(ts: pd.Series | np.ndarray) -> np.ndarray:
    """Timestamps as float days since the epoch."""
    return np.asarray(ts, dtype="datetime64[ns]").astype(np.int64) / DAY_NS


@dataclass
class Lines:
    """Order lines as coded arrays, sorted by customer then time: the input every basket function shares."""

    customers: pd.Index
    items: pd.Index
    cust: np.ndarray
    item: np.ndarray
    order: np.ndarray  # order code, increasing with (customer, time)
    t: np.ndarray  # days
    qty: np.ndarray
    unit_value: np.ndarray  # amount / quantity of the line (nan without amounts)
    item_category: np.ndarray  # category code of each item (-1 without categories)
    item_names: np.ndarray | None = None
    has_quantity: bool = True
    has_amount: bool = True

    @classmethod
    def from_frame(cls, lines: pd.DataFrame, items: pd.Index | None = None,
                   item_categories: np.ndarray | None = None) -> Lines:
        """`items` (and their `item_categories`, names): a fitted model's catalogue; lines of other items are
        left out (the model cannot score them)."""
        df = lines.sort_values(["customer_id", "timestamp", "order_id"], kind="stable")
        if items is None:
            items = pd.Index(np.sort(pd.unique(df["item_id"])))
        else:
            df = df[items.get_indexer(df["item_id"]) >= 0]
        customers = pd.Index(pd.unique(df["customer_id"]))
        cust = customers.get_indexer(df["customer_id"])
        item = items.get_indexer(df["item_id"])
        order = pd.factorize(df["order_id"].to_numpy())[0]
        qty = df["quantity"].to_numpy(dtype=float) if "quantity" in df.columns else np.ones(len(df))
        amount = df["amount"].to_numpy(dtype=float) if "amount" in df.columns else np.full(len(df), np.nan)
        cat = np.full(len(items), -1, dtype=np.int64)
        names = None
        known = item >= 0
        if item_categories is not None:
            cat = np.asarray(item_categories, dtype=np.int64)
        elif "category" in df.columns:
            codes, _ = pd.factorize(df["category"])
            cat[item[known]] = codes[known]
        if "item_name" in df.columns:
            names = np.asarray(items, dtype=object).copy()
            names[item[known]] = df["item_name"].to_numpy()[known]
        return cls(customers, items, cust, item, order, days(df["timestamp"]), qty, amount / np.maximum(qty, 1),
                   cat, names, "quantity" in df.columns, "amount" in df.columns)

    def before(self, cut: np.ndarray) -> np.ndarray:
        """Mask of the lines strictly before their customer's cut (nan cut: none)."""
        c = cut[self.cust]
        return self.t < c


def _baskets(L: Lines, mask: np.ndarray, n_cust: int) -> dict[str, np.ndarray]:
    """Per customer: number of baskets, first and last basket time, mean gap, share of repeat lines."""
    o = L.order[mask]
    first = np.r_[True, o[1:] != o[:-1]] if len(o) else np.zeros(0, bool)
    bc, bt = L.cust[mask][first], L.t[mask][first]
    nb = np.bincount(bc, minlength=n_cust)
    t_first = np.full(n_cust, np.inf)
    t_last = np.full(n_cust, -np.inf)
    np.minimum.at(t_first, bc, bt)
    np.maximum.at(t_last, bc, bt)
    t_first[nb == 0] = np.nan
    t_last[nb == 0] = np.nan
    gap = np.where(nb > 1, (t_last - t_first) / np.maximum(nb - 1, 1), np.nan)
    return {"n": nb, "first": t_first, "last": t_last, "gap": gap}


@dataclass
class Candidates:
    """One row per (customer, item) candidate at a cut: codes, features and (for training) labels."""

    cust: np.ndarray
    item: np.ndarray
    x: np.ndarray
    explore: np.ndarray
    last_qty: np.ndarray
    unit_value: np.ndarray
    y: np.ndarray | None = None
    mask: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def population_stats(L: Lines, hist: np.ndarray) -> dict:
    """What the population's history says of each item (popularity, repeat ratio, median days per unit, the
    co-bought matrix P(j in a basket | i in it)) and of baskets (median gap): computed once at fit time and kept
    with the model, so one customer's answer uses the population it was trained on."""
    n_item = len(L.items)
    c, i, t, q = L.cust[hist], L.item[hist], L.t[hist], L.qty[hist]
    key = c.astype(np.int64) * n_item + i
    order = np.argsort(key, kind="stable")
    k = key[order]
    start = np.r_[0, np.flatnonzero(k[1:] != k[:-1]) + 1] if len(k) else np.zeros(0, np.int64)
    end = np.r_[start[1:], len(k)]
    pi = (k[start] % n_item) if len(k) else np.zeros(0, np.int64)
    n = (end - start).astype(float)
    ts, qs = t[order], q[order]
    q_sum = np.add.reduceat(qs, start) if len(start) else np.zeros(0)
    span = ts[end - 1] - ts[start] if len(start) else np.zeros(0)
    unit_gap = np.where(n > 1, span / np.maximum(q_sum - qs[end - 1], 1), np.nan)
    buyers = np.bincount(pi, minlength=n_item).astype(float)
    repeaters = np.bincount(pi[n > 1], minlength=n_item).astype(float)
    n_baskets = len(np.unique(L.order[hist]))
    popularity = (np.bincount(pi, weights=n, minlength=n_item) + 1.0) / (n_baskets + n_item)
    pop_gap = pd.Series(unit_gap).groupby(pi).median().reindex(range(n_item)).to_numpy()
    fallback = float(np.nanmedian(unit_gap)) if np.isfinite(unit_gap).any() else 30.0
    basket_items = sp.csr_matrix((np.ones(int(hist.sum())), (L.order[hist], i)), shape=(int(L.order.max()) + 1, n_item))
    basket_items.data[:] = 1.0
    co = (basket_items.T @ basket_items).tocsr().astype(float)
    co.setdiag(0.0)
    co.eliminate_zeros()
    co = (sp.diags(1.0 / np.maximum(np.asarray(basket_items.sum(axis=0)).ravel(), 1.0)) @ co).tocsr()
    gaps = _baskets(L, hist, len(L.customers))["gap"]
    return {"popularity": popularity, "repeat_ratio": np.where(buyers > 0, repeaters / np.maximum(buyers, 1), 0.0),
            "pop_gap": np.where(np.isnan(pop_gap), fallback, pop_gap), "co": co,
            "median_basket_gap": float(np.nanmedian(gaps)) if np.isfinite(gaps).any() else 30.0}


def candidates(L: Lines, cut: np.ndarray, *, max_own: int = 50, n_popular: int = 20, n_cobought: int = 10,
               customers: np.ndarray | None = None, population: dict | None = None) -> Candidates:
    """The bounded candidates of every customer with a cut (`cut[c]` in days; nan: skip) and their features, from
    the lines strictly before the cut (and the population's item statistics: `population_stats` of the same
    history unless given)."""
    n_cust, n_item = len(L.customers), len(L.items)
    hist = L.before(cut)
    if customers is not None:
        keep = np.zeros(n_cust, bool)
        keep[customers] = True
        hist &= keep[L.cust]
    b = _baskets(L, hist, n_cust)
    active = b["n"] > 0
    pop = population if population is not None else population_stats(L, hist)
    c, i, t, q = L.cust[hist], L.item[hist], L.t[hist], L.qty[hist]
    uv = L.unit_value[hist]
    # --- pairs: one group per (customer, item), lines sorted by customer then time
    pair_key = c.astype(np.int64) * n_item + i
    order = np.argsort(pair_key, kind="stable")
    pk = pair_key[order]
    start = np.r_[0, np.flatnonzero(pk[1:] != pk[:-1]) + 1]
    end = np.r_[start[1:], len(pk)]
    pc, pi = pk[start] // n_item, pk[start] % n_item
    n = (end - start).astype(float)
    t_sorted, q_sorted = t[order], q[order]
    first_t, last_t = t_sorted[start], t_sorted[end - 1]
    last_q = q_sorted[end - 1]
    q_sum = np.add.reduceat(q_sorted, start) if len(start) else np.zeros(0)
    decayed = np.add.reduceat(np.exp(-(cut[c[order]] - t_sorted) / DECAY_DAYS), start) if len(start) else np.zeros(0)
    unit_v = uv[order][end - 1]
    item_gap = np.where(n > 1, (last_t - first_t) / np.maximum(n - 1, 1), np.nan)
    unit_gap = np.where(n > 1, (last_t - first_t) / np.maximum(q_sum - last_q, 1), np.nan)
    popularity, repeat_ratio, pop_gap, co = pop["popularity"], pop["repeat_ratio"], pop["pop_gap"], pop["co"]
    # --- the customer's own items, capped by decayed frequency
    rank = pd.Series(-decayed).groupby(pc).rank(method="first").to_numpy()
    own = rank <= max_own
    # --- explore items: popular and co-bought ones the customer never bought
    last_basket = hist & (L.t == b["last"][L.cust])
    lb = sp.csr_matrix((np.ones(last_basket.sum()), (L.cust[last_basket], L.item[last_basket])), shape=(n_cust, n_item))
    lb.data[:] = 1.0
    bought = sp.csr_matrix((np.ones(len(pc)), (pc, pi)), shape=(n_cust, n_item))
    cob_all = (lb @ co).tocsr()
    ex_c, ex_i, ex_s = _explore(cob_all, bought, active, popularity, n_popular, n_cobought)
    # --- assemble
    cc = np.concatenate([pc[own], ex_c])
    ii = np.concatenate([pi[own], ex_i])
    is_ex = np.r_[np.zeros(own.sum(), bool), np.ones(len(ex_c), bool)]
    nan = np.full(len(ex_c), np.nan)
    g = {k: np.concatenate([v[own], fill]) for k, v, fill in (
        ("n", n, np.zeros(len(ex_c))), ("last_t", last_t, nan), ("last_q", last_q, np.ones(len(ex_c))),
        ("item_gap", item_gap, nan), ("unit_gap", unit_gap, nan), ("decayed", decayed, np.zeros(len(ex_c))),
        ("rank", rank, np.full(len(ex_c), max_own + 1.0)), ("unit_v", unit_v, nan))}
    cob = np.zeros(len(cc))
    cob[len(cc) - len(ex_c):] = ex_s
    own_cob = np.asarray(cob_all[pc[own], pi[own]]).ravel() if own.any() else np.zeros(0)
    cob[: own.sum()] = own_cob
    cut_c = cut[cc]
    since = cut_c - g["last_t"]
    per_unit = np.where(np.isnan(g["unit_gap"]), pop_gap[ii], g["unit_gap"])
    expected_due = np.maximum(g["last_q"] * per_unit, 0.5)
    nb = b["n"][cc].astype(float)
    since_basket = cut_c - b["last"][cc]
    mean_gap = np.where(np.isnan(b["gap"][cc]), pop["median_basket_gap"], b["gap"][cc])
    has_cat = (L.item_category >= 0).any()
    item_cat = np.maximum(L.item_category[ii], 0)
    cat_share = _category_share(L, hist, n_cust)[cc, item_cat] if has_cat else np.zeros(len(cc))
    last_cat_share = _category_share(L, last_basket, n_cust)[cc, item_cat] if has_cat else np.zeros(len(cc))
    cat_pop = np.bincount(np.maximum(L.item_category, 0), weights=popularity)  # the item's share of its category
    in_cat = popularity[ii] / np.maximum(cat_pop[item_cat], 1e-12) if has_cat else np.ones(len(cc))
    repeat_share = _repeat_share(pc, n, n_cust)[cc]
    big = np.log1p(3650.0)
    x = np.column_stack([
        np.log1p(g["n"]), g["n"] / np.maximum(nb, 1), np.where(is_ex, big, np.log1p(np.maximum(since, 0))),
        np.log1p(np.nan_to_num(g["item_gap"], nan=0.0)), ~np.isnan(g["item_gap"]),
        np.where(is_ex, 0.0, np.log((np.maximum(since, 0) + mean_gap) / expected_due)), np.log(expected_due),
        np.log1p(np.maximum(since_basket, 0)), np.log1p(mean_gap), np.log1p(nb),
        (~is_ex) & (g["last_t"] == b["last"][cc]), np.log1p(g["decayed"]), np.log(popularity[ii]),
        repeat_ratio[ii], np.log1p(pop_gap[ii]), is_ex, np.log1p(cob), cat_share, np.log1p(g["rank"]),
        np.log1p(g["last_q"]), repeat_share, np.where(is_ex, 0.0, np.log((np.maximum(since, 0) + 1) / (mean_gap + 1))),
        last_cat_share, np.log(in_cat),
    ]).astype(np.float32)
    srt = np.lexsort((ii, cc))
    return Candidates(cc[srt], ii[srt], x[srt], is_ex[srt], g["last_q"][srt], g["unit_v"][srt])


def _explore(cob: sp.csr_matrix, bought: sp.csr_matrix, active: np.ndarray, popularity: np.ndarray, n_popular: int,
             n_cobought: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(customer, item, co-bought score) of the explore candidates: the top popular and co-bought items not yet
    bought, per active customer; dense per chunk of customers (the catalogue's width)."""
    n_item = len(popularity)
    top_pop = np.argsort(-popularity)[: n_popular]
    out_c, out_i, out_s = [], [], []
    rows = np.flatnonzero(active)
    step = max(1, 2_000_000 // max(n_item, 1))
    for s in range(0, len(rows), step):
        r = rows[s: s + step]
        score = cob[r].toarray()
        own = bought[r].toarray() > 0
        want = np.zeros_like(own)
        want[:, top_pop] = True
        if n_cobought:
            masked = np.where(own, -1.0, score)
            k = min(n_cobought, n_item)
            top = np.argpartition(-masked, k - 1, axis=1)[:, :k]
            ok = np.take_along_axis(masked, top, axis=1) > 0
            want[np.repeat(np.arange(len(r)), k)[ok.ravel()], top.ravel()[ok.ravel()]] = True
        want &= ~own
        rr, ii = np.nonzero(want)
        out_c.append(r[rr])
        out_i.append(ii)
        out_s.append(score[rr, ii])
    if not out_c:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_c), np.concatenate(out_i), np.concatenate(out_s)


def _category_share(L: Lines, hist: np.ndarray, n_cust: int) -> np.ndarray:
    cat = L.item_category[L.item[hist]]
    k = int(L.item_category.max()) + 1
    m = np.zeros((n_cust, max(k, 1)))
    np.add.at(m, (L.cust[hist], np.maximum(cat, 0)), 1.0)
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)


def _repeat_share(pc: np.ndarray, n: np.ndarray, n_cust: int) -> np.ndarray:
    """Per customer: the share of its lines that repeat an item it had bought before."""
    lines = np.bincount(pc, weights=n, minlength=n_cust)
    repeats = np.bincount(pc, weights=np.maximum(n - 1, 0), minlength=n_cust)
    return repeats / np.maximum(lines, 1.0)


def label(L: Lines, cand: Candidates, cut: np.ndarray, *, target_order: np.ndarray | None = None,
          data_end: float | None = None) -> Candidates:
    """Attach labels: column 0 "in the target basket" (`target_order[c]`: the order code of customer c's target
    basket; -1 or None: masked), columns 1.. "bought within h days after the cut" for h in HORIZONS (masked where
    cut + h passes `data_end`; None: all masked)."""
    n_item = len(L.items)
    k = len(HORIZONS) + 1
    y = np.zeros((len(cand.cust), k), np.float32)
    mask = np.zeros((len(cand.cust), k), np.float32)
    key = cand.cust.astype(np.int64) * n_item + cand.item
    line_key = L.cust.astype(np.int64) * n_item + L.item
    if target_order is not None:
        tgt = target_order[L.cust] == L.order
        hit = np.isin(key, line_key[tgt])
        y[:, 0] = hit
        mask[:, 0] = target_order[cand.cust] >= 0
    if data_end is not None:
        after = L.t - cut[L.cust]
        for j, h in enumerate(HORIZONS, start=1):
            within = (after >= 0) & (after < h)
            y[:, j] = np.isin(key, line_key[within])
            mask[:, j] = cut[cand.cust] + h <= data_end
    cand.y, cand.mask = y, mask
    return cand


def listwise_loss(z: torch.Tensor, y: torch.Tensor, keep: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Mean over groups with a positive of -mean_{i positive} log softmax_group(z)_i (ListNet's top-one loss with
    the positives' uniform distribution as the target)."""
    z, y, group = z[keep], y[keep], group[keep]
    _, g = torch.unique(group, return_inverse=True)
    n_g = int(g.max()) + 1 if len(g) else 0
    if n_g == 0:
        return z.sum() * 0.0
    top = torch.full((n_g,), -torch.inf, dtype=z.dtype).scatter_reduce(0, g, z.detach(), "amax")
    lse = top + torch.log(torch.zeros(n_g, dtype=z.dtype).index_add(0, g, torch.exp(z - top[g])))
    n_pos = torch.zeros(n_g, dtype=z.dtype).index_add(0, g, y)
    per = torch.zeros(n_g, dtype=z.dtype).index_add(0, g, y * (lse[g] - z)) / n_pos.clamp(min=1.0)
    has = n_pos > 0
    return per[has].mean() if has.any() else z.sum() * 0.0


class GroupBatches(torch.utils.data.Sampler):
    """Batches of whole groups (one customer at one cut), about `batch_size` rows, in a new order each epoch."""

    def __init__(self, group: np.ndarray, batch_size: int, seed: int):
        starts = np.r_[0, np.flatnonzero(group[1:] != group[:-1]) + 1]
        self.bounds = np.c_[starts, np.r_[starts[1:], len(group)]]
        self.batch_size, self.rng = batch_size, np.random.default_rng(seed)

    def __iter__(self):
        b = self.bounds[self.rng.permutation(len(self.bounds))]
        sizes = np.cumsum(b[:, 1] - b[:, 0])
        cuts = np.searchsorted(sizes, np.arange(self.batch_size, sizes[-1] + self.batch_size, self.batch_size))
        for part in np.split(b, np.unique(np.minimum(cuts + 1, len(b)))[:-1]):
            if len(part):
                yield torch.from_numpy(np.concatenate([np.arange(lo, hi) for lo, hi in part]))

    def __len__(self) -> int:
        return max(1, int(np.ceil((self.bounds[:, 1] - self.bounds[:, 0]).sum() / self.batch_size)))


class BasketNet(pl.LightningModule):
    """MLP from the candidate features to logits of [next basket, within h for h in HORIZONS]."""

    def __init__(self, n_features: int = len(FEATURES), hidden: int = 128, dropout: float = 0.1, lr: float = 2e-3,
                 weight_decay: float = 1e-5):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, len(HORIZONS) + 1),
        )
        self.register_buffer("mu", torch.zeros(n_features))
        self.register_buffer("sd", torch.ones(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mu) / self.sd)

    def training_step(self, batch, _):
        x, y, m, g = batch
        z = self(x)
        bce = nn.functional.binary_cross_entropy_with_logits(z[:, 1:], y[:, 1:], weight=m[:, 1:], reduction="sum")
        loss = bce / m[:, 1:].sum().clamp(min=1.0)
        if m[:, 0].any():  # next basket: listwise, a softmax over each cut's candidates (the ranking is the answer)
            loss = loss + listwise_loss(z[:, 0], y[:, 0], m[:, 0] > 0, g)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


@dataclass
class BasketConfig:
    max_own: int = 50
    n_popular: int = 20
    n_cobought: int = 10
    hidden: int = 128
    lr: float = 2e-3
    epochs: int = 4
    batch_size: int = 4096
    n_cuts: int = 3
    cut_spacing_days: int = 30
    max_train_rows: int = 4_000_000
    seed: int = 0
    min_p: float = 0.3
    max_items: int = 10
    accelerator: str = "cpu"


class BasketModel:
    """Fit on lines, predict per candidate; `baskets` turns predictions into the prepared baskets."""

    def __init__(self, cfg: BasketConfig | None = None):
        self.cfg = cfg or BasketConfig()
        self.net: BasketNet | None = None
        self.items: pd.Index | None = None
        self.item_names: np.ndarray | None = None
        self.fit_report: dict = {}
        self.item_categories: np.ndarray | None = None
        self.population: dict | None = None

    # ------------------------------------------------------------------------------------------- training
    def training_set(self, L: Lines, *, protocol: str, end: float | np.ndarray) -> Candidates:
        """Examples from cut times inside the history, which ends at `end` (days; exclusive; per customer or one
        date). protocol "next": each customer's last `n_cuts` baskets before its end are targets; "window": dates
        end - k x spacing (k = 1..n_cuts), labelled by windows that close by `end`."""
        n_cust = len(L.customers)
        parts = []
        ends = np.broadcast_to(np.asarray(end, dtype=float), (n_cust,))
        # the item statistics of the whole history before the end, for every cut as for prediction (features alike
        # in training and scoring; the held-out part is never in them)
        self.population = population_stats(L, L.t < ends[L.cust])
        if protocol == "next":
            in_hist = L.t < np.broadcast_to(np.asarray(end, dtype=float), (n_cust,))[L.cust]
            o = L.order[in_hist]
            first = np.r_[True, o[1:] != o[:-1]]
            bc, bt, bo = L.cust[in_hist][first], L.t[in_hist][first], o[first]
            pos = np.arange(len(bc)) - np.searchsorted(bc, bc, side="left")
            n_b = np.bincount(bc, minlength=n_cust)[bc]
            for k in range(1, self.cfg.n_cuts + 1):
                sel = (pos == n_b - k) & (pos >= 1)
                cut = np.full(n_cust, np.nan)
                cut[bc[sel]] = bt[sel]
                target = np.full(n_cust, -1, np.int64)
                target[bc[sel]] = bo[sel]
                cand = candidates(L, cut, max_own=self.cfg.max_own, n_popular=self.cfg.n_popular,
                                  n_cobought=self.cfg.n_cobought, customers=bc[sel], population=self.population)
                parts.append(label(L, cand, cut, target_order=target))
                parts[-1].extra["group"] = len(parts) * n_cust + cand.cust
        elif protocol == "window":
            for k in range(1, self.cfg.n_cuts + 1):
                cut = np.full(n_cust, float(end) - k * self.cfg.cut_spacing_days)
                cand = candidates(L, cut, max_own=self.cfg.max_own, n_popular=self.cfg.n_popular,
                                  n_cobought=self.cfg.n_cobought, population=self.population)
                parts.append(label(L, cand, cut, data_end=float(end)))
                parts[-1].extra["group"] = len(parts) * n_cust + cand.cust
        else:
            raise ValueError(f"unknown protocol {protocol!r}: next or window")
        return Candidates(
            np.concatenate([p.cust for p in parts]), np.concatenate([p.item for p in parts]),
            np.concatenate([p.x for p in parts]), np.concatenate([p.explore for p in parts]),
            np.concatenate([p.last_qty for p in parts]), np.concatenate([p.unit_value for p in parts]),
            np.concatenate([p.y for p in parts]), np.concatenate([p.mask for p in parts]),
            {"group": np.concatenate([p.extra["group"] for p in parts])})

    def fit(self, L: Lines, *, protocol: str, end: float | np.ndarray, progress: bool = False) -> BasketModel:
        cfg = self.cfg
        pl.seed_everything(cfg.seed, workers=False, verbose=False)
        data = self.training_set(L, protocol=protocol, end=end)
        group = data.extra["group"]
        rows = np.arange(len(data.cust))
        if len(rows) > cfg.max_train_rows:  # whole groups, at random
            ids = np.unique(group)
            frac = cfg.max_train_rows / len(rows)
            chosen = np.random.default_rng(cfg.seed).random(len(ids)) < frac
            rows = rows[np.isin(group, ids[chosen])]
        x = torch.from_numpy(np.nan_to_num(data.x[rows]))
        net = BasketNet(x.shape[1], cfg.hidden, lr=cfg.lr)
        net.mu.copy_(x.mean(0))
        net.sd.copy_(x.std(0).clamp(min=1e-3))
        ds = torch.utils.data.TensorDataset(x, torch.from_numpy(data.y[rows]), torch.from_numpy(data.mask[rows]),
                                            torch.from_numpy(group[rows]))
        # whole batches by one index array (in-memory tensors, no per-row fetch), whole groups in each
        batch = int(min(cfg.batch_size, max(256, len(rows) // 100)))  # small data: smaller batches, more steps
        dl = torch.utils.data.DataLoader(ds, sampler=GroupBatches(group[rows], batch, cfg.seed), batch_size=None)
        trainer = pl.Trainer(max_epochs=cfg.epochs, accelerator=cfg.accelerator, devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False)
        trainer.fit(net, dl)
        self.net = net.eval()
        self.items = L.items
        self.item_names = L.item_names
        self.item_categories = L.item_category
        pos = data.y[rows] * data.mask[rows]
        self.fit_report = {"protocol": protocol, "rows": int(len(rows)), "customers": int(len(np.unique(data.cust))),
                           "positive_rate": (pos.sum(0) / np.maximum(data.mask[rows].sum(0), 1)).round(4).tolist()}
        return self

    # ----------------------------------------------------------------------------------------- prediction
    def predict(self, L: Lines, cut: np.ndarray) -> Candidates:
        """Candidates at the cut with `extra["p_next"]` and `extra["p_within"]` (n, len(HORIZONS), monotone in h)."""
        if self.net is None:
            raise RuntimeError("the basket model is not fitted")
        cand = candidates(L, cut, max_own=self.cfg.max_own, n_popular=self.cfg.n_popular,
                          n_cobought=self.cfg.n_cobought, population=self.population)
        out = []
        with torch.no_grad():
            for s in range(0, len(cand.cust), 262_144):
                out.append(torch.sigmoid(self.net(torch.from_numpy(np.nan_to_num(cand.x[s: s + 262_144])))).numpy())
        p = np.concatenate(out) if out else np.zeros((0, len(HORIZONS) + 1), np.float32)
        cand.extra["p_next"] = p[:, 0]
        cand.extra["p_within"] = np.maximum.accumulate(p[:, 1:], axis=1)
        return cand


    def lines(self, frame: pd.DataFrame) -> Lines:
        """A frame of order lines coded with this model's catalogue (other items left out)."""
        return Lines.from_frame(frame, items=self.items, item_categories=self.item_categories)

    def state(self) -> dict:
        """Everything needed to rebuild the fitted model (`from_state`), as tensors, arrays and plain values."""
        pop = dict(self.population)
        co = pop.pop("co").tocoo()
        return {"cfg": vars(self.cfg), "hparams": dict(self.net.hparams), "state_dict": self.net.state_dict(),
                "items": list(self.items), "item_names": None if self.item_names is None else list(self.item_names),
                "item_categories": self.item_categories.tolist(), "population": pop,
                "co": (co.row.tolist(), co.col.tolist(), co.data.tolist(), co.shape), "fit_report": self.fit_report}

    @classmethod
    def from_state(cls, blob: dict) -> BasketModel:
        m = cls(BasketConfig(**blob["cfg"]))
        m.net = BasketNet(**blob["hparams"])
        m.net.load_state_dict(blob["state_dict"])
        m.net.eval()
        m.items = pd.Index(blob["items"])
        m.item_names = None if blob["item_names"] is None else np.asarray(blob["item_names"], dtype=object)
        m.item_categories = np.asarray(blob["item_categories"], dtype=np.int64)
        r, c, v, shape = blob["co"]
        m.population = {**{k: np.asarray(x) if isinstance(x, list | np.ndarray) else x
                           for k, x in blob["population"].items()},
                        "co": sp.csr_matrix((v, (r, c)), shape=tuple(shape))}
        m.fit_report = blob.get("fit_report", {})
        return m

    def save(self, path) -> None:
        torch.save(self.state(), path)

    @classmethod
    def load(cls, path) -> BasketModel:
        return cls.from_state(torch.load(path, weights_only=False))


def cumulative_at(p_within: np.ndarray, d: np.ndarray | float) -> np.ndarray:
    """P(bought within d days), linear between the horizons (0 at day 0, flat after the last)."""
    grid = np.r_[0.0, HORIZONS]
    full = np.column_stack([np.zeros(len(p_within)), p_within])
    d = np.broadcast_to(np.asarray(d, dtype=float), (len(p_within),))
    j = np.clip(np.searchsorted(grid, d, side="right") - 1, 0, len(grid) - 2)
    w = np.clip((d - grid[j]) / (grid[j + 1] - grid[j]), 0.0, 1.0)
    rows = np.arange(len(p_within))
    return full[rows, j] + w * (full[rows, j + 1] - full[rows, j])


def due_day(p_within: np.ndarray, level: float = 0.5) -> np.ndarray:
    """The first day P(bought within d days) reaches `level` (linear between horizons); nan when it never does."""
    grid = np.r_[0.0, HORIZONS]
    full = np.column_stack([np.zeros(len(p_within)), p_within])
    reached = full >= level
    j = np.argmax(reached, axis=1)
    ok = reached.any(axis=1) & (j > 0)
    rows = np.arange(len(p_within))
    lo, hi = full[rows, np.maximum(j - 1, 0)], full[rows, j]
    frac = np.where(hi > lo, (level - lo) / np.maximum(hi - lo, 1e-12), 1.0)
    d = grid[np.maximum(j - 1, 0)] + frac * (grid[j] - grid[np.maximum(j - 1, 0)])
    return np.where(ok, d, np.nan)


def baskets(cand: Candidates, customers: pd.Index, items: pd.Index, as_of: pd.Timestamp | np.ndarray,
            min_p: float = 0.3, max_items: int = 10, item_names: np.ndarray | None = None,
            given_purchase: np.ndarray | None = None) -> pd.DataFrame:
    """The prepared basket lines (see the module docstring): customer_id, reminder_date, item_id, item_name,
    quantity, p_30d, due_date, expected_value (nan without amounts).

    `given_purchase` (per customer; nan: not asked): the customer's P(any purchase within 30 days) from the timing
    model, for an overdue customer whose basket is the one of the purchase a win-back asks for: its items'
    probabilities are divided by it (P(item | a purchase) = P(item) / P(purchase)), capped at 1."""
    pw_all = cand.extra["p_within"]
    if given_purchase is not None:
        g = np.asarray(given_purchase, dtype=float)[cand.cust]
        scale = np.where(np.isfinite(g) & (g > 0), 1.0 / np.maximum(g, 1e-6), 1.0)
        pw_all = np.minimum(pw_all * scale[:, None], 1.0)
    p30 = cumulative_at(pw_all, 30.0)
    keep = p30 >= min_p
    c, i, p = cand.cust[keep], cand.item[keep], p30[keep]
    pw = pw_all[keep]
    order = np.lexsort((-p, c))
    c, i, p, pw = c[order], i[order], p[order], pw[order]
    qty = np.maximum(np.nan_to_num(cand.last_qty[keep][order], nan=1.0), 1.0)
    uv = cand.unit_value[keep][order]
    first = np.r_[0, np.flatnonzero(c[1:] != c[:-1]) + 1] if len(c) else np.zeros(0, np.int64)
    rank = np.arange(len(c)) - np.repeat(first, np.diff(np.r_[first, len(c)]))
    top = rank < max_items
    c, i, p, pw, qty, uv = c[top], i[top], p[top], pw[top], qty[top], uv[top]
    value = p * qty * np.where(np.isnan(uv), 1.0, uv)  # without amounts, every unit counts alike
    due = due_day(pw)
    # reminder day: first d in 1..30 with sum_i value_i P_i(within d) >= half of sum_i value_i P_i(within 30)
    d_grid = np.arange(1, 31, dtype=float)
    cum = np.stack([cumulative_at(pw, d) for d in d_grid], axis=1) * (value / np.maximum(p, 1e-9))[:, None]
    per_c = np.zeros((len(customers), len(d_grid)))
    np.add.at(per_c, c, cum)
    reached = per_c >= 0.5 * per_c[:, -1:]
    reminder = d_grid[np.argmax(reached, axis=1)]
    base = pd.Timestamp(as_of) if not isinstance(as_of, np.ndarray) else None
    start = (pd.DatetimeIndex(np.asarray(as_of)[c]) if base is None else pd.DatetimeIndex([base] * len(c)))
    names = item_names[i] if item_names is not None else np.asarray(items)[i]
    return pd.DataFrame({
        "customer_id": np.asarray(customers)[c],
        "reminder_date": (start + pd.to_timedelta(reminder[c], unit="D")).normalize(),
        "item_id": np.asarray(items)[i], "item_name": names, "quantity": qty.astype(np.int64),
        "p_30d": p.astype(float), "due_date": (start + pd.to_timedelta(due, unit="D")).normalize(),
        "expected_value": np.where(np.isnan(uv), np.nan, value),
    })


def fit_and_score(lines: pd.DataFrame, calibration_end: str | pd.Timestamp, holdout_end: str | pd.Timestamp,
                  cfg: BasketConfig) -> tuple[BasketModel, dict[str, float]]:
    """Fit on the lines up to the calibration end (the timing model's cut) and score the top 10 by P(within 7 and
    30 days) against what each customer bought in the holdout's first 7 and 30 days, beside personal top frequency;
    plus the share of customers with a prepared basket and its mean size."""
    from offerlab.timing import basket_peers
    from offerlab.timing.basket_bench import top_k_candidates, truth_matrix, window_metrics

    end = pd.Timestamp(holdout_end).normalize() + pd.Timedelta(days=1)
    cut_ts = pd.Timestamp(calibration_end).normalize() + pd.Timedelta(days=1)
    L = Lines.from_frame(lines[lines["timestamp"] < end])
    cut_day = float(days(pd.Series([cut_ts]))[0])
    model = BasketModel(cfg).fit(L, protocol="window", end=cut_day)
    cut = np.full(len(L.customers), cut_day)
    pred = model.predict(L, cut)
    hist = L.before(cut)
    active = np.flatnonzero(np.bincount(L.cust[hist], minlength=len(L.customers)) > 0)
    ptop = basket_peers.p_topfreq(L, hist)
    fill = np.argsort(-basket_peers.g_topfreq(L, hist)[0])
    out: dict[str, float] = {}
    for w in (7, 30):
        tm = truth_matrix(L, (L.t >= cut_day) & (L.t < cut_day + w), active)
        top = top_k_candidates(pred.cust, pred.item, pred.extra["p_within"][:, HORIZONS.index(w)], active, 10, fill)
        ours = window_metrics(top, tm, f"{w}d")
        peer = window_metrics(np.argsort(-ptop[active], axis=1)[:, :10], tm, f"{w}d")
        out[f"time_recall_{w}d"] = ours[f"time_recall_{w}d"]
        out[f"time_recall_{w}d_p_topfreq"] = peer[f"time_recall_{w}d"]
    b = baskets(pred, L.customers, L.items, cut_ts, cfg.min_p, cfg.max_items, model.item_names)
    out["customers_with_basket"] = float(b["customer_id"].nunique() / max(len(active), 1))
    out["mean_basket_items"] = float(b.groupby("customer_id").size().mean()) if len(b) else 0.0
    model.fit_report["holdout"] = dict(out)
    log.info("basket: recall@10 of the next 7 / 30 days %.3f / %.3f (personal top frequency %.3f / %.3f)",
             out["time_recall_7d"], out["time_recall_30d"], out["time_recall_7d_p_topfreq"],
             out["time_recall_30d_p_topfreq"])
    return model, out
