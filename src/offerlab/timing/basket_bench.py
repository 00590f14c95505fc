"""`offerlab bench basket`: the replenishment basket against next-basket peers, side by side in one run.

Protocols:
- next basket (Li et al., "A Next Basket Recommendation Reality Check"): every customer with two or more baskets has
  its last basket held out; models see the lines before it. recall@10/20, NDCG@10/20, PHR@10 (share of customers
  with a hit in the top 10), and recall@10 over the held-out basket's repeat items (bought before) and explore items
  (new to the customer) apart, each averaged over the customers that have such items.
- time-aware: one cut-off date, 30 days before the last day of the data; models see the lines before it; the top 10
  is scored against the items each customer bought within 7 and within 30 days after it (customers with a purchase
  in the window): `time_recall_7d`, `time_recall_30d` and the precisions.
On synthetic data `oracle` ranks by the truth: each item's probability of being in the next basket, from the chance
that a regular item is due (its true unit cycle, the last quantity and time bought, the need noise, given it was not
bought at the baskets since) and the one-off process (the next order's category from the customer's true preferences
and repeat probability, the item by its popularity in the category).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from offerlab.timing import basket_peers as peers
from offerlab.timing.basket import HORIZONS, BasketConfig, BasketModel, Lines, days

log = logging.getLogger(__name__)
MODELS = ("offerlab", "g_topfreq", "p_topfreq", "tifu_knn", "buy_it_again")
KEYS = ("recall_at_10", "recall_at_20", "ndcg_at_10", "ndcg_at_20", "phr_at_10", "recall_at_10_repeat",
        "recall_at_10_explore", "time_recall_7d", "time_recall_30d", "time_precision_7d", "time_precision_30d")


# ------------------------------------------------------------------------------------------------ metrics
def top_k_dense(score: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    s = score[rows]
    top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable"), axis=1)


def top_k_candidates(cust: np.ndarray, item: np.ndarray, score: np.ndarray, rows: np.ndarray, k: int,
                     fill: np.ndarray) -> np.ndarray:
    """Top k items of each customer in `rows` from candidate scores; short lists are filled from `fill` (a global
    order of items)."""
    order = np.lexsort((-score, cust))
    c, i = cust[order], item[order]
    start = np.searchsorted(c, rows, side="left")
    stop = np.searchsorted(c, rows, side="right")
    out = np.full((len(rows), k), -1, np.int64)
    for j in range(k):
        has = start + j < stop
        out[has, j] = i[start[has] + j]
    short = (out < 0).any(axis=1)
    for r in np.flatnonzero(short):  # rare: a customer with fewer than k candidates
        have = list(out[r][out[r] >= 0])
        extra = [x for x in fill if x not in have][: k - len(have)]
        out[r] = np.array(have + extra + [-1] * (k - len(have) - len(extra)))
    return out


def ranking_metrics(top: np.ndarray, truth: sp.csr_matrix, seen: sp.csr_matrix | None = None) -> dict[str, float]:
    """recall, NDCG, PHR of top-k lists (rows) against truth rows (multi-hot); repeat/explore recall with `seen`."""
    hit = np.asarray(truth[np.arange(len(top))[:, None], np.maximum(top, 0)].todense()) > 0
    hit &= top >= 0
    n_true = np.asarray(truth.sum(axis=1)).ravel().astype(np.int64)
    ok = n_true > 0
    out = {}
    disc = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    for k in (10, 20):
        if top.shape[1] < k:
            continue
        h = hit[:, :k]
        out[f"recall_at_{k}"] = float((h.sum(1)[ok] / n_true[ok]).mean())
        ideal = np.cumsum(disc[:k])[np.clip(n_true, 1, k) - 1]
        out[f"ndcg_at_{k}"] = float(((h * disc[:k]).sum(1)[ok] / ideal[ok]).mean())
    out["phr_at_10"] = float((hit[:, :10].any(1)[ok]).mean())
    if seen is not None:
        rep = truth.multiply(seen > 0).tocsr()
        exp = (truth - rep).tocsr()
        for name, part in (("repeat", rep), ("explore", exp)):
            n_p = np.asarray(part.sum(axis=1)).ravel()
            hp = (np.asarray(part[np.arange(len(top))[:, None], np.maximum(top[:, :10], 0)].todense()) > 0)
            hp &= top[:, :10] >= 0
            sel = n_p > 0
            out[f"recall_at_10_{name}"] = float((hp.sum(1)[sel] / n_p[sel]).mean()) if sel.any() else None
    return out


def window_metrics(top: np.ndarray, truth: sp.csr_matrix, label: str) -> dict[str, float]:
    hit = (np.asarray(truth[np.arange(len(top))[:, None], np.maximum(top, 0)].todense()) > 0) & (top >= 0)
    n_true = np.asarray(truth.sum(axis=1)).ravel()
    ok = n_true > 0
    return {f"time_recall_{label}": float((hit.sum(1)[ok] / n_true[ok]).mean()),
            f"time_precision_{label}": float((hit.sum(1)[ok] / top.shape[1]).mean()),
            f"customers_{label}": int(ok.sum())}


# ------------------------------------------------------------------------------------------------ data
def load_lines(dataset: str, *, customers: int = 20_000, seed: int = 0, data_path: str | None = None,
               spec: str | None = None, sets: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict | None]:
    """(lines, synthetic truth or None) for `synth`, `groceries` or `mapped` (a data spec with item lines)."""
    if dataset == "synth":
        from offerlab.data import synth

        data = synth.generate(customers, seed)
        return data.lines, {"items": data.truth_items, "timing": data.truth_timing, "meta": data.meta,
                            "transactions": data.transactions}
    if dataset == "groceries":
        from offerlab.data.lines import load_groceries

        return load_groceries(data_path), None
    if dataset == "mapped":
        if spec is None:
            raise click.UsageError("--dataset mapped needs --data SPEC (a transactions file with item_id mapped)")
        from offerlab.data.spec import SpecData, parse_sets

        return SpecData.load(spec, parse_sets(sets)).table("lines"), None
    raise click.UsageError(f"unknown dataset {dataset!r}: synth, groceries or mapped")


def holdout(L: Lines) -> dict[str, np.ndarray]:
    """Each customer's basket times; the last (held out) and second-to-last (validation) basket per customer."""
    first = np.r_[True, L.order[1:] != L.order[:-1]]
    bc, bt, bo = L.cust[first], L.t[first], L.order[first]
    n_c = len(L.customers)
    n_b = np.bincount(bc, minlength=n_c)
    last_idx = np.searchsorted(bc, np.arange(n_c), side="right") - 1
    test_cut = np.where(n_b >= 2, bt[np.maximum(last_idx, 0)], np.nan)
    test_order = np.where(n_b >= 2, bo[np.maximum(last_idx, 0)], -1)
    val_cut = np.where(n_b >= 3, bt[np.maximum(last_idx - 1, 0)], np.nan)
    val_order = np.where(n_b >= 3, bo[np.maximum(last_idx - 1, 0)], -1)
    return {"n_baskets": n_b, "test_cut": test_cut, "test_order": test_order, "val_cut": val_cut,
            "val_order": val_order}


