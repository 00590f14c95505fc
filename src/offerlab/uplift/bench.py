"""`offerlab bench uplift`: ours and the CausalML meta-learners on the same splits, one JSON out.

Protocol (DESIGN.md): stratified (treatment x outcome) 70/30 splits over several seeds; each model is
fitted on the 70% and scored on the 30% with one metric implementation (`metrics.py`): Qini
coefficient, Qini area, AUUC and uplift@30% per treatment vs control; the unconstrained policy's
incremental profit per customer off-policy (IPW and doubly robust, 95% CI) beside treat-none and the
best single level (picked on the training split). On the synthetic campaign the ground truth adds
the oracle block: true profit of our budgeted policy as a share of the oracle policy's at budgets
that are shares of the oracle's unconstrained spend, and the RMSE of the estimated uplift per level;
and a reference, `feature_oracle` (LightGBM fitted to the noise-free truth of the training rows), which
measures how much of the oracle the features can reach at all (the oracle knows latent traits). The
observable oracle (`synth.campaign_truth_observable`: the truth's expectation given what the tables show,
from the generator's own posterior) is the fair ceiling: each model's profit is also reported as a share of it.

A campaign that logs returns, under a policy that counts them (`policy.returns`), is scored on profit net of
returns throughout: the observed profit on kept revenue, the truth from `exp_returned_<level>` (and `p_return_<level>`
for a handling cost). A model that predicts no returns (the peers) gets the split's `ReturnModel` fitted on the
training rows. The oracle block then carries `returns`: the same model's policy with returns counted against the
same predictions with returns ignored, at the same budgets, both valued on the true profit net of true returns.

A targeted (non-randomised) log without known propensities is evaluated with estimated ones, the same for every
model (`evaluation_propensity`: cross-fitted on the training rows, a classifier fitted on them for the test rows),
on the test rows inside the common support only (every level's estimated probability >= the net's
`min_propensity`): policy value by IPW, self-normalised IPW and DR; the per-split JSON says so ("assignment",
"propensity", "trimmed"). Qini and AUUC there still compare the arms as logged (confounded); the truth-based
numbers (oracle block, true policy value) are the ones to read.
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

from offerlab.uplift.config import UpliftConfig
from offerlab.uplift.data import CampaignData, stratified_split
from offerlab.uplift.metrics import per_treatment_metrics
from offerlab.uplift.policy import (
    PolicyConfig,
    best_single_level,
    choose_levels,
    control_profit,
    evaluate_policy,
    level_economics,
    observed_profit,
)

log = logging.getLogger(__name__)
PEERS = ("s_learner", "t_learner", "x_learner")
OBSERVABLE = "observable_"  # truth columns of the observable oracle, E[truth | the tables] (synthetic data)


def load_campaign(cfg: UpliftConfig) -> tuple[CampaignData, pd.DataFrame | None, dict]:
    """The configured campaign, with `data.campaign_logs` stacked onto it (each with its own probabilities); for
    synthetic data without extra logs also the truth table aligned to its rows, and meta."""
    data, truth, meta = _load_base_campaign(cfg)
    if not cfg.data.campaign_logs:
        return data, truth, meta
    from offerlab.campaign.logs import combine_logs, read_log

    logs = [(f"{cfg.data.dataset} campaign", data)] + [(Path(p).name, read_log(p)) for p in cfg.data.campaign_logs]
    combined, _ = combine_logs(logs, min_propensity=cfg.net.min_propensity, seed=cfg.seed)
    return combined, None, meta  # the truth describes the base campaign's rows only


def _load_base_campaign(cfg: UpliftConfig) -> tuple[CampaignData, pd.DataFrame | None, dict]:
    from offerlab.uplift import data as D

    dc = cfg.data
    if dc.dataset == "hillstrom":
        from offerlab.data.loaders import load_hillstrom

        return D.from_hillstrom(load_hillstrom(dc.data_path), dc.outcome), None, {}
    if dc.dataset == "synth":
        from offerlab.data.synth import campaign_truth_observable, generate, load_synth

        synth = load_synth(dc.synth_dir) if dc.synth_dir else generate(dc.customers, seed=dc.synth_seed)
        camp = D.from_synth(synth)
        ids = camp.customer_id.astype(str)
        truth = synth.truth_campaign.set_index("customer_id").loc[ids].reset_index()
        observable = campaign_truth_observable(synth).set_index("customer_id").loc[ids].reset_index(drop=True)
        truth = pd.concat([truth, observable.add_prefix(OBSERVABLE)], axis=1)
        return camp, truth, dict(synth.meta)
    if dc.dataset == "spec":
        from offerlab.data.spec import SpecData

        if dc.spec is None:
            raise ValueError("dataset 'spec' needs data.spec (a data spec YAML; --data on the command line)")
        return SpecData.load(dc.spec, dc.spec_set).campaign_data(), None, {}
    if dc.mapping is None:
        raise ValueError("dataset 'mapped' needs data.mapping (a column-mapping YAML) and data.data_path")
    from offerlab.data.loaders import load_mapped, read_mapping

    m = read_mapping(dc.mapping)
    if m.table != "campaign":
        raise ValueError(f"the column mapping {dc.mapping} fills table {m.table!r}; the uplift bench needs 'campaign'")
    if m.control is None:
        raise ValueError(f"the column mapping {dc.mapping} names no control level: set control (the level that got "
                         "no offer)")
    camp = load_mapped(dc.data_path, dc.mapping)
    levels = [m.control] + [lv for lv in (m.treatments or sorted(set(camp["treatment"].astype(str))))
                            if lv != m.control]
    rates = cfg.policy.discount_rates(levels)
    if (rates > 0).any():  # a bare mapping cannot say whether revenue is net or gross of the discount
        raise ValueError("a campaign with discounts needs its revenue semantics declared (net of the discount or "
                         "list price): describe it in a data spec (--data SPEC, semantics.revenue)")
    return D.from_campaign(camp, control=m.control, levels=levels, discounts=dict(zip(levels, rates.tolist(),
                                                                                      strict=True))), None, {}


def make_model(name: str, cfg: UpliftConfig, seed: int):
    if name == "offerlab":
        from offerlab.uplift.model import UpliftModel

        return UpliftModel(cfg.net, cfg.trainer, seed=seed)
    from offerlab.uplift.baselines import MetaLearner

    return MetaLearner(name, seed=seed)


def evaluation_propensity(train: CampaignData, test: CampaignData, folds: int = 5, seed: int = 0,
                          min_propensity: float | None = None) -> dict | None:
    """The estimated propensities every model of a split is evaluated with, for a targeted log that carries none
    (None otherwise): training rows cross-fitted, test rows from the classifier fitted on all training rows, and
    which rows of each lie inside the common support."""
    if train.assignment != "targeted" or train.propensity is not None:
        return None
    from offerlab.uplift.propensity import MIN_PROPENSITY, PropensityModel, cross_fitted_propensity, overlap_mask

    m = MIN_PROPENSITY if min_propensity is None else min_propensity
    n_levels = len(train.levels)
    e_train = cross_fitted_propensity(train.features, train.treatment, n_levels, folds, seed)
    e_test = PropensityModel.fit(train.features, train.treatment, n_levels, seed).predict(test.features)
    return {"train": e_train, "test": e_test, "inside_train": overlap_mask(e_train, m),
            "inside_test": overlap_mask(e_test, m), "min_propensity": m,
            "source": f"estimated (cross-fitted, {folds} folds)"}


def snipw_policy_value(choice: np.ndarray, treatment: np.ndarray, profit_obs: np.ndarray, propensity: np.ndarray
                       ) -> tuple[float, list[float]]:
    """Self-normalised IPW incremental profit per customer of a policy over treat-none, with a 95% CI from its
    linearisation: each arm's weighted mean sum(w y) / sum(w) (Hajek), so large weights cannot inflate the level."""
    rows = np.arange(len(choice))
    w_pi = (treatment == choice) / propensity[rows, choice]
    w_0 = (treatment == 0) / propensity[:, 0]
    v_pi, v_0 = (w_pi * profit_obs).sum() / w_pi.sum(), (w_0 * profit_obs).sum() / w_0.sum()
    psi = w_pi * (profit_obs - v_pi) / w_pi.mean() - w_0 * (profit_obs - v_0) / w_0.mean()
    value = float(v_pi - v_0)
    se = float(psi.std(ddof=1) / np.sqrt(len(psi)))
    return value, [value - 1.959964 * se, value + 1.959964 * se]


