"""The credit benchmark (DESIGN.md): ours and the peers on the same seeded stratified folds.

Every model is fitted on the training folds only (including its feature encoding and calibration)
and scores the held-out fold; metrics are taken on the pooled out-of-fold predictions, plus the
per-fold AUC mean and std. On synthetic data the oracle is `true_pd_observable`, E[true PD | what
the tables show at the application] (the generator's exact posterior over the latent spend level,
purchase regularity and risk noise): the best PD any model can reach, so `auc_gap` = its AUC - ours.
Beside it, for reference: `true_pd_traits` (knows the latent traits, averages only the noise) and
the raw `true_pd` (noise included); no model on the tables can reach either.

Repayments show part of the risk noise (generator v4: lateness follows it), so once the features see them
(`data.payments`, `rep_*`) the best PD from observable data is `true_pd_observable_payments`, E[true PD | the same
and the repayment record before applied_at]: the oracle whose gap is reported then; `true_pd_observable` (purchases
only) stays beside it. `payments_comparison` runs ours and LightGBM with and without those features on the same
folds.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from offerlab.credit.baselines import PEERS
from offerlab.credit.config import CreditConfig
from offerlab.credit.data import application_features
from offerlab.credit.metrics import auc, credit_metrics, delong_paired
from offerlab.credit.model import CreditModel, EpochProgress

log = logging.getLogger(__name__)
AUC_ORACLE_GAP_TARGET, ECE_TARGET_SYNTH, ECE_TARGET_REAL = 0.01, 0.01, 0.03
SECONDS_RATIO_TARGET = 3.0  # at 25k applications and more: ours' fit time at most 3x LightGBM's


@dataclass
class BenchData:
    """Applications with labels, their feature rows, and (synthetic only) the true and oracle PDs."""

    name: str
    applications: pd.DataFrame
    X: pd.DataFrame
    y: np.ndarray
    true_pd: np.ndarray | None = None  # the PD the default was drawn from (includes unobservable noise)
    oracle_pd: np.ndarray | None = None  # the best PD from observable information (true_pd_observable)
    traits_pd: np.ndarray | None = None  # the PD given the latent traits, noise averaged (true_pd_traits)
    payments_pd: np.ndarray | None = None  # the best PD once repayments are seen (true_pd_observable_payments)

    @property
    def uses_payments(self) -> bool:
        return any(c.startswith(("ret_", "rep_")) for c in self.X.columns)


def _truth_column(truth: pd.DataFrame, ids: pd.Series, column: str) -> np.ndarray:
    if column not in truth.columns:
        raise ValueError(f"truth_credit has no column {column!r}: regenerate the synthetic data (generator v2+)")
    values = truth.set_index("application_id")[column].reindex(ids).to_numpy()
    if np.isnan(values).any():
        raise ValueError(f"truth_credit lacks {column!r} for some applications")
    return values


TX_COLUMNS = ("customer_id", "timestamp", "amount", "category")  # what the behaviour features read


PAYMENT_TX_COLUMNS = ("order_id", "payment_method")  # what the return and payment-mix features read beside


def read_synth_payments(folder: str | Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(returns, repayments) of a synthetic folder, None for a folder written before generator version 4."""
    import pyarrow.parquet as pq

    from offerlab.data.synth import FILES

    folder = Path(folder)
    out = []
    for name, dict_cols in (("returns", ["customer_id"]), ("repayments", ["customer_id"])):
        path = folder / FILES[name]
        out.append(pq.read_table(path, read_dictionary=dict_cols).to_pandas() if path.is_file() else None)
    return out[0], out[1]


