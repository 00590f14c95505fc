"""The campaign loop on the synthetic marketplace, with outcomes drawn from the ground truth.

Round 0 is the marketplace's own randomised campaign log (the history every loop starts from). Each round r >= 1
is a new campaign to a fresh population drawn from the same law (next week's customers; seed S * 1000 + r), with
behaviour features as of its campaign date. In each round every loop
1. fits its model on all the logs it has (the round-0 log plus its own earlier plans' logs, `campaign.logs`),
2. plans under the round's budget (`campaign.plan`: holdout, exploration, the budgeted policy),
3. draws each customer's outcome under the level given from the truth (conversion ~ Bernoulli(p_l), basket =
   E[basket_l] x lognormal noise of the generator's sd, net revenue = basket (1 - d_l)),
4. evaluates the plan from those outcomes alone (`campaign.evaluate`, the doubly robust estimate and its CI),
5. keeps the round's log for the next fit.
Scored against the truth: `true_profit` (the expected incremental profit of the levels given, exploration and
holdout included), `oracle_profit` (the truth's own budgeted allocation), `observable_oracle_profit` (the
allocation on the truth's expectation given what the tables show: the ceiling for any model of these features).
The budget of a round is `budget_share` (0.3) of the spend of the truth's unconstrained optimum, the same for
every loop. Loops: ours with exploration (share `explore` in round 1, `explore / r` in round r with
`explore_decay`: the model's uncertainty shrinks as the logs grow, so later rounds buy less of it), ours without
exploration (holdout only; it learns from its own logs too, but only about the levels it chose), and a T-learner
with LightGBM (CausalML) fitted on the same kind of logs, planned with the same design and allocator.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlab.campaign.evaluate import evaluate
from offerlab.campaign.logs import fit_on_logs
from offerlab.campaign.plan import Design, Economics, make_plan
from offerlab.uplift.data import CampaignData
from offerlab.uplift.policy import allocate

log = logging.getLogger(__name__)
LOOPS = ("offerlab_explore", "offerlab_greedy", "t_learner_gbm")


@dataclass
class World:
    """One round's population: features, the truth per level, and the observable truth."""

    customer_id: np.ndarray
    features: pd.DataFrame
    p_conv: np.ndarray  # (n, L)
    basket: np.ndarray  # (n, L) expected list-price basket given a purchase
    true_profit: np.ndarray  # (n, L) incremental over none
    true_spend: np.ndarray
    obs_profit: np.ndarray
    obs_spend: np.ndarray
    history: CampaignData  # the marketplace's own randomised campaign (round 0's log)
    economics: Economics