def score_split(model, train: CampaignData, test: CampaignData, policy: PolicyConfig, metric_outcome: str,
                truth: pd.DataFrame | None = None, meta: dict | None = None, budget_shares=(0.1, 0.3, 1.0),
                propensity: dict | None = None) -> dict:
    """Every bench number of one fitted model on one split (per-level dicts; no aggregation).

    A targeted log without known propensities is scored with `propensity` (`evaluation_propensity`; estimated
    here when not given) on the test rows inside the common support."""
    if propensity is None:
        propensity = evaluation_propensity(train, test)
    pred = model.predict_levels(test.features)
    if policy.counts_returns and "returned" not in pred:  # a model without its own return part: the split's
        from offerlab.uplift.returns import ReturnModel

        pred = ReturnModel(seed=0).fit(train).add_to(pred, test.features)
    if propensity is not None:
        keep_test, keep_train = np.flatnonzero(propensity["inside_test"]), np.flatnonzero(propensity["inside_train"])
        pred = {k: v[keep_test] for k, v in pred.items()}
        n_test = len(test)
        test, train = test.subset(keep_test), train.subset(keep_train)
        truth = None if truth is None else truth.iloc[keep_test].reset_index(drop=True)
    uplift = pd.DataFrame(pred[metric_outcome][:, 1:] - pred[metric_outcome][:, :1], columns=test.levels[1:])
    out: dict = per_treatment_metrics(uplift, test.treatment_names, test.outcome(metric_outcome), test.control)
    d = policy.discount_rates(test.levels, test.discounts)
    profit, spend = policy.matrices_at(pred, d)
    choice, used = choose_levels(profit, spend)
    mu = control_profit(pred, policy)[:, None] + profit  # expected absolute profit per level (for DR)
    if propensity is not None:
        e_test, e_train = propensity["test"][keep_test], propensity["train"][keep_train]
    else:
        e_test = test.propensity if test.propensity is not None else model.predict_propensity(test.features)
        e_train = train.propensity if train.propensity is not None else model.predict_propensity(train.features)
    y_test, y_train = (observed_profit(x.treatment, x.revenue, d, policy.margin, policy.contact_cost,
                                       *_logged_returns(x, policy)) for x in (test, train))
    best = best_single_level(train.treatment, y_train, e_train)
    out.update(evaluate_policy(choice, test.treatment, y_test, e_test, mu, test.levels, best))
    out["level_share"] = {lv: float((choice == i).mean()) for i, lv in enumerate(test.levels)}
    if propensity is not None:
        out["policy_value_snipw"], out["policy_value_snipw_ci"] = snipw_policy_value(choice, test.treatment, y_test,
                                                                                     e_test)
        out["assignment"], out["propensity"] = "targeted", propensity["source"]
        out["trimmed"] = {"test_rows": n_test - len(keep_test), "test_share": 1.0 - len(keep_test) / n_test,
                          "min_propensity": propensity["min_propensity"]}
    if truth is not None:
        out["oracle"] = oracle_gap(pred, test, truth, policy, d, budget_shares)
        if propensity is not None:  # what the off-policy estimates above estimate, from the truth
            out["oracle"]["policy_value_true"] = true_policy_value(choice, test.levels, truth, policy, d)
    return out


