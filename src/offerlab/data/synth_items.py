"""Items in the synthetic marketplace: what each order holds, from a known replenishment process with truth.

The orders (the `transactions` table) come from `offerlab.data.synth` unchanged; this module fills them with
lines. Every category has `ITEMS_PER_CATEGORY` items; the replenishment categories' items (and half of
beauty's) are consumables. Each customer buys a few consumables regularly: a (customer, item) pair has a
personal unit cycle (the days one unit lasts: the item's population cycle x LogNormal(0, 0.35)), a start
(acquisition, or later for 30% of pairs: items a customer starts buying) and, for 20% of pairs, a stop (items a
customer stops buying). After buying q units at time t the next need comes at t + q x unit_cycle x
LogNormal(mean 1, sd-log 0.25); the item is bought at the customer's first order at or after that need (while
the pair is active), in quantity 1 + Poisson(the item's extra quantity). Every order also holds its recorded
category (`transactions.category`): if no due item of that category is in it, a one-off item of the category
(by popularity); and with probability 0.25 one more one-off item (the customer's category preferences). Line
amounts split the order's amount by price x quantity (to the cent). The truth (`truth/items.parquet`) records
every regular pair: its unit cycle, start, stop, last purchase and quantity, and the next need after it.
Drawn from a random stream of its own (per chunk), so the other tables keep their bytes; vectorised over pairs,
with one loop over a pair's successive purchases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

ITEMS_PER_CATEGORY = 12
ITEM_STREAM = 20_261_206  # spawn-key prefix of the item stream: distinct from the chunks' own streams
REGULAR_MAX = 8
NEED_SD = 0.25
PAIR_CYCLE_SD = 0.35
START_LATE_P, STOP_P = 0.30, 0.20
EXTRA_ONE_OFF_P = 0.25

_TS = pa.timestamp("ns")
LINES_SCHEMA = pa.schema([
    ("order_id", pa.string()), ("customer_id", pa.string()), ("timestamp", _TS), ("item_id", pa.string()),
    ("item_name", pa.string()), ("category", pa.string()), ("quantity", pa.int64()), ("amount", pa.float64()),
])
TRUTH_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("item_id", pa.string()), ("unit_cycle_days", pa.float64()),
    ("extra_quantity", pa.float64()), ("start_at", _TS), ("stop_at", _TS), ("last_bought_at", _TS),
    ("last_quantity", pa.int64()), ("n_bought", pa.int64()), ("next_need_at", _TS),
])


def catalogue(categories: tuple[str, ...], replenish: np.ndarray) -> pd.DataFrame:
    """The fixed item catalogue (the same for every seed): id, name, category, popularity within the category,
    price factor, consumable flag, population unit cycle (days) and extra quantity (Poisson mean)."""
    rng = np.random.default_rng(ITEM_STREAM)
    rows = []
    for c, cat in enumerate(categories):
        k = np.arange(ITEMS_PER_CATEGORY)
        pop = 1.0 / (k + 1.0) ** 0.8
        consumable = np.full(ITEMS_PER_CATEGORY, bool(replenish[c]))
        if cat == "beauty":
            consumable[: ITEMS_PER_CATEGORY // 2] = True
        rows.append(pd.DataFrame({
            "item_id": [f"{cat}_{j + 1:02d}" for j in k],
            "item_name": [f"{cat.replace('_', ' ')} item {j + 1}" for j in k],
            "category": cat, "category_code": c, "popularity": pop / pop.sum(),
            "price_factor": np.round(np.exp(rng.normal(0.0, 0.35, ITEMS_PER_CATEGORY)), 3),
            "consumable": consumable,
            "unit_cycle_days": np.round(np.clip(np.exp(rng.normal(np.log(12.0), 0.5, ITEMS_PER_CATEGORY)), 3, 60), 2),
            "extra_quantity": np.round(rng.uniform(0.2, 1.5, ITEMS_PER_CATEGORY), 2),
        }))
    return pd.concat(rows, ignore_index=True)


def item_rng(seed: int, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ITEM_STREAM, chunk)))


def _regular_pairs(rng: np.random.Generator, prefs: np.ndarray, zk: np.ndarray, cat: pd.DataFrame):
    """Each customer's regular consumables: (customer, item) pairs, distinct per customer (Gumbel top-k)."""
    n = len(prefs)
    cons = np.flatnonzero(cat["consumable"].to_numpy())
    w = prefs[:, cat["category_code"].to_numpy()[cons]] * cat["popularity"].to_numpy()[cons][None, :]
    scores = np.log(w) + rng.gumbel(size=w.shape)
    top = np.argsort(-scores, axis=1)[:, :REGULAR_MAX]
    n_reg = np.minimum(1 + rng.poisson(1.0 + 2.0 / (1.0 + np.exp(-zk))), REGULAR_MAX)
    keep = np.arange(REGULAR_MAX)[None, :] < n_reg[:, None]
    cust = np.repeat(np.arange(n), REGULAR_MAX).reshape(n, REGULAR_MAX)[keep]
    return cust, cons[top[keep]]


