"""Targeted campaign log, truth known: naive arm means, the naive fit and the doubly robust fit against the truth.

The synthetic marketplace's previous campaign was targeted (`synth.generate(..., campaign_assignment="targeted")`):
the CRM sent deeper discounts to recent, frequent buyers, who convert anyway. On each data seed's 70/30 split:
(a) naive means: per level, the test arm's mean minus the control arm's (conversion, realised profit per customer);
(b) naive fit: our model told the log is randomised (assignment "randomised", the arm shares as the known design),
    and evaluated as a randomised log (IPW with the arm shares, every test row);
(c) ours: the targeted path (cross-fitted propensities, trimming, first stage with estimated propensities, the
    DR-learner second stage), evaluated with estimated propensities on the test rows inside the common support;
    beside it ours without the second stage (`ours_first_stage`), and, as a control, the same model on the
    randomised campaign of the same marketplace (`randomised_reference`: the error a fit makes without confounding).
Per level the error of the estimated average effect (mean true conversion uplift and incremental profit over the
test customers: all of them, and those inside the common support), the true profit of each model's budgeted policy
as a share of the oracle's and the observable oracle's, and each policy value estimate beside its truth.

python scripts/bench_targeted.py --customers 50000 --data-seeds 0 1 2 3 4 --out experiments/results/uplift_targeted.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from offerlab.data.synth import synth_to_dir
from offerlab.uplift.bench import _agg, evaluation_propensity, load_campaign, oracle_gap, score_split
from offerlab.uplift.config import load_config
from offerlab.uplift.data import CampaignData, stratified_split
from offerlab.uplift.model import UpliftModel
from offerlab.uplift.policy import level_economics, observed_profit
from offerlab.uplift.propensity import assignment_check

log = logging.getLogger("bench_targeted")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "uplift" / "synth_targeted.yaml"


def as_randomised(data: CampaignData) -> CampaignData:
    """The log as a naive analyst reads it: randomised, with the arm shares as the known design."""
    out = data.subset(np.arange(len(data)))
    out.assignment = "randomised"
    out.propensity = np.tile(np.bincount(data.treatment, minlength=len(data.levels)) / len(data), (len(data), 1))
    return out


def true_levels(truth, levels: list[str], d: np.ndarray, policy) -> tuple[np.ndarray, np.ndarray]:
    conv = np.stack([truth[f"p_conv_{lv}"].to_numpy() for lv in levels], axis=1)
    rev = np.stack([truth[f"exp_revenue_{lv}"].to_numpy() for lv in levels], axis=1)
    profit, _ = level_economics(rev, d, policy.margin, policy.contact_cost)
    return conv[:, 1:] - conv[:, :1], profit[:, 1:]


def effects(pred: dict, d: np.ndarray, policy) -> tuple[np.ndarray, np.ndarray]:
    """A model's per-customer conversion uplift and incremental profit of each treated level."""
    profit, _ = level_economics(pred["revenue"], d, policy.margin, policy.contact_cost)
    return pred["conversion"][:, 1:] - pred["conversion"][:, :1], profit[:, 1:]


def effect_block(levels: list[str], est: dict, truth: dict) -> dict:
    """{"conversion_uplift" | "incremental_profit": {level: {rows: {estimate, truth, error}}}}."""
    out: dict = {}
    for k in ("conversion_uplift", "incremental_profit"):
        out[k] = {lv: {rows: {"estimate": float(est[rows][k][j]), "truth": float(truth[rows][k][j]),
                              "error": float(est[rows][k][j] - truth[rows][k][j])} for rows in truth}
                  for j, lv in enumerate(levels[1:])}
    return out


