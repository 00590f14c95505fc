"""`offerlab bench timing`: ours and the BTYD peers on one calibration/holdout split, one JSON out.

Every model sees only the transactions up to the calibration end (the holdout is filtered away before
fitting, not merely ignored) and is scored on the same customers (those with a purchase by the cutoff)
with the same metric code. On synthetic data an `oracle` block compares our holdout log-likelihood and
30-day Brier with those of the true generating process.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from offerlab.timing.baselines import PEERS, end_of_day
from offerlab.timing.data import build_examples
from offerlab.timing.metrics import evaluate_predictions, holdout_truth, horizon_days
from offerlab.timing.train import CONFIG_DIR, NeuralTPP, TimingConfig, load_config

log = logging.getLogger(__name__)
DEFAULT_SPLITS = {"cdnow": ("1997-09-30", "1998-06-30"), "synth": ("2024-06-30", "2024-12-31")}
MODEL_NAMES = ("offerlab", "bg_nbd", "pareto_nbd", "naive")


def load_bench_data(dataset: str, data_path: str | None = None, mapping: str | None = None,
                    synth_dir: str | None = None, customers: int = 20_000, seed: int = 0, *,
                    spec: str | None = None, spec_set: dict | None = None):
    """Transactions plus, for synthetic data, the timing truth (else None). `spec`: a data spec's transactions."""
    if spec is not None or dataset == "spec":
        from offerlab.data.spec import SpecData

        if spec is None:
            raise ValueError("dataset 'spec' needs data.spec (a data spec YAML; --data on the command line)")
        return SpecData.load(spec, spec_set).table("transactions"), None
    if dataset == "synth":
        from offerlab.data.synth import generate, load_synth

        d = load_synth(synth_dir) if synth_dir else generate(customers, seed=seed)
        return d.transactions, d.truth_timing
    from offerlab.data.loaders import load_dataset

    return load_dataset(dataset, data_path, mapping), None


def load_bench_lines(dataset: str, synth_dir: str | None = None, customers: int = 20_000, seed: int = 0, *,
                     spec: str | None = None, spec_set: dict | None = None) -> pd.DataFrame | None:
    """The order lines (items) of the same data, where it has them: the synthetic marketplace's, a data spec's
    line-level transactions file (item_id mapped); else None (the timing model is trained without a basket)."""
    if spec is not None or dataset == "spec":
        from offerlab.data.spec import SpecData

        sd = SpecData.load(spec, spec_set)
        return sd.table("lines") if "item_id" in sd.spec.tables["transactions"].columns else None
    if dataset == "synth":
        from offerlab.data.synth import FILES, generate

        if synth_dir:
            path = Path(synth_dir) / FILES["lines"]
            return pd.read_parquet(path) if path.is_file() else None
        return generate(customers, seed=seed).lines
    return None


def split_dates(dataset: str, transactions: pd.DataFrame, calibration_end: str | None,
                holdout_end: str | None) -> tuple[str, str]:
    """The protocol's dates for known data sets; a user's data must name them (or they are refused)."""
    cal, end = DEFAULT_SPLITS.get(dataset, (None, None))
    cal, end = calibration_end or cal, holdout_end or end
    if cal is None or end is None:
        raise ValueError(f"dataset {dataset!r} has no default split: pass --calibration-end and --holdout-end")
    cal_ts, end_ts = pd.Timestamp(cal), pd.Timestamp(end)
    if end_ts <= cal_ts:
        raise ValueError(f"--holdout-end {end} must be after --calibration-end {cal}")
    first, last = transactions["timestamp"].min(), transactions["timestamp"].max()
    if cal_ts < first.normalize():
        raise ValueError(f"--calibration-end {cal} is before the first transaction ({first.date()})")
    if end_ts > last.normalize():
        log.warning("holdout end %s is after the last transaction (%s)", end, last.date())
    return str(cal_ts.date()), str(end_ts.date())