def _logged_returns(data: CampaignData, policy: PolicyConfig) -> tuple[np.ndarray | None, float]:
    """(returned revenue, handling cost) the observed profit counts: the log's returns when the policy counts them."""
    if not policy.counts_returns:
        return None, 0.0
    return data.returned_revenue, float(policy.returns.handling_cost)


def _truth_stack(truth: pd.DataFrame, name: str, levels: list[str], prefix: str = "") -> np.ndarray | None:
    cols = [f"{prefix}{name}_{lv}" for lv in levels]
    return truth[cols].to_numpy(dtype=float) if all(c in truth for c in cols) else None


def true_matrices(truth: pd.DataFrame, levels: list[str], policy: PolicyConfig, d: np.ndarray, prefix: str = ""
                  ) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """True incremental profit and spend (n, L) from the truth's expected revenue per level, net of the truth's
    expected returns when the policy counts them (`exp_returned_<level>`; `p_return_<level>` for a handling cost).
    With `prefix` (the observable oracle's columns) (None, None) where the truth lacks a column; without it a
    missing column is refused."""
    rev = _truth_stack(truth, "exp_revenue", levels, prefix)
    returned = p_ret = None
    handling = float(policy.returns.handling_cost) if policy.counts_returns else 0.0
    if policy.counts_returns:
        returned = _truth_stack(truth, "exp_returned", levels, prefix)
        p_ret = _truth_stack(truth, "p_return", levels, prefix) if handling > 0 else None
    missing = (rev is None or (policy.counts_returns and returned is None) or (handling > 0 and p_ret is None))
    if missing:
        if prefix:
            return None, None
        need = "exp_revenue_<level>" + (", exp_returned_<level>" if policy.counts_returns else "") + (
            ", p_return_<level>" if handling > 0 else "")
        raise ValueError(f"the campaign truth lacks columns for the policy's economics: need {need} for levels "
                         f"{levels}")
    return level_economics(rev, d, policy.margin, policy.contact_cost, returned, p_ret, handling)