def one_seed(cfg, data_seed: int, n_customers: int, workdir: Path) -> dict:
    synth_dir = workdir / f"synth_{data_seed}"
    synth_to_dir(n_customers, data_seed, synth_dir, campaign_assignment="targeted")
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"synth_dir": str(synth_dir)})})
    data, truth, meta = load_campaign(cfg)
    if data.assignment != "targeted":
        raise RuntimeError(f"the loaded log says assignment {data.assignment!r}, not 'targeted'")
    policy, levels = cfg.policy, data.levels
    d = policy.discount_rates(levels, data.discounts)
    tr, te = stratified_split(data, cfg.data.test_size, data_seed, cfg.data.metric_outcome)
    train, test = data.subset(tr), data.subset(te)
    t_test = truth.iloc[te].reset_index(drop=True)
    ev = evaluation_propensity(train, test, cfg.net.propensity_folds, data_seed, cfg.net.min_propensity)
    inside = ev["inside_test"]
    p_true = np.stack([t_test[f"assign_p_{lv}"].to_numpy() for lv in levels], axis=1)
    truly_outside = p_true.min(axis=1) < cfg.net.min_propensity
    rows = {"all": np.arange(len(test)), "overlap": np.flatnonzero(inside)}
    tc, tp = true_levels(t_test, levels, d, policy)
    truth_eff = {r: {"conversion_uplift": tc[ix].mean(0), "incremental_profit": tp[ix].mean(0)} for r, ix in rows.items()}

    # (a) naive means: every test row, arm against control
    y_profit = observed_profit(test.treatment, test.revenue, d, policy.margin, policy.contact_cost)
    arm = [test.treatment == j for j in range(len(levels))]
    naive = {"conversion_uplift": np.array([test.conversion[a].mean() - test.conversion[arm[0]].mean() for a in arm[1:]]),
             "incremental_profit": np.array([y_profit[a].mean() - y_profit[arm[0]].mean() for a in arm[1:]])}
    out: dict = {"average_effect": {"naive_means": effect_block(levels, {r: naive for r in rows}, truth_eff)}}

    # (b) naive fit, (c) ours; and ours without the DR second stage (what the second stage adds)
    seconds, policies, reports = {}, {}, {}
    for name in ("naive_fit", "ours"):
        t0 = time.perf_counter()
        model = UpliftModel(cfg.net, cfg.trainer, seed=data_seed).fit(as_randomised(train) if name == "naive_fit"
                                                                      else train)
        seconds[name] = time.perf_counter() - t0
        reports[name] = model.fit_report
        variants = {name: model}
        if name == "ours":
            first = copy.copy(model)
            first.dr_correction = {}
            variants["ours_first_stage"] = first
        for vname, m in variants.items():
            pred = m.predict_levels(test.features)
            cu, ip = effects(pred, d, policy)
            est = {r: {"conversion_uplift": cu[ix].mean(0), "incremental_profit": ip[ix].mean(0)} for r, ix in rows.items()}
            out["average_effect"][vname] = effect_block(levels, est, truth_eff)
            # the policy: true profit share of the oracles on every test row and on the overlap rows
            block = {r: oracle_gap({k: v[ix] for k, v in pred.items()}, test.subset(ix),
                                   t_test.iloc[ix].reset_index(drop=True), policy, d, cfg.budget_shares)
                     for r, ix in rows.items()}
            policies[vname] = {"oracle": block}
            # its value off-policy: as the naive analyst evaluates it (randomised, arm shares, every row) and
            # as the targeted protocol does (estimated propensities, overlap rows); each beside its truth
            protocols = {"targeted_protocol": score_split(m, train, test, policy, cfg.data.metric_outcome, t_test,
                                                          meta, cfg.budget_shares, propensity=ev)}
            if vname == "naive_fit":
                protocols["randomised_protocol"] = score_split(m, as_randomised(train), as_randomised(test), policy,
                                                               cfg.data.metric_outcome, t_test, meta, cfg.budget_shares)
            for pname, res in protocols.items():
                ix = rows["overlap" if pname == "targeted_protocol" else "all"]
                true_value = _true_value(res, m, test, t_test, ix, d, policy)
                policies[vname][pname] = {
                    "rows": "overlap" if pname == "targeted_protocol" else "all", "true_value": true_value,
                    **{k: res[k] for k in ("policy_value", "policy_value_dr", "policy_value_snipw") if k in res},
                    **{f"{k}_error": res[k] - true_value for k in ("policy_value", "policy_value_dr",
                                                                   "policy_value_snipw") if k in res},
                    **{f"{k}_ci": res[f"{k}_ci"] for k in ("policy_value", "policy_value_dr", "policy_value_snipw")
                       if res.get(f"{k}_ci") is not None},
                    **{f"{k}_ci_covers_truth": float(res[f"{k}_ci"][0] <= true_value <= res[f"{k}_ci"][1])
                       for k in ("policy_value", "policy_value_dr", "policy_value_snipw")
                       if res.get(f"{k}_ci") is not None},
                    "share_treated": res["share_treated"]}
    out["policy"] = policies
    out["trimming"] = {
        "train_share_trimmed_by_ours": reports["ours"]["trimmed"]["share"],
        "test_share_outside": float(1 - inside.mean()),
        "test_share_truly_outside": float(truly_outside.mean()),
        "test_precision": float(truly_outside[~inside].mean()) if (~inside).any() else float("nan"),
        "test_recall": float((~inside)[truly_outside].mean()) if truly_outside.any() else float("nan"),
        "true_min_propensity_of_trimmed_median": float(np.median(p_true[~inside].min(axis=1))) if (~inside).any()
        else float("nan"),
    }
    out["propensity_estimate"] = {"test_mean_abs_error": float(np.abs(ev["test"] - p_true).mean())}
    check = assignment_check(train.features, train.treatment, levels, cfg.net.propensity_folds, data_seed)
    out["assignment_check"] = {k: check[k] for k in ("auc", "threshold", "verdict", "overlap_share")}
    out["average_effect"]["randomised_reference"] = randomised_reference(cfg, data_seed, n_customers, workdir)
    out["fit_report"] = reports["ours"]
    out["seconds"] = seconds
    return out