def oracle_block(model: NeuralTPP, transactions: pd.DataFrame, truth: pd.DataFrame, cutoff: str, holdout_end: str,
                 pred: pd.DataFrame, holdout: pd.DataFrame) -> dict:
    """Holdout NLL per gap and 30-day Brier: ours vs the true process, on the same gaps and customers."""
    from offerlab.data.synth import true_gap_logpdf, true_prob_purchase_within

    p = model.predictor
    start, end = end_of_day(cutoff), end_of_day(holdout_end)
    seqs = p.sequences(transactions[transactions["timestamp"] <= end], end)
    ex, _ = build_examples(seqs, end, p.stats, use_calendar=p.use_calendar, age_inputs=p.age_inputs,
                           validation_start=start)
    ours = holdout_step_nll(p, ex)
    used = ex.weight > 0
    tr = truth.set_index("customer_id").reindex(pd.Index(ex.customer_ids))
    cust = np.repeat(np.arange(ex.n_customers), ex.lengths)[used]
    rows = tr.iloc[cust]
    gaps, cens, e0 = ex.target_gap[used], ex.censored[used], ex.elapsed_start[used]
    true_ll = true_gap_logpdf(rows, gaps, cens) - true_gap_logpdf(rows, e0, np.ones_like(cens))
    tr_pred = truth.set_index("customer_id").reindex(pred.index)
    elapsed = model.state.elapsed.numpy()
    p30_true = true_prob_purchase_within(tr_pred, elapsed, 30.0)
    bought = (holdout["first_days"].reindex(pred.index) <= 30).to_numpy()
    nll_ours, nll_true = float(np.mean(ours[used])), float(-np.mean(true_ll))
    brier_ours = float(np.mean((pred["p_within"].to_numpy() - bought) ** 2))
    brier_true = float(np.mean((p30_true - bought) ** 2))
    return {
        "nll_per_gap": nll_ours, "nll_per_gap_true": nll_true,
        "nll_gap_relative": (nll_ours - nll_true) / abs(nll_true),
        "brier_30d": brier_ours, "brier_30d_true": brier_true, "n_gaps": int(used.sum()),
    }


@torch.no_grad()
def holdout_step_nll(predictor, ex) -> np.ndarray:
    """Per-step censored NLL (left-truncated at the cutoff) under the ensemble (mean of member likelihoods)."""
    from offerlab.timing.distributions import censored_gap_nll

    out = np.zeros(ex.n_events)
    order = np.argsort(ex.lengths, kind="stable")
    for start in range(0, ex.n_customers, 1024):  # batches of customers, vectorised inside
        idx = order[start:start + 1024]
        b = ex.padded(idx)
        lls = []
        for m in predictor.models:
            h, _ = m.encode(b["inputs"], b["category"], b.get("static"))
            lls.append(-censored_gap_nll(m.gap_distribution(h), b["target_gap"], b["censored"], b.get("elapsed_start")))
        ll = torch.logsumexp(torch.stack(lls), 0) - np.log(len(lls))
        flat = ex.offsets[idx][:, None] + np.arange(b["mask"].shape[1])[None, :]
        mask = b["mask"].numpy()
        out[flat[mask]] = -ll.numpy()[mask]
    return out


def bare_gru_events_per_second(hidden: int = 64, seconds: float = 3.0, batch: int = 1024, length: int = 16) -> float:
    """Forward+backward+Adam events/s of a bare `nn.GRU` (the issue's yardstick), measured here and now.

    The machine is shared, so absolute events/s swing with the load; the ratio of ours to this, measured
    in the same process minutes apart, is the figure that compares across runs.
    """
    gen = torch.Generator().manual_seed(0)
    gru = torch.nn.GRU(10, hidden, batch_first=True)
    x = torch.randn(batch, length, 10, generator=gen)
    opt = torch.optim.Adam(gru.parameters())
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:  # timed repetitions of one batch
        out, _ = gru(x)
        out.sum().backward()
        opt.step()
        opt.zero_grad()
        n += 1
    return n * batch * length / (time.perf_counter() - t0)


def load_bench_returns(d) -> pd.DataFrame | None:
    """The returns table the timing data config `d` asks for: a data spec's (its `tables.returns`; `data.returns`
    must then say net or keep), the synthetic marketplace's with `data.returns: net`; None for keep or no table."""
    table = None
    if d.spec is not None or d.dataset == "spec":
        from offerlab.data.spec import SpecData

        sd = SpecData.load(d.spec, d.spec_set)
        if sd.has("returns"):
            if d.returns is None:
                raise ValueError("the data has a returns table: set semantics.returns in the data spec (or "
                                 "data.returns in the timing config): net (an order returned in full is no purchase "
                                 "and a partly returned one counts at its net amount) or keep (ignore returns)")
            table = sd.table("returns")
    elif d.dataset == "synth" and d.returns == "net":
        from offerlab.data.synth import FILES, generate

        if d.synth_dir:
            path = Path(d.synth_dir) / FILES.get("returns", "returns.parquet")
            table = pd.read_parquet(path) if path.is_file() else None
        else:
            table = generate(d.customers, seed=d.seed).returns
    if d.returns == "net" and table is None:
        raise ValueError(f"data.returns is net but the {d.dataset} data has no returns table")
    return table if d.returns == "net" else None