def truth_matrix(L: Lines, sel: np.ndarray, rows: np.ndarray) -> sp.csr_matrix:
    """Multi-hot (rows x items) of the masked lines, rows = customer codes."""
    pos = np.full(len(L.customers), -1)
    pos[rows] = np.arange(len(rows))
    r = pos[L.cust[sel]]
    ok = r >= 0
    m = sp.csr_matrix((np.ones(ok.sum()), (r[ok], L.item[sel][ok])), shape=(len(rows), len(L.items)))
    m.data[:] = 1.0
    return m


# ------------------------------------------------------------------------------------------------ oracle
def oracle_scores(L: Lines, truth: dict, cut: np.ndarray, horizon: float = 0.0) -> np.ndarray:
    """(customer x item) truth scores at per-customer cut times: P(the item is in the next basket), from P(a
    regular item is due by cut + horizon | not bought at the baskets since its last purchase) and the one-off
    process (the next order's category from the true preferences and repeat probability, items by popularity)."""
    from offerlab.data.synth import ITEM_CATALOGUE
    from offerlab.data.synth_items import NEED_SD

    n_c, n_i = len(L.customers), len(L.items)
    hist = L.before(cut)
    last_basket = np.full(n_c, -np.inf)
    np.maximum.at(last_basket, L.cust[hist], L.t[hist])
    ti = truth["items"]
    c = L.customers.get_indexer(ti["customer_id"])
    i = L.items.get_indexer(ti["item_id"])
    ok = (c >= 0) & (i >= 0)
    c, i = c[ok], i[ok]
    cycle = ti["unit_cycle_days"].to_numpy()[ok]
    start = days(ti["start_at"])[ok]
    stop_ts = ti["stop_at"].to_numpy()[ok]
    stop = np.where(pd.isna(stop_ts), np.inf, days(pd.Series(stop_ts).fillna(pd.Timestamp("2262-01-01"))))
    last_t = np.full((n_c, n_i), np.nan)
    last_q = np.ones((n_c, n_i))
    srt = np.argsort(L.t[hist], kind="stable")
    hc, hi, ht, hq = L.cust[hist][srt], L.item[hist][srt], L.t[hist][srt], L.qty[hist][srt]
    last_t[hc, hi] = ht  # later lines overwrite earlier ones
    last_q[hc, hi] = hq
    t_l, q_l = last_t[c, i], last_q[c, i]
    until = cut[c] + horizon
    prev = last_basket[c]

    def cdf(x):
        z = (np.log(np.maximum(x - t_l, 1e-9) / (q_l * cycle)) + 0.5 * NEED_SD**2) / NEED_SD
        return np.where(x > t_l, stats.norm.cdf(z), 0.0)

    due = np.where(np.isnan(t_l), ((start > prev) & (start <= until)).astype(float),
                   (cdf(until) - cdf(prev)) / np.maximum(1.0 - cdf(prev), 1e-12))
    due = np.where((stop <= np.maximum(prev, start)) | ~np.isfinite(cut[c]), 0.0, np.clip(due, 0.0, 1.0))
    tt = truth["timing"].set_index("customer_id").reindex(L.customers)
    cats = list(ITEM_CATALOGUE["category"].drop_duplicates())
    prefs = tt[[f"p_cat_{k}" for k in cats]].to_numpy()
    cat_of = ITEM_CATALOGUE.set_index("item_id").reindex(L.items)
    code = pd.Categorical(cat_of["category"], categories=cats).codes
    # the next order's category: the last one's with p_repeat_cat, else a fresh draw from the preferences; its
    # anchor item (when no due item covers it) by popularity in the category, plus the extra one-off
    tx = truth["transactions"]
    t_tx = days(tx["timestamp"])
    c_tx = L.customers.get_indexer(tx["customer_id"])
    ok_tx = (c_tx >= 0) & (t_tx < np.where(c_tx >= 0, cut[np.maximum(c_tx, 0)], -np.inf))
    last_cat = pd.Series(pd.Categorical(tx["category"], categories=cats).codes[ok_tx]).groupby(
        c_tx[ok_tx]).last().reindex(range(n_c)).fillna(-1).to_numpy().astype(int)
    rep = tt["p_repeat_cat"].to_numpy()
    p_cat = (1 - rep)[:, None] * prefs
    has = last_cat >= 0
    p_cat[np.flatnonzero(has), last_cat[has]] += rep[has]
    pop = cat_of["popularity"].to_numpy()[None, :]
    from offerlab.data.synth_items import EXTRA_ONE_OFF_P

    one_off = 1 - (1 - p_cat[:, code] * pop) * (1 - EXTRA_ONE_OFF_P * prefs[:, code] * pop)
    due_m = np.zeros((n_c, n_i))
    np.maximum.at(due_m, (c, i), due)
    return 1 - (1 - due_m) * (1 - one_off)