def _one_off(rng: np.random.Generator, cat_code: np.ndarray, cat: pd.DataFrame) -> np.ndarray:
    """An item of each given category, drawn by popularity within the category."""
    pop = cat["popularity"].to_numpy().reshape(-1, ITEMS_PER_CATEGORY)
    cum = np.cumsum(pop, axis=1)[cat_code]
    j = np.minimum((rng.random(len(cat_code))[:, None] >= cum).sum(axis=1), ITEMS_PER_CATEGORY - 1)
    return cat_code * ITEMS_PER_CATEGORY + j


def item_lines(rng: np.random.Generator, tr: dict, ev: dict, w: dict, orders: pa.Table, cat: pd.DataFrame
               ) -> tuple[pa.Table, dict]:
    """The `lines` table of one chunk's orders and the truth of its regular (customer, item) pairs (arrays; see
    `truth_table`)."""
    t_ord, o_cust = ev["t"], ev["cust"]
    starts, counts = ev["starts"], ev["counts"]
    stride = w["horizon"] + 1.0
    key = o_cust * stride + t_ord
    ends = starts + counts
    zk = (np.log(tr["shape"]) - np.log(2.0)) / 0.6
    p_cust, p_item = _regular_pairs(rng, tr["prefs"], zk, cat)
    n_pairs = len(p_cust)
    cycle = cat["unit_cycle_days"].to_numpy()[p_item] * np.exp(rng.normal(0.0, PAIR_CYCLE_SD, n_pairs))
    acq = ev["acq"][p_cust]
    late = rng.random(n_pairs) < START_LATE_P
    start = np.where(late, acq + rng.random(n_pairs) * (w["horizon"] - acq), acq)
    stops = rng.random(n_pairs) < STOP_P
    stop = np.where(stops, start + rng.random(n_pairs) * (w["horizon"] - start), np.inf)
    lam = cat["extra_quantity"].to_numpy()[p_item]

    rec_pair, rec_order, rec_qty = [], [], []
    last_t = np.full(n_pairs, np.nan)
    last_q = np.zeros(n_pairs, dtype=np.int64)
    n_bought = np.zeros(n_pairs, dtype=np.int64)
    need = start.copy()
    active = np.arange(n_pairs)
    while len(active):
        pos = np.searchsorted(key, p_cust[active] * stride + need[active], side="left")
        ok = pos < ends[p_cust[active]]
        ok[ok] = t_ord[pos[ok]] < stop[active[ok]]
        active, pos = active[ok], pos[ok]
        if not len(active):
            break
        q = 1 + rng.poisson(lam[active])
        rec_pair.append(active)
        rec_order.append(pos)
        rec_qty.append(q)
        last_t[active], last_q[active] = t_ord[pos], q
        n_bought[active] += 1
        need[active] = t_ord[pos] + q * cycle[active] * np.exp(rng.normal(-0.5 * NEED_SD**2, NEED_SD, len(active)))
    pair = np.concatenate(rec_pair) if rec_pair else np.zeros(0, np.int64)
    reg_order = np.concatenate(rec_order) if rec_order else np.zeros(0, np.int64)
    reg_item = p_item[pair]
    reg_qty = np.concatenate(rec_qty) if rec_qty else np.zeros(0, np.int64)

    # one-off items: the order's own category when no regular line covers it, plus an extra one now and then
    cats = list(cat["category"].drop_duplicates())
    o_cat = pd.Categorical(orders.column("category").to_numpy(zero_copy_only=False), categories=cats).codes
    n_ord = len(t_ord)
    covered = np.zeros(n_ord, dtype=bool)
    covered[reg_order[cat["category_code"].to_numpy()[reg_item] == o_cat[reg_order]]] = True
    anchor = np.flatnonzero(~covered)
    extra = np.flatnonzero(rng.random(n_ord) < EXTRA_ONE_OFF_P)
    from offerlab.data.synth import _categorical  # one draw per row from row-wise probabilities

    extra_cat = _categorical(rng, tr["prefs"][o_cust[extra]])
    off_order = np.concatenate([anchor, extra])
    off_item = _one_off(rng, np.concatenate([o_cat[anchor], extra_cat]), cat)
    off_qty = 1 + rng.poisson(0.5 * cat["extra_quantity"].to_numpy()[off_item])

    order_idx = np.concatenate([reg_order, off_order])
    item = np.concatenate([reg_item, off_item])
    qty = np.concatenate([reg_qty, off_qty]).astype(np.int64)
    first = ~pd.DataFrame({"o": order_idx, "i": item}).duplicated().to_numpy()  # a one-off already in the order
    order_idx, item, qty = order_idx[first], item[first], qty[first]
    srt = np.lexsort((item, order_idx))
    order_idx, item, qty = order_idx[srt], item[srt], qty[srt]
    weight = cat["price_factor"].to_numpy()[item] * qty
    total = np.bincount(order_idx, weights=weight, minlength=n_ord)
    amount = np.round(orders.column("amount").to_numpy()[order_idx] * weight / total[order_idx], 2)
    idx = pa.array(order_idx.astype(np.int64))
    items = pa.array(item.astype(np.int64))
    lines = pa.Table.from_arrays([
        orders.column("order_id").take(idx), orders.column("customer_id").take(idx),
        orders.column("timestamp").take(idx), pa.array(cat["item_id"].to_numpy(), pa.string()).take(items),
        pa.array(cat["item_name"].to_numpy(), pa.string()).take(items),
        pa.array(cat["category"].to_numpy(), pa.string()).take(items), pa.array(qty), pa.array(amount),
    ], schema=LINES_SCHEMA)

    return lines, _truth(p_cust, p_item, cycle, lam, start, stop, last_t, last_q, n_bought, need, w, cat)