def apply_returns(tx: pd.DataFrame, returns: pd.DataFrame | None, calibration_end: str
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(calibration transactions, transactions to evaluate on), net of returns when a returns table is given: the
    calibration period knows only the returns made by its end; the holdout's purchases are net of all returns."""
    from offerlab.timing.returns import net_of_returns

    cut = end_of_day(calibration_end)
    calib = tx[tx["timestamp"] <= cut]
    if returns is None:
        return calib, tx
    calib, _ = net_of_returns(calib, returns, cut)
    holdout, _ = net_of_returns(tx[tx["timestamp"] > cut], returns)
    return calib, pd.concat([calib, holdout], ignore_index=True)


def run_bench(dataset: str, out: str | Path, *, data_path: str | None = None, mapping: str | None = None,
              calibration_end: str | None = None, holdout_end: str | None = None, synth_dir: str | None = None,
              customers: int = 20_000, seed: int = 0, config: str | Path | None = None,
              models: tuple[str, ...] = MODEL_NAMES, cfg_overrides: dict | None = None,
              progress: bool | None = None, spec: str | None = None, spec_set: dict | None = None) -> dict:
    """Fit and score every model on one split and write the DESIGN.md JSON (atomically) to `out`.

    `spec`: a data spec YAML whose transactions are the data (its protocol dates are the split unless
    `calibration_end` / `holdout_end` are given); `dataset` is then only the label of the results."""
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected some of {list(MODEL_NAMES)}")
    if config is None and spec is not None:
        config = CONFIG_DIR / "default.yaml"
    if config is None:
        named = CONFIG_DIR / f"{dataset}.yaml"
        config = named if named.is_file() else (CONFIG_DIR / "default.yaml" if CONFIG_DIR.is_dir() else None)
    cfg: TimingConfig = load_config(config, cfg_overrides)
    if spec is not None:
        from offerlab.data.spec import SpecData

        sd = SpecData.load(spec, spec_set)
        sd.require("timing")
        dataset = sd.name if dataset in (None, "spec") else dataset
        cal0, end0 = sd.protocol_dates()
        calibration_end, holdout_end = calibration_end or cal0, holdout_end or end0
        tx, truth = sd.table("transactions"), None
    else:
        tx, truth = load_bench_data(dataset, data_path, mapping, synth_dir, customers, seed)
    cal, end = split_dates(dataset, tx, calibration_end, holdout_end)
    cfg.data.calibration_end, cfg.data.holdout_end = cal, end
    returns = load_bench_returns(cfg.data.model_copy(update={"dataset": "spec" if spec else dataset, "spec": spec,
                                                              "spec_set": spec_set or {}, "synth_dir": synth_dir,
                                                              "customers": customers, "seed": seed}))
    calib, tx = apply_returns(tx, returns, cal)
    if calib.empty:
        raise ValueError(f"no transactions on or before the calibration end {cal}")
    horizon = horizon_days(cal, end)
    results, seconds, extra = {}, {}, {}
    truth_table = None
    for name in models:
        t0 = time.perf_counter()
        model = NeuralTPP(cfg, progress) if name == "offerlab" else PEERS[name](same_day=cfg.data.same_day)
        model.fit(calib, cal)
        pred = model.predict(horizon, 30.0)
        seconds[name] = round(time.perf_counter() - t0, 2)
        if truth_table is None:
            truth_table = holdout_truth(tx, cal, end, pred.index, cfg.data.same_day)
        results[name] = evaluate_predictions(pred, truth_table, horizon)
        log.info("%s: %s (%.1fs)", name, {k: round(v, 4) for k, v in results[name].items()}, seconds[name])
        if name == "offerlab":
            info = model.fit_info
            ref = bare_gru_events_per_second()
            extra["offerlab_training"] = {
                "events_per_second": round(info["events_per_second"]), "train_seconds": round(info["train_seconds"], 1),
                "bare_gru64_events_per_second": round(ref),
                "events_per_second_vs_bare_gru64": round(info["events_per_second"] / ref, 3),
                "simulate_seconds": round(info.get("simulate_seconds", 0.0), 1), "best_epochs": info["best_epochs"],
                "n_train_events": info["n_train_events"], "n_customers": info["n_customers"],
                "seeds": cfg.training.seeds, "torch_threads": torch.get_num_threads(),
                "count_head_seconds": round(info.get("count_head_seconds", 0.0), 1),
            }
            if truth is not None:
                extra["oracle"] = oracle_block(model, tx, truth, cal, end, pred, truth_table)
            extra["categories"] = category_accuracy(model, calib, tx, cal, end)
    peers = [m for m in results if m not in ("offerlab", "naive")]
    report = {
        "task": "timing",
        "dataset": dataset,
        "protocol": f"calibration to {cal} (inclusive), holdout to {end} ({horizon:.0f} days); purchases = "
                    f"{'distinct purchase days' if cfg.data.same_day == 'merge' else 'transactions'} per customer; "
                    f"customers with a purchase by the calibration end ({len(truth_table)}); P(any) and the "
                    f"C-index risk score = P(purchase in the holdout); 30d = first 30 days of the holdout",
        "models": results,
        "oracle": extra.get("oracle"),
        "seconds": seconds,
        "training": extra.get("offerlab_training"),
        "best_peer": _best_peer(results, peers),
        "top3_categories": extra.get("categories"),
        "config": cfg.model_dump(mode="json", exclude={"trainer_profiles"}),
    }
    _write_json_atomic(report, Path(out))
    return report


def category_accuracy(model: NeuralTPP, calib: pd.DataFrame, tx: pd.DataFrame, cal: str, end: str) -> dict | None:
    """How often the category of each customer's first holdout purchase is among the timing model's top 3, against
    the customer's own 3 most frequent categories (filled with the most popular) and the 3 most popular ones."""
    p = model.predictor
    if not p.categories or "category" not in tx.columns:
        return None
    probs = p.category_probs(model.state)
    cats = np.asarray(p.categories, dtype=object)
    ours = pd.DataFrame(cats[np.argsort(-probs, axis=1)[:, :3]], index=pd.Index(model.state.customer_ids))
    hold = tx[(tx["timestamp"] > end_of_day(cal)) & (tx["timestamp"] <= end_of_day(end))]
    first = hold.sort_values("timestamp", kind="stable").drop_duplicates("customer_id").set_index("customer_id")
    first = first["category"][first.index.isin(ours.index)]
    if first.empty:
        return None
    pop = calib["category"].value_counts().index[:3].tolist()
    counts = calib.groupby(["customer_id", "category"]).size().rename("n").reset_index()
    counts["rank"] = counts.groupby("customer_id")["n"].rank(method="first", ascending=False) - 1
    fill = pd.DataFrame({"customer_id": np.repeat(first.index.to_numpy(), 3), "category": pop * len(first),
                         "rank": np.tile(np.arange(3.0, 6.0), len(first))})
    lists = pd.concat([counts.loc[counts["rank"] < 3, ["customer_id", "category", "rank"]], fill])
    lists = lists.sort_values(["customer_id", "rank"], kind="stable").drop_duplicates(["customer_id", "category"])
    lists = lists[lists.groupby("customer_id").cumcount() < 3]
    target = first.rename("category").reset_index()
    own_hit = len(target.merge(lists, on=["customer_id", "category"])) / len(target)
    ours_long = ours.loc[first.index].reset_index(names="customer_id").melt("customer_id", value_name="category")
    return {"customers": int(len(first)),
            "offerlab_top3_hit": len(target.merge(ours_long, on=["customer_id", "category"])) / len(target),
            "personal_top3_hit": own_hit, "popular_top3_hit": float(first.isin(pop).mean()),
            "offerlab_top1_hit": float(np.mean(ours.loc[first.index, 0].to_numpy() == first.to_numpy()))}


def _best_peer(results: dict, peers: list[str]) -> dict:
    """Per metric, the best peer value (lower for errors, higher for AUC / C)."""
    higher = {"auc_holdout", "auc_30d", "c_index"}
    best = {}
    for k in ("count_mae", "count_rmse", "auc_holdout", "brier_holdout", "auc_30d", "brier_30d", "c_index"):
        vals = [results[p][k] for p in peers if p in results]
        if vals:
            best[k] = max(vals) if k in higher else min(vals)
    return best


def _write_json_atomic(obj: dict, out: Path) -> None:
    """Write to a temp file beside `out` and rename: a failed run never leaves a half-written result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=float)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