def true_policy_value(choice: np.ndarray, levels: list[str], truth: pd.DataFrame, policy: PolicyConfig,
                      d: np.ndarray) -> float:
    """True expected incremental profit per customer over treat-none of giving each customer `choice`."""
    t_profit, _ = true_matrices(truth, levels, policy, d)
    return float(t_profit[np.arange(len(choice)), choice].mean())


def oracle_gap(pred: dict, test: CampaignData, truth: pd.DataFrame, policy: PolicyConfig, d: np.ndarray,
               budget_shares=(0.1, 0.3, 1.0)) -> dict:
    """True profit of our budgeted policy / the oracle's, and uplift RMSE per level, on the test rows.

    Two oracles pick levels under the same budget: the oracle knows each customer's true expected outcomes
    (latent traits included); the observable oracle (where the truth carries `observable_*` columns) knows
    their expectation given what the tables show, the best any model on these features could do."""
    obs_profit, obs_spend = true_matrices(truth, test.levels, policy, d, prefix=OBSERVABLE)
    true_conv = np.stack([truth[f"p_conv_{lv}"].to_numpy() for lv in test.levels], axis=1)
    t_profit, t_spend = true_matrices(truth, test.levels, policy, d)
    e_profit, e_spend = policy.matrices_at(pred, d)
    rows = np.arange(len(t_profit))
    oracle_choice, oracle_spend = choose_levels(t_profit, t_spend)
    shares = {}
    for s in budget_shares:
        budget = s * oracle_spend
        o_choice, _ = choose_levels(t_profit, t_spend, budget)
        m_choice, m_used = choose_levels(e_profit, e_spend, budget)
        o_val, m_val = t_profit[rows, o_choice].sum(), t_profit[rows, m_choice].sum()
        shares[f"{s:g}"] = {"share_of_oracle": float(m_val / o_val) if o_val > 0 else float("nan"),
                            "true_profit_per_customer": float(m_val / len(rows)),
                            "oracle_profit_per_customer": float(o_val / len(rows)),
                            "budget": float(budget), "estimated_spend_used": float(m_used),
                            "true_spend_used": float(t_spend[rows, m_choice].sum())}
        if obs_profit is not None:
            b_choice, _ = choose_levels(obs_profit, obs_spend, budget)
            b_val = t_profit[rows, b_choice].sum()
            shares[f"{s:g}"].update({
                "share_of_observable_oracle": float(m_val / b_val) if b_val > 0 else float("nan"),
                "observable_oracle_profit_per_customer": float(b_val / len(rows)),
                "observable_oracle_share_of_oracle": float(b_val / o_val) if o_val > 0 else float("nan")})
    rmse_conv = np.sqrt((((pred["conversion"] - pred["conversion"][:, :1]) - (true_conv - true_conv[:, :1])) ** 2
                         ).mean(axis=0))
    rmse_profit = np.sqrt(((e_profit - t_profit) ** 2).mean(axis=0))
    out = {"profit_share": shares,
           "uplift_rmse": {lv: float(rmse_conv[i]) for i, lv in enumerate(test.levels) if i > 0},
           "profit_uplift_rmse": {lv: float(rmse_profit[i]) for i, lv in enumerate(test.levels) if i > 0},
           "oracle_unconstrained_spend": float(oracle_spend)}
    if policy.counts_returns:
        out["returns"] = returns_comparison(pred, test, truth, policy, d, t_profit, t_spend, oracle_spend,
                                            budget_shares)
    return out