def read_synth_credit(folder: str | Path, payments: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(applications, transactions, truth_credit) of a synthetic folder, and nothing else of it.

    Transactions come with only the columns the features read and with customer ids and categories as
    categoricals (arrow dictionaries): a million customers' 14.7M purchases take about 0.3 GB this way, where
    every table of the folder with string ids took over 4 GB.
    """
    import pyarrow.parquet as pq

    from offerlab.data.synth import FILES

    folder = Path(folder)
    paths = {name: folder / FILES[name] for name in ("applications", "transactions", "truth_credit")}
    for name, path in paths.items():
        if not path.is_file():
            raise ValueError(f"synthetic data folder {folder}: {FILES[name]} is missing (table '{name}')")
    have = set(pq.read_schema(paths["transactions"]).names)
    cols = [c for c in TX_COLUMNS + (PAYMENT_TX_COLUMNS if payments else ()) if c in have]
    tx = pq.read_table(paths["transactions"], columns=cols,
                       read_dictionary=[c for c in ("customer_id", "category", "payment_method") if c in have]
                       ).to_pandas()
    return pq.read_table(paths["applications"]).to_pandas(), tx, pq.read_table(paths["truth_credit"]).to_pandas()


def load_bench_data(cfg: CreditConfig) -> BenchData:
    """The labelled applications the protocol runs on: German credit, synthetic, or a mapped file."""
    d = cfg.data
    if d.dataset == "synth":
        from offerlab.data.synth import generate

        if d.synth_dir:
            apps, tx, truth = read_synth_credit(d.synth_dir, d.payments)
            returns, repayments = read_synth_payments(d.synth_dir) if d.payments else (None, None)
        else:
            s = generate(d.customers, seed=d.seed)
            apps, tx, truth = s.applications, s.transactions, s.truth_credit
            returns, repayments = (s.returns, s.repayments) if d.payments else (None, None)
            if not d.payments:
                tx = tx.drop(columns=["payment_method"], errors="ignore")
        apps = apps.reset_index(drop=True)
        true_pd = _truth_column(truth, apps["application_id"], "true_pd")
        oracle_pd, traits_pd = (_truth_column(truth, apps["application_id"], c)
                                for c in ("true_pd_observable", "true_pd_traits"))
        payments_pd = (_truth_column(truth, apps["application_id"], "true_pd_observable_payments")
                       if "true_pd_observable_payments" in truth.columns else None)
        X = application_features(apps, tx, returns=returns, repayments=repayments)
        del tx, returns, repayments
        return BenchData("synth", apps, X, apps["default"].to_numpy(), true_pd, oracle_pd, traits_pd, payments_pd)
    if d.dataset == "spec":
        from offerlab.data.spec import SpecData

        if d.spec is None:
            raise ValueError("dataset 'spec' needs data.spec (a data spec YAML; --data on the command line)")
        sd = SpecData.load(d.spec, d.spec_set)
        apps = sd.labelled_applications().reset_index(drop=True)
        tx = sd.table("transactions") if sd.has("transactions") else None
        name = sd.name
        if d.payments and (sd.has("returns") or sd.has("repayments")):
            returns = sd.table("returns") if sd.has("returns") and tx is not None else None
            repayments = sd.table("repayments") if sd.has("repayments") else None
            y = apps["default"].to_numpy() if "default" in apps.columns else None
            if y is not None and y.min() != y.max():
                X = application_features(apps, tx, returns=returns, repayments=repayments)
                return BenchData(name, apps, X, y)
        elif tx is not None and not d.payments:
            tx = tx.drop(columns=["payment_method"], errors="ignore")
    elif d.dataset == "mapped" or d.mapping:
        from offerlab.data.loaders import load_mapped, read_mapping

        if not d.mapping:
            raise ValueError("dataset 'mapped' needs a column-mapping YAML (--mapping)")
        if read_mapping(d.mapping).table != "applications":
            raise ValueError(f"the column mapping {d.mapping} must fill table 'applications' for the credit bench")
        apps = load_mapped(d.data_path, d.mapping).reset_index(drop=True)
        name, tx = (Path(d.data_path).stem if d.data_path else "mapped"), None
    else:
        from offerlab.data.loaders import load_german

        apps = load_german(d.data_path).reset_index(drop=True)
        name, tx = "german", None
    if "default" not in apps.columns:
        raise ValueError("table 'applications', column 'default': the benchmark needs known outcomes (0/1)")
    y = apps["default"].to_numpy()
    if y.min() == y.max():
        raise ValueError("table 'applications', column 'default': only one class present; need both 0 and 1")
    return BenchData(name, apps, application_features(apps, tx), y)


def cross_validate(
    make: Callable[[], object], X: pd.DataFrame, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
    name: str = "model", fit_kwargs: dict | None = None, fit_reports: list | None = None,
) -> tuple[np.ndarray, list[float], float]:
    """Pooled out-of-fold PDs, per-fold AUCs and seconds for one model factory; one log line per fold.

    `fit_kwargs` go to every `fit` (ours: callbacks); a model's `fit_report` is appended to `fit_reports`.
    """
    t0 = time.perf_counter()
    oof = np.full(len(y), np.nan)
    fold_auc = []
    for k, (tr, te) in enumerate(folds):
        t_fold = time.perf_counter()
        model = make().fit(X.iloc[tr], y[tr], **(fit_kwargs or {}))
        oof[te] = model.predict_pd(X.iloc[te])
        fold_auc.append(auc(y[te], oof[te]))
        secs = time.perf_counter() - t_fold
        if fit_reports is not None and hasattr(model, "fit_report"):
            fit_reports.append({"fold": k, "seconds": round(secs, 1), **model.fit_report})
        log.info("bench credit: %s fold %d/%d: AUC %.4f, %.1f s", name, k + 1, len(folds), fold_auc[-1], secs)
    return oof, fold_auc, time.perf_counter() - t0


def model_factories(cfg: CreditConfig) -> dict[str, Callable[[], object]]:
    """Ours first, then the configured peers; each call builds a fresh, unfitted model."""
    out: dict[str, Callable[[], object]] = {"offerlab": partial(CreditModel, cfg.net, cfg.trainer, seed=cfg.seed)}
    for name in cfg.evaluation.peers:
        out[name] = partial(PEERS[name], seed=cfg.seed) if name == "lightgbm" else PEERS[name]
    return out


def _peak_rss_gb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)  # Linux: kB


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_bench(cfg: CreditConfig, progress: bool | None = None, data: BenchData | None = None) -> dict:
    """Run the protocol and return the DESIGN.md JSON (as a dict).

    `progress`: a bar over folds x epochs of ours (None: only on a terminal); one log line per fold and model
    either way. A peer that fails is recorded as failed and the run goes on. The JSON also holds each model's
    per-fold AUCs, the paired DeLong comparison of ours with each peer, ours' fit per fold, the machine's
    load average before and after, and the process's peak memory.
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    load_before, t_start = _load(), time.perf_counter()
    data = data if data is not None else load_bench_data(cfg)
    load_seconds, rss_after_load = time.perf_counter() - t_start, _peak_rss_gb()
    e = cfg.evaluation
    folds = list(StratifiedKFold(e.folds, shuffle=True, random_state=e.fold_seed).split(data.X, data.y))
    models, seconds, oofs, fit_reports, failed = {}, {}, {}, [], {}
    n_fits = CreditModel(cfg.net, cfg.trainer).n_fits()
    for name, make in model_factories(cfg).items():
        log.info("bench credit: %s on %s (%d rows, %d folds)", name, data.name, len(data.y), e.folds)
        ours = name == "offerlab"
        total = e.folds * n_fits * cfg.trainer.max_epochs
        with tqdm(total=total, desc=f"{name} (folds x epochs)", unit="epoch", disable=(not ours) or (
                  None if progress is None else not progress), leave=False) as bar, logging_redirect_tqdm():
            kwargs = {"callbacks": [EpochProgress(bar, cfg.trainer.max_epochs)]} if ours and not bar.disable else {}
            try:
                oof, fold_auc, secs = cross_validate(make, data.X, data.y, folds, name, kwargs,
                                                     fit_reports if ours else None)
            except Exception as err:  # a peer that fails on these data is reported, and the run stands
                if ours:
                    raise
                log.warning("bench credit: %s failed: %s", name, err)
                failed[name] = f"{type(err).__name__}: {err}"[:500]
                continue
        oofs[name] = oof
        models[name] = {**credit_metrics(data.y, oof), "auc_fold": {
            "mean": float(np.mean(fold_auc)), "std": float(np.std(fold_auc)), "values": [float(a) for a in fold_auc]}}
        seconds[name] = round(secs, 1)
    ours = models["offerlab"]
    peers = {k: v for k, v in models.items() if k != "offerlab"}
    best_peer = max(peers, key=lambda k: peers[k]["auc"]) if peers else None
    oracle = None
    targets: dict = {}
    if data.oracle_pd is not None:
        seen = data.payments_pd if data.uses_payments and data.payments_pd is not None else data.oracle_pd
        oracle = oracle_report(data.y, ours["auc"], {"oracle": seen, "observable": data.oracle_pd,
                                                     "observable_payments": data.payments_pd,
                                                     "traits_pd": data.traits_pd, "true_pd": data.true_pd})
        oracle["oracle"] = ("true_pd_observable_payments = E[true PD | application, customer, purchases and repayments "
                            "before applied_at]" if seen is data.payments_pd else oracle["oracle"])
        targets = {"auc_gap_max": AUC_ORACLE_GAP_TARGET, "ece_max": ECE_TARGET_SYNTH,
                   "met": bool(oracle["auc_gap"] <= AUC_ORACLE_GAP_TARGET and ours["ece"] <= ECE_TARGET_SYNTH)}
    if best_peer:
        margin = ours["auc"] - peers[best_peer]["auc"]
        ece_max = ECE_TARGET_SYNTH if data.true_pd is not None else ECE_TARGET_REAL
        targets.update({"best_peer": best_peer, "auc_minus_best_peer": margin, "ece_max": ece_max})
        if data.true_pd is None:
            targets["met"] = bool(margin >= 0 and ours["ece"] <= ece_max)
    if "lightgbm" in models:
        ratio = seconds["offerlab"] / max(seconds["lightgbm"], 1e-9)
        targets.update({"auc_minus_lightgbm": ours["auc"] - models["lightgbm"]["auc"],
                        "seconds_over_lightgbm": round(ratio, 2), "seconds_over_lightgbm_max": SECONDS_RATIO_TARGET})
    return {
        "task": "credit",
        "dataset": data.name,
        "protocol": (f"stratified {e.folds}-fold CV (shuffle, seed {e.fold_seed}), same folds for every model; "
                     "metrics on pooled out-of-fold PDs; ECE over 10 equal-count bins; citl = observed - mean PD"),
        "rows": int(len(data.y)),
        "default_rate": float(data.y.mean()),
        "features": int(data.X.shape[1]),
        "models": models,
        "failed": failed,
        "oracle": oracle,
        "targets": targets,
        "paired": {name: paired_comparison(data.y, oofs["offerlab"], oofs[name], models["offerlab"], models[name])
                   for name in peers},
        "seconds": seconds,
        "fit": fit_reports,
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": _load(),
                    "data_seconds": round(load_seconds, 1), "peak_rss_gb_after_data": rss_after_load,
                    "peak_rss_gb": _peak_rss_gb()},
        "config": cfg.source,
    }