def _ns(t_days: np.ndarray, start_ns: int) -> pa.Array:
    ok = np.isfinite(t_days)
    ns = np.where(ok, start_ns + np.round(np.where(ok, t_days, 0.0) * 86_400e9).astype(np.int64), 0)
    return pa.array(ns, _TS, mask=~ok)


def _truth(p_cust, p_item, cycle, lam, start, stop, last_t, last_q, n_bought, need, w, cat) -> dict:
    """The pairs' truth as arrays (the caller adds the customer ids): times as Arrow timestamps, nulls where
    a pair never stops or was never bought."""
    return {
        "cust": p_cust,
        "item_id": pa.array(cat["item_id"].to_numpy(), pa.string()).take(pa.array(p_item.astype(np.int64))),
        "unit_cycle_days": pa.array(cycle), "extra_quantity": pa.array(lam),
        "start_at": _ns(start, w["start_ns"]), "stop_at": _ns(stop, w["start_ns"]),
        "last_bought_at": _ns(last_t, w["start_ns"]), "last_quantity": pa.array(last_q),
        "n_bought": pa.array(n_bought), "next_need_at": _ns(need, w["start_ns"]),
    }


def truth_table(truth: dict, cid: pa.Array) -> pa.Table:
    cols = [cid.take(pa.array(truth["cust"].astype(np.int64)))] + [truth[f.name] for f in list(TRUTH_SCHEMA)[1:]]
    return pa.Table.from_arrays(cols, schema=TRUTH_SCHEMA)