def returns_comparison(pred: dict, test: CampaignData, truth: pd.DataFrame, policy: PolicyConfig, d: np.ndarray,
                       t_profit: np.ndarray, t_spend: np.ndarray, oracle_spend: float, budget_shares=(0.1, 0.3, 1.0)
                       ) -> dict:
    """The same predictions priced with returns counted and with returns ignored, at the same budgets (shares of the
    oracle's unconstrained spend, net of returns; "none" = no budget), each choice valued on the true profit net of
    true returns. Also the mean discount rate each gives to the most return-prone quarter (by the truth's returned
    share of revenue at the deepest level) and to the rest."""
    ignore = policy.model_copy(update={"returns": policy.returns.model_copy(update={"counted": False})})
    with_p, with_s = policy.matrices_at(pred, d)
    wo_p, wo_s = ignore.matrices_at(pred, d)
    rows = np.arange(len(t_profit))
    deep = int(np.argmax(d))
    share = (truth[f"exp_returned_{test.levels[deep]}"] / truth[f"exp_revenue_{test.levels[deep]}"].clip(lower=1e-9)
             ).to_numpy()
    prone = share >= np.quantile(share, 0.75)
    out = {}
    for s in (*budget_shares, None):
        budget = None if s is None else s * oracle_spend
        block = {"budget": None if budget is None else float(budget)}
        for name, (p, sp) in {"with_returns": (with_p, with_s), "ignoring_returns": (wo_p, wo_s)}.items():
            choice, _ = choose_levels(p, sp, budget)
            block[name] = {"true_profit_per_customer": float(t_profit[rows, choice].mean()),
                           "true_spend_per_customer": float(t_spend[rows, choice].mean()),
                           "share_treated": float((choice > 0).mean()),
                           "discount_rate_return_prone": float(d[choice][prone].mean()),
                           "discount_rate_others": float(d[choice][~prone].mean())}
        block["gain_per_customer"] = (block["with_returns"]["true_profit_per_customer"]
                                      - block["ignoring_returns"]["true_profit_per_customer"])
        out["none" if s is None else f"{s:g}"] = block
    return out