def payments_comparison(cfg: CreditConfig, progress: bool | None = None) -> dict:
    """Ours and LightGBM with and without the return, payment-mix and repayment features (`ret_*`, `rep_*`) on the
    same folds: AUC, ECE and the gap to both observable oracles (purchases only; purchases and repayments)."""
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"payments": True}),
                                 "evaluation": cfg.evaluation.model_copy(update={"peers": ["lightgbm"]})})
    data = load_bench_data(cfg)
    if not data.uses_payments:
        raise ValueError("the data have no returns, payment_method or repayments: nothing to compare")
    plain = BenchData(data.name, data.applications, data.X.drop(columns=[c for c in data.X.columns
                                                                        if c.startswith(("ret_", "rep_"))]),
                      data.y, data.true_pd, data.oracle_pd, data.traits_pd, data.payments_pd)
    runs = {"without": run_bench(cfg, progress, plain), "with": run_bench(cfg, progress, data)}
    summary = {}
    for key, r in runs.items():
        o = r["oracle"] or {}
        summary[key] = {"features": r["features"], **{
            f"{m}_{k}": r["models"][m][k] for m in r["models"] for k in ("auc", "ece")},
            "auc_oracle_observable": o.get("auc_observable"), "auc_oracle_observable_payments":
            o.get("auc_observable_payments"), "seconds": r["seconds"]}
        for m in r["models"]:
            for ref in ("observable", "observable_payments"):
                if o.get(f"auc_{ref}") is not None:
                    summary[key][f"{m}_gap_{ref}"] = o[f"auc_{ref}"] - r["models"][m]["auc"]
    return {"task": "credit", "dataset": data.name, "comparison": "with and without return and repayment features",
            "rows": int(len(data.y)), "summary": summary,
            "gain_auc": {m: summary["with"][f"{m}_auc"] - summary["without"][f"{m}_auc"] for m in runs["with"]["models"]},
            "runs": runs}