def randomised_reference(cfg, data_seed: int, n_customers: int, workdir: Path) -> dict:
    """The same model on the randomised campaign of the same marketplace (same seed): its average-effect error
    over its test rows, the part of any fit's error that is not confounding (shrinkage, noise)."""
    synth_dir = workdir / f"synth_{data_seed}_randomised"
    synth_to_dir(n_customers, data_seed, synth_dir)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"synth_dir": str(synth_dir)})})
    data, truth, _ = load_campaign(cfg)
    d = cfg.policy.discount_rates(data.levels, data.discounts)
    tr, te = stratified_split(data, cfg.data.test_size, data_seed, cfg.data.metric_outcome)
    model = UpliftModel(cfg.net, cfg.trainer, seed=data_seed).fit(data.subset(tr))
    test = data.subset(te)
    cu, ip = effects(model.predict_levels(test.features), d, cfg.policy)
    tc, tp = true_levels(truth.iloc[te].reset_index(drop=True), data.levels, d, cfg.policy)
    est = {"all": {"conversion_uplift": cu.mean(0), "incremental_profit": ip.mean(0)}}
    return effect_block(data.levels, est, {"all": {"conversion_uplift": tc.mean(0), "incremental_profit": tp.mean(0)}})


def _true_value(res: dict, model, test: CampaignData, t_test, ix: np.ndarray, d: np.ndarray, policy) -> float:
    """True incremental profit per customer of the model's unconstrained policy on rows `ix`."""
    if "policy_value_true" in res.get("oracle", {}):
        return res["oracle"]["policy_value_true"]
    pred = model.predict_levels(test.features.iloc[ix].reset_index(drop=True))
    profit, spend = level_economics(pred["revenue"], d, policy.margin, policy.contact_cost)
    choice = np.argmax(profit, axis=1)  # the unconstrained choice of `choose_levels`: column 0 scores 0
    _, tp = true_levels(t_test.iloc[ix].reset_index(drop=True), test.levels, d, policy)
    tp = np.concatenate([np.zeros((len(ix), 1)), tp], axis=1)
    return float(tp[np.arange(len(ix)), choice].mean())


def headline(result: dict) -> dict:
    """Per method: per level the mean error over data seeds (the bias) and its std, the mean absolute error over
    seeds and levels; the oracle shares; the policy value estimates' errors."""
    per_seed = result["per_seed"]
    out: dict = {}
    for method, block in result["aggregate"]["average_effect"].items():
        out[method] = {}
        for k in ("conversion_uplift", "incremental_profit"):
            for rows in block[k][next(iter(block[k]))]:
                errs = np.array([[r["average_effect"][method][k][lv][rows]["error"] for lv in block[k]]
                                 for r in per_seed])
                out[method][f"{k}_{rows}"] = {
                    "bias_by_level": dict(zip(block[k], errs.mean(0).round(4).tolist(), strict=True)),
                    "std_by_level": dict(zip(block[k], errs.std(0, ddof=1).round(4).tolist(), strict=True))
                    if len(errs) > 1 else None,
                    "mean_abs_error": round(float(np.abs(errs).mean()), 4)}
    for method, block in result["aggregate"]["policy"].items():
        for pname in ("targeted_protocol", "randomised_protocol"):
            if pname in block:
                out[method][f"policy_value_{pname}"] = {
                    k: v["mean"] if isinstance(v, dict) else v for k, v in block[pname].items()
                    if k.startswith(("policy_value", "true_value"))}
        for rows in ("all", "overlap"):
            out[method][f"share_of_oracle_{rows}"] = {b: v["share_of_oracle"]["mean"]
                                                      for b, v in block["oracle"][rows]["profit_share"].items()}
            out[method][f"share_of_observable_oracle_{rows}"] = {
                b: v["share_of_observable_oracle"]["mean"] for b, v in block["oracle"][rows]["profit_share"].items()}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/uplift_targeted.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = load_config(args.config)
    t0 = time.perf_counter()
    per_seed = []
    with tempfile.TemporaryDirectory(prefix="bench_targeted_") as tmp:
        for s in args.data_seeds:
            per_seed.append(one_seed(cfg, s, args.customers, Path(tmp)))
            ae = per_seed[-1]["average_effect"]
            log.info("data seed %d: conversion uplift error (overlap) naive means %s, naive fit %s, ours %s", s,
                     *[[round(v["overlap"]["error"], 4) for v in ae[m]["conversion_uplift"].values()]
                       for m in ("naive_means", "naive_fit", "ours")])
    result = {
        "task": "uplift_targeted", "dataset": "synth (targeted campaign)", "customers": args.customers,
        "data_seeds": args.data_seeds,
        "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
        "config": {"file": str(args.config), "net": cfg.net.model_dump(), "trainer": cfg.trainer.model_dump(),
                   "policy": cfg.policy.model_dump(), "budget_shares": cfg.budget_shares},
        "aggregate": _agg([{k: v for k, v in r.items() if k != "fit_report"} for r in per_seed]),
        "fit_report_first_seed": per_seed[0]["fit_report"],
        "per_seed": per_seed,
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    result["headline"] = headline(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{args.out.name}.", dir=args.out.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=1, default=float)
    os.replace(tmp_path, args.out)
    print(json.dumps(result["headline"], indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