def _agg(values: list) -> object:
    """Aggregate a list of per-seed results: numbers -> {mean, std}; dicts recursively; CIs -> mean bounds."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _agg([v[k] for v in values]) for k in first}
    if isinstance(first, list | tuple):
        return np.nanmean(np.asarray(values, dtype=float), axis=0).round(6).tolist()
    if isinstance(first, str):
        return max(set(values), key=values.count)
    if first is None:
        return None
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(np.nanmean(arr)), 6), "std": round(float(np.nanstd(arr, ddof=1)) if len(arr) > 1
                                                                    else 0.0, 6)}


def protocol_text(cfg: UpliftConfig, seeds: list[int], n: int, levels: list[str], assignment: str = "randomised"
                  ) -> str:
    p = cfg.policy
    value = ("one unit of value per visit (revenue = visit)" if cfg.data.outcome == "visit" and
             cfg.data.dataset == "hillstrom" else "revenue net of the discount")
    if p.counts_returns:
        value += (f" and of returns (refunded revenue loses its margin; {p.returns.handling_cost:g} per returned "
                  "order; a per-level return model gives each level's expected returns)")
    return (
        f"{cfg.data.dataset}: {n} customers, levels {levels} (control first); stratified (treatment x outcome) "
        f"{round((1 - cfg.data.test_size) * 100)}/{round(cfg.data.test_size * 100)} splits, seeds {seeds}; metrics "
        f"on outcome '{cfg.data.outcome}' ({cfg.data.metric_outcome}) on the test split: qini = area between the "
        "Qini curve and the random line over that of the perfect ranking (scikit-uplift qini_auc_score "
        "definition), qini_area = causalml qini_score(normalize=True), auuc = causalml auuc_score(normalize=True), "
        "uplift_at_30 = treated minus control mean in the top 30%. Policy: per customer the level (or none) with "
        f"the highest expected incremental profit = margin x incremental list-price revenue (net revenue / (1 - "
        f"discount)) - expected discount paid - contact cost, margin {p.margin}, contact cost {p.contact_cost} per contacted customer, value = {value}; "
        "policy_value = incremental profit per customer over treat-none on the test split, IPW with the known "
        "assignment probabilities (95% normal CI; DR beside it); best single level chosen on the training split."
        + (" Targeted log: the assignment probabilities are estimated (gradient boosting, cross-fitted on the "
           "training rows, fitted on them for the test rows), every number is taken on the rows inside the common "
           f"support (every level >= {cfg.net.min_propensity:g}), self-normalised IPW beside IPW and DR; Qini and AUUC"
           " compare the arms as logged (confounded)." if assignment == "targeted" else "")
    )


def run_bench(cfg: UpliftConfig, out: str | Path, seeds: int = 5, models: tuple[str, ...] = ("offerlab", *PEERS),
              feature_oracle: bool = True, predictions: str | Path | None = None) -> dict:
    """Fit every model on each seed's split, score them, aggregate, and write the JSON atomically.
    `feature_oracle=False` skips that (slow) reference on synthetic data. `predictions`: also write every model's
    out-of-sample predictions (model, seed, customer_id, conversion_<level>, revenue_<level> on each test split)
    as parquet, for the user's own analysis (raw ids: a local file, never logged)."""
    pred_rows: list[pd.DataFrame] = []
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_load = time.perf_counter()
    from offerlab.uplift.returns import check_returns_declared

    data, truth, meta = load_campaign(cfg)
    check_returns_declared(data, cfg.policy)
    log.info("loaded %d campaign rows in %.1fs", len(data), time.perf_counter() - t_load)
    refs = ("feature_oracle",) if truth is not None and feature_oracle else ()  # the features' information ceiling (synthetic only)
    per_model: dict[str, list[dict]] = {m: [] for m in (*models, *refs)}
    seconds = dict.fromkeys(per_model, 0.0)
    seed_list = [cfg.data.split_seed + s for s in range(seeds)]
    trimmed: list[dict] = []
    for seed in seed_list:
        tr, te = stratified_split(data, cfg.data.test_size, seed, cfg.data.metric_outcome)
        train, test = data.subset(tr), data.subset(te)
        t_test = None if truth is None else truth.iloc[te].reset_index(drop=True)
        ev = evaluation_propensity(train, test, cfg.net.propensity_folds, seed, cfg.net.min_propensity)
        if ev is not None:
            trimmed.append({"train_share": float(1 - ev["inside_train"].mean()),
                            "test_share": float(1 - ev["inside_test"].mean())})
            log.info("seed %d: targeted log, estimated propensities; %.1f%% of training and %.1f%% of test rows "
                     "outside the common support", seed, 100 * trimmed[-1]["train_share"],
                     100 * trimmed[-1]["test_share"])
        for name in per_model:
            t0 = time.perf_counter()
            if name == "feature_oracle":
                from offerlab.uplift.baselines import FeatureOracle

                model = FeatureOracle(seed).fit(train, truth.iloc[tr].reset_index(drop=True))
            elif name in PEERS and ev is not None:
                model = make_model(name, cfg, seed).fit(train, propensity=ev["train"])
            else:
                model = make_model(name, cfg, seed).fit(train)
            res = score_split(model, train, test, cfg.policy, cfg.data.metric_outcome, t_test, meta,
                              cfg.budget_shares, propensity=ev)
            if predictions is not None:
                pred_rows.append(prediction_frame(model, test, name, seed))
            seconds[name] += time.perf_counter() - t0
            per_model[name].append(res)
            log.info("seed %d %s: qini %s policy %.4f (%.1fs)", seed, name,
                     {k: round(v, 4) for k, v in res["qini"].items()}, res["policy_value"], time.perf_counter() - t0)
    result = {
        "task": "uplift",
        "dataset": cfg.data.dataset,
        "outcome": cfg.data.outcome,
        "protocol": protocol_text(cfg, seed_list, len(data), data.levels, data.assignment),
        "assignment": data.assignment,
        "propensity": (f"estimated (cross-fitted, {cfg.net.propensity_folds} folds)" if trimmed else
                       "known (the log's design)" if data.propensity is not None else "not given"),
        "trimmed": _agg(trimmed) if trimmed else None,
        "policy": cfg.policy.model_dump(),
        "seeds": seed_list,
        "models": {m: {k: v for k, v in _agg(r).items() if k != "oracle"} for m, r in per_model.items()
                   if m not in refs},
        "references": {m: {k: v for k, v in _agg(per_model[m]).items() if k != "oracle"} for m in refs} or None,
        "oracle": ({m: _agg([x["oracle"] for x in r]) for m, r in per_model.items()} if truth is not None else None),
        "seconds": {m: round(s, 1) for m, s in seconds.items()},
        "config": {"net": cfg.net.model_dump(), "trainer": cfg.trainer.model_dump()},
    }
    ours = (result["oracle"] or {}).get("offerlab") or {}
    if "returns" in ours:  # the headline of a returns-aware campaign: ours with returns counted vs ignored
        result["returns_comparison"] = {
            "what": "true incremental profit per customer net of true returns (exp_returned_<level>) of the same "
                    "fitted model's policy with returns counted vs ignored, same budgets (shares of the oracle's "
                    "unconstrained spend; 'none' = no budget), mean (std) over the seeds",
            **ours["returns"]}
    result["targets"] = check_targets(result)
    if predictions is not None:
        from offerlab.serving.score import write_atomic

        write_atomic(pd.concat(pred_rows, ignore_index=True), Path(predictions))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=1, default=float)
    os.replace(tmp, out)
    return result