def paired_comparison(y: np.ndarray, ours: np.ndarray, peer: np.ndarray, ours_m: dict, peer_m: dict) -> dict:
    """Ours minus a peer on the same rows: pooled AUC difference with its DeLong standard error, 95 % interval
    and two-sided p-value, and the per-fold AUC differences (the fold-level evidence)."""
    d = delong_paired(y, ours, peer)
    diffs = np.subtract(ours_m["auc_fold"]["values"], peer_m["auc_fold"]["values"])
    return {**d, "fold_differences": [round(float(v), 5) for v in diffs], "folds_ours_better": int((diffs > 0).sum()),
            "fold_difference_mean": float(diffs.mean()), "fold_difference_std": float(diffs.std())}


def oracle_report(y: np.ndarray, our_auc: float, pds: dict[str, np.ndarray | None]) -> dict:
    """AUC gap to each reference PD; the first ("oracle": the best from observable data) is the target."""
    out: dict = {"oracle": "true_pd_observable = E[true PD | application, customer, purchases before applied_at]"}
    for name, p in pds.items():
        if p is None:
            continue
        m = credit_metrics(y, p)
        gap_key = "auc_gap" if name == "oracle" else f"auc_gap_{name}"
        out.update({f"auc_{name}": m["auc"], gap_key: m["auc"] - our_auc, f"brier_{name}": m["brier"],
                    f"ece_{name}": m["ece"]})
    return out


def write_json_atomic(result: dict, out: str | Path) -> Path:
    """Write to a temporary file beside `out` and rename, so a failed run leaves old results intact."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=1, default=float)
            f.write("\n")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