# ------------------------------------------------------------------------------------------------ runs
def _peer_scores(L: Lines, mask: np.ndarray, cut: np.ndarray, tifu: dict | None = None) -> dict[str, np.ndarray]:
    vec = peers.tifu_vectors(L, mask)
    t = tifu or {"alpha": 0.9, "k": 300}
    return {"g_topfreq": peers.g_topfreq(L, mask), "p_topfreq": peers.p_topfreq(L, mask),
            "tifu_knn": peers.tifu_knn(L, mask, t["alpha"], t["k"], vectors=vec),
            "buy_it_again": peers.buy_it_again(L, mask, np.nan_to_num(cut, nan=L.t.max()))}


def tune_tifu(L: Lines, h: dict) -> dict:
    """TIFU-KNN's alpha and k by recall@10 on the second-to-last baskets (the held-out ones unseen)."""
    rows = np.flatnonzero(h["val_order"] >= 0)
    if len(rows) < 20:
        return {"alpha": 0.9, "k": 300, "tuned_on": 0}
    mask = L.before(h["val_cut"])
    truth = truth_matrix(L, L.order == h["val_order"][L.cust], rows)
    vec = peers.tifu_vectors(L, mask)
    means = peers.neighbour_means(vec, peers.TIFU_GRID["k"])
    best = None
    for a in peers.TIFU_GRID["alpha"]:
        for k in peers.TIFU_GRID["k"]:
            s = peers.tifu_knn(L, mask, a, k, vectors=vec, means=means)
            r = ranking_metrics(top_k_dense(s, rows, 10), truth)["recall_at_10"]
            if best is None or r > best[0]:
                best = (r, a, k)
    return {"alpha": best[1], "k": best[2], "tuned_on": int(len(rows)), "val_recall_at_10": round(best[0], 4)}