def _truth_matrices(truth: pd.DataFrame, levels: list[str], disc: np.ndarray, margin: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    p = np.stack([truth[f"p_conv_{lv}"].to_numpy(dtype=float) for lv in levels], axis=1)
    rev = np.stack([truth[f"exp_revenue_{lv}"].to_numpy(dtype=float) for lv in levels], axis=1)
    cost = np.stack([truth[f"exp_cost_{lv}"].to_numpy(dtype=float) for lv in levels], axis=1)
    gross = rev / (1.0 - disc)
    value = margin * gross - cost
    profit = value - value[:, :1]
    spend = cost - cost[:, :1]
    basket = np.where(p > 0, gross / np.maximum(p, 1e-12), 0.0)
    return p, basket, profit, spend


def make_world(n_customers: int, seed: int) -> World:
    from offerlab.data.synth import campaign_truth_observable, generate
    from offerlab.uplift.data import from_synth

    synth = generate(n_customers, seed=seed)
    meta = synth.meta
    history = from_synth(synth)
    history.returned_revenue = None  # the simulated rounds draw no returns: every log and plan prices none
    levels = history.levels
    disc = np.array([history.discounts[lv] for lv in levels])
    econ = Economics(levels, disc, float(meta["margin"]), float(meta["contact_cost"]))
    ids = pd.Index(history.customer_id.astype(str))
    truth = synth.truth_campaign.set_index("customer_id").loc[ids]
    obs = campaign_truth_observable(synth).set_index("customer_id").loc[ids]
    p, basket, profit, spend = _truth_matrices(truth, levels, disc, econ.margin)
    _, _, o_profit, o_spend = _truth_matrices(obs, levels, disc, econ.margin)
    return World(history.customer_id, history.features, p, basket, profit, spend, o_profit, o_spend, history, econ)


def draw_outcomes(world: World, level: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Each customer's conversion and net revenue under the level given, from the truth."""
    from offerlab.data.synth import BASKET_NOISE_SD

    rows = np.arange(len(level))
    conv = (rng.random(len(level)) < world.p_conv[rows, level]).astype(float)
    noise = np.exp(rng.normal(-0.5 * BASKET_NOISE_SD**2, BASKET_NOISE_SD, len(level)))
    revenue = conv * world.basket[rows, level] * noise * (1.0 - world.economics.discounts[level])
    return pd.DataFrame({"customer_id": world.customer_id.astype(str), "conversion": conv, "revenue": revenue})


def _new_model(kind: str, seed: int, quick: bool):
    if kind == "t_learner_gbm":
        from offerlab.uplift.baselines import MetaLearner

        return MetaLearner("t_learner", seed=seed)
    from offerlab.uplift.cli import _default_config
    from offerlab.uplift.config import load_config
    from offerlab.uplift.model import UpliftModel

    cfg = load_config(_default_config("synth"))
    net, trainer = cfg.net, cfg.trainer.model_copy(update={"enable_progress_bar": False})
    if quick:
        net = net.model_copy(update={"ensemble": 2, "hidden": [32, 16]})
        trainer = trainer.model_copy(update={"max_epochs": 8})
    return UpliftModel(net, trainer, seed=seed)


def run_round(world: World, model, design: Design, rng: np.random.Generator) -> tuple[dict, CampaignData]:
    """Plan, draw, evaluate one round for one fitted model; returns the round's entry and its log."""
    from offerlab.campaign.logs import log_from_plan

    pred = model.predict_levels(world.features)
    members = model.predict_levels_members(world.features) if hasattr(model, "predict_levels_members") else []
    plan = make_plan(pred, world.economics, world.customer_id.astype(str), design, members)
    frame = pd.concat([plan.frame, world.features.add_prefix("f.")], axis=1)
    levels = world.economics.levels
    code = {lv: j for j, lv in enumerate(levels)}
    given = frame["level"].map(code).to_numpy()
    planned = frame["planned_level"].map(code).to_numpy()
    outcomes = draw_outcomes(world, given, rng)
    result = evaluate(frame, plan.summary, outcomes)
    rows = np.arange(len(given))
    ov = result["overall"]
    oracle = allocate(world.true_profit, world.true_spend, design.budget)
    observable = allocate(world.obs_profit, world.obs_spend, design.budget)
    true_profit = float(world.true_profit[rows, given].sum())
    obs_val = float(world.true_profit[rows, observable.choice].sum())
    entry = {
        "budget": design.budget, "spend": float(world.true_spend[rows, given].sum()),
        "expected_spend": plan.summary["expected_spend"],
        "true_profit": true_profit, "oracle_profit": float(world.true_profit[rows, oracle.choice].sum()),
        "observable_oracle_profit": obs_val,
        "share_of_observable_oracle": true_profit / obs_val if obs_val > 0 else float("nan"),
        "planned_true_profit": float(world.true_profit[rows, planned].sum()),
        "expected_profit": plan.summary["expected_profit"],
        "estimated_profit": ov["dr"], "estimated_ci": ov["dr_ci"],
        "estimated_profit_snipw": ov["snipw"], "estimated_ci_snipw": ov["snipw_ci"],
        "ci_covers_true_profit": bool(ov["dr_ci"][0] <= true_profit <= ov["dr_ci"][1]),
        "price_of_spend": plan.summary["price_of_spend"],
        "customers": len(given), "treated": int((given > 0).sum()), "held_out": ov["held_out"],
    }
    return entry, log_from_plan(frame, outcomes, plan.summary)


def simulate(rounds: int = 5, customers: int = 20_000, seed: int = 0, *, budget_share: float = 0.3,
             explore: float = 0.1, holdout: float = 0.05, explore_decay: bool = True,
             loops: tuple[str, ...] = LOOPS, quick: bool = False, progress: bool = True) -> dict:
    """Run every loop for `rounds` rounds on the same worlds (module docstring); the JSON of `campaign simulate`."""
    from tqdm.auto import tqdm

    unknown = [k for k in loops if k not in LOOPS]
    if unknown or not loops:
        raise ValueError(f"unknown loop {unknown[:1] or loops}; choose from {LOOPS}")
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    t0 = time.perf_counter()
    history = make_world(customers, seed * 1000)
    logs = {k: [("round 0 (randomised history)", history.history)] for k in loops}
    out_loops = {k: [] for k in loops}
    with tqdm(total=rounds * len(loops), disable=not progress, desc="campaign simulate", unit="fit") as bar:
        for r in range(1, rounds + 1):
            world = make_world(customers, seed * 1000 + r)
            oracle_full = allocate(world.true_profit, world.true_spend, None)
            budget = budget_share * oracle_full.used
            for k in loops:
                t1 = time.perf_counter()
                model, report = fit_on_logs(_new_model(k, seed + r, quick), logs[k])
                eps = 0.0 if k == "offerlab_greedy" else explore / r if explore_decay else explore
                design = Design(budget, eps, holdout, seed=seed * 1000 + r)
                entry, round_log = run_round(world, model, design, np.random.default_rng([seed, r, LOOPS.index(k)]))
                entry.update(round=r, seconds=round(time.perf_counter() - t1, 1),
                             training_rows_used=int(sum(x.get("used", x["rows"]) for x in report)),
                             explore=design.explore, holdout=holdout)
                out_loops[k].append(entry)
                logs[k].append((f"round {r} plan", round_log))
                bar.update(1)
                log.info("round %d %s: share of observable oracle %.3f, CI covers truth: %s", r, k,
                         entry["share_of_observable_oracle"], entry["ci_covers_true_profit"])
    main = loops[0]
    return {"rounds": out_loops[main], "loop": main,
            "loops": {k: v for k, v in out_loops.items() if k != main},
            "config": {"rounds": rounds, "customers": customers, "seed": seed, "budget_share": budget_share,
                       "explore": explore, "explore_decay": explore_decay, "holdout": holdout,
                       "quick": quick},
            "seconds": round(time.perf_counter() - t0, 1)}


def summary_table(runs: list[dict]) -> list[dict]:
    """Per round and loop, over the seeds: mean and sd of the share of the observable oracle profit, the share of
    the true oracle, how often the estimated CI covered the true profit, and the true profit."""
    rows = []
    for r in range(len(runs[0]["rounds"])):
        for k in (runs[0]["loop"], *runs[0]["loops"]):
            entries = [(run["rounds"] if k == run["loop"] else run["loops"][k])[r] for run in runs]
            share = np.array([e["share_of_observable_oracle"] for e in entries], dtype=float)
            oracle = np.array([e["true_profit"] / e["oracle_profit"] for e in entries], dtype=float)
            covered = np.array([e["ci_covers_true_profit"] for e in entries], dtype=float)
            rows.append({"round": r + 1, "loop": k, "seeds": len(entries),
                         "share_of_observable_oracle_mean": float(share.mean()),
                         "share_of_observable_oracle_sd": float(share.std(ddof=1)) if len(share) > 1 else 0.0,
                         "share_of_oracle_mean": float(oracle.mean()),
                         "ci_coverage": float(covered.mean()),
                         "true_profit_mean": float(np.mean([e["true_profit"] for e in entries]))})
    return rows