def prediction_frame(model, test: CampaignData, name: str, seed: int) -> pd.DataFrame:
    """One model's expected conversion and revenue under every level for the test rows of one split."""
    pred = model.predict_levels(test.features)
    cols = {f"{k}_{lv}": pred[k][:, i] for k in ("conversion", "revenue") for i, lv in enumerate(test.levels)}
    return pd.DataFrame({"model": name, "seed": seed, "customer_id": test.customer_id.astype(str), **cols})


def check_targets(result: dict) -> dict:
    """The issue's targets, as measured: Qini >= best peer per level (+10% on the level with the largest
    peer Qini), policy value above treat-none and best single level; on synthetic data >= 95% of oracle."""
    models = result["models"]
    if "offerlab" not in models:
        return {}
    ours = models["offerlab"]
    peers = {m: v for m, v in models.items() if m != "offerlab"}
    out: dict = {}
    if peers:
        best_peer = {lv: max(p["qini"][lv]["mean"] for p in peers.values()) for lv in ours["qini"]}
        main_level = max(best_peer, key=best_peer.get)
        out["qini_vs_best_peer"] = {lv: {"ours": ours["qini"][lv]["mean"], "best_peer": best_peer[lv],
                                         "ratio": ours["qini"][lv]["mean"] / best_peer[lv] if best_peer[lv] else None}
                                    for lv in ours["qini"]}
        out["qini_target_met"] = all(ours["qini"][lv]["mean"] >= best_peer[lv] for lv in best_peer) and (
            ours["qini"][main_level]["mean"] >= 1.1 * best_peer[main_level])
    out["policy_above_treat_none"] = ours["policy_value"]["mean"] > ours["treat_none_value"]["mean"]
    out["policy_above_best_single"] = ours["policy_value"]["mean"] > ours["best_single_value"]["mean"]
    # the stricter reading: the seed-averaged 95% CIs of the policy value and of (policy - best single) exclude 0
    out["policy_above_treat_none_ci"] = ours["policy_value_ci"][0] > 0
    out["policy_above_best_single_ci"] = ours["policy_minus_best_single_ci"][0] > 0
    oracle = (result.get("oracle") or {}).get("offerlab")
    if oracle:
        shares = {b: v["share_of_oracle"]["mean"] for b, v in oracle["profit_share"].items()}
        out["oracle_share"] = shares
        out["oracle_target_met"] = all(v >= 0.95 for v in shares.values())
        if "share_of_observable_oracle" in next(iter(oracle["profit_share"].values())):
            for name in ("offerlab", "t_learner"):
                block = result["oracle"].get(name)
                if block:
                    key = "observable_oracle_share" + ("" if name == "offerlab" else f"_{name}")
                    out[key] = {b: v["share_of_observable_oracle"]["mean"] for b, v in block["profit_share"].items()}
            out["observable_oracle_target_met"] = all(v >= 0.95 for v in out["observable_oracle_share"].values())
        ceiling = result["oracle"].get("feature_oracle")
        if ceiling:
            c_shares = {b: v["share_of_oracle"]["mean"] for b, v in ceiling["profit_share"].items()}
            out["feature_ceiling_share"] = c_shares
            out["share_of_feature_ceiling"] = {b: shares[b] / c_shares[b] if c_shares[b] else None for b in shares}
    return out