def run_bench(lines: pd.DataFrame, truth: dict | None, cfg: BasketConfig, progress: bool = False,
              models: tuple[str, ...] = MODELS) -> dict:
    L = Lines.from_frame(lines)
    h = holdout(L)
    results: dict[str, dict] = {m: {} for m in models}
    seconds: dict[str, float] = dict.fromkeys(models, 0.0)
    if truth is not None:
        results["oracle"] = {}
    # next-basket protocol
    rows = np.flatnonzero(h["test_order"] >= 0)
    test_mask = L.before(h["test_cut"])
    truth_next = truth_matrix(L, L.order == h["test_order"][L.cust], rows)
    seen = truth_matrix(L, test_mask, rows)
    click.echo(f"next basket: {len(rows):,} customers with a held-out basket, {len(L.items):,} items")
    t0 = time.perf_counter()
    tifu = tune_tifu(L, h) if "tifu_knn" in models else None
    if "tifu_knn" in models:
        seconds["tifu_knn"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = _peer_scores(L, test_mask, h["test_cut"], tifu)
    per_peer = (time.perf_counter() - t0) / 4
    for name, s in scores.items():
        if name in models:
            results[name].update(ranking_metrics(top_k_dense(s, rows, 20), truth_next, seen))
            seconds[name] += per_peer
    fill = np.argsort(-scores["g_topfreq"][0])
    if "offerlab" in models:
        t0 = time.perf_counter()
        end = np.where(np.isnan(h["test_cut"]), np.inf, h["test_cut"])
        m = BasketModel(cfg).fit(L, protocol="next", end=end, progress=progress)
        pred = m.predict(L, h["test_cut"])
        top = top_k_candidates(pred.cust, pred.item, pred.extra["p_next"], rows, 20, fill)
        results["offerlab"].update(ranking_metrics(top, truth_next, seen))
        results["offerlab"]["fit_report_next"] = m.fit_report
        seconds["offerlab"] += time.perf_counter() - t0
        click.echo(f"  offerlab next-basket recall@10 {results['offerlab']['recall_at_10']:.4f} "
                   f"({seconds['offerlab']:.0f}s)")
    if truth is not None:
        results["oracle"].update(ranking_metrics(top_k_dense(oracle_scores(L, truth, h["test_cut"]), rows, 20),
                                                 truth_next, seen))
    # time-aware protocol
    t_end = np.floor(L.t.max()) + 1.0
    cut_t = t_end - 30.0
    cut = np.full(len(L.customers), cut_t)
    mask = L.before(cut)
    active = np.flatnonzero(np.bincount(L.cust[mask], minlength=len(L.customers)) > 0)
    after = L.t - cut_t
    windows = {f"{w}d": truth_matrix(L, (after >= 0) & (after < w), active) for w in (7, 30)}
    click.echo(f"time-aware: cut-off day {pd.Timestamp(cut_t * 86_400e9):%Y-%m-%d}, {len(active):,} customers")
    t0 = time.perf_counter()
    scores = _peer_scores(L, mask, cut, tifu)
    per_peer = (time.perf_counter() - t0) / 4
    for name, s in scores.items():
        if name in models:
            top = top_k_dense(s, active, 10)
            for w, tm in windows.items():
                results[name].update(window_metrics(top, tm, w))
            seconds[name] += per_peer
    if "offerlab" in models:
        t0 = time.perf_counter()
        m = BasketModel(cfg).fit(L, protocol="window", end=cut_t, progress=progress)
        pred = m.predict(L, cut)
        for w, tm in windows.items():
            j = HORIZONS.index(int(w[:-1]))
            top = top_k_candidates(pred.cust, pred.item, pred.extra["p_within"][:, j], active, 10, fill)
            results["offerlab"].update(window_metrics(top, tm, w))
        results["offerlab"]["fit_report_window"] = m.fit_report
        seconds["offerlab"] += time.perf_counter() - t0
    if truth is not None:
        for w, tm in windows.items():
            top = top_k_dense(oracle_scores(L, truth, cut, float(w[:-1])), active, 10)
            results["oracle"].update(window_metrics(top, tm, w))
    oracle = results.pop("oracle", None)
    return {
        "task": "basket", "protocol": __doc__.split("Protocols:")[1].strip().split("\nOn synthetic")[0],
        "models": results, "oracle": oracle, "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "tifu_knn_params": tifu,
        "data": {"lines": int(len(L.t)), "baskets": int(L.order.max() + 1), "customers": int(len(L.customers)),
                 "items": int(len(L.items)), "customers_next_basket": int(len(rows)),
                 "has_quantity": L.has_quantity, "has_amount": L.has_amount},
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }


def summary_rows(report: dict) -> list[str]:
    rows = [f"{'model':<14}{'rec@10':>8}{'rec@20':>8}{'ndcg@10':>9}{'phr@10':>8}{'rep@10':>8}{'exp@10':>8}"
            f"{'t-rec7':>8}{'t-rec30':>8}{'sec':>7}"]
    entries = list(report["models"].items()) + ([("oracle", report["oracle"])] if report.get("oracle") else [])
    for name, m in entries:
        def f(k, m=m):
            v = m.get(k)
            return f"{v:8.4f}" if isinstance(v, float) else f"{'-':>8}"
        sec = report["seconds"].get(name)
        rows.append(f"{name:<14}{f('recall_at_10')}{f('recall_at_20')} {f('ndcg_at_10')}{f('phr_at_10')}"
                    f"{f('recall_at_10_repeat')}{f('recall_at_10_explore')}{f('time_recall_7d')}"
                    f"{f('time_recall_30d')}{(f'{sec:7.1f}' if sec is not None else '      -')}")
    return rows


@click.command("basket")
@click.option("--dataset", type=click.Choice(["synth", "groceries", "mapped"]), required=True)
@click.option("--data", "data_spec", default=None, type=click.Path(dir_okay=False),
              help="mapped: the data spec whose transactions file maps item_id (a row per order line).")
@click.option("--data-set", "data_sets", multiple=True, metavar="KEY=VALUE", help="Override a data spec key.")
@click.option("--data-path", default=None, help="groceries: the folder holding Groceries_dataset.csv "
              "(default: OFFERLAB_DATA_DIR).")
@click.option("--customers", type=click.IntRange(min=50), default=20_000, show_default=True, help="synth only.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the basket net's epochs.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the benchmark JSON.")
@click.option("--progress/--no-progress", default=False, show_default=True)
def bench(dataset: str, data_spec: str | None, data_sets: tuple[str, ...], data_path: str | None, customers: int,
          seed: int, epochs: int | None, out: str, progress: bool) -> None:
    """Next-basket and time-aware protocols: ours, G-TopFreq, P-TopFreq, TIFU-KNN and Buy It Again (and the
    oracle on synthetic data), in one run.

    \b
    Examples:
      offerlab bench basket --dataset synth --customers 20000 --out basket_synth.json
      offerlab bench basket --dataset groceries --out basket_groceries.json
      offerlab bench basket --dataset mapped --data mydata.yaml --out basket_mine.json
    """
    click.echo(f"loading {dataset} lines")
    lines, truth = load_lines(dataset, customers=customers, seed=seed, data_path=data_path, spec=data_spec,
                              sets=data_sets)
    cfg = BasketConfig(seed=seed)
    if epochs is not None:
        cfg.epochs = epochs
    t0 = time.perf_counter()
    report = run_bench(lines, truth, cfg, progress=progress)
    report["dataset"] = dataset
    report["seed"] = seed
    if dataset == "synth":
        report["data"]["synth_customers"] = customers
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1, default=float) + "\n")
    click.echo("\n".join(summary_rows(report)))
    click.echo(f"wrote {out}")
