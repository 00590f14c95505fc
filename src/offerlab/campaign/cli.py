"""`offerlab campaign plan | evaluate | simulate`: the closed campaign loop from the command line.

    offerlab campaign plan --data mydata.yaml --budget 5000 --out plan.parquet
    offerlab campaign evaluate --plan plan.parquet --outcomes outcomes.csv --data mydata.yaml --out result.json \\
        --log-out campaign-week-1.parquet
    offerlab train uplift --data mydata.yaml --campaign-log campaign-week-1.parquet
    offerlab campaign simulate --rounds 5 --customers 20000 --seed 0 --out sim.json
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import numpy as np
import pandas as pd

from offerlab.cli_options import data_spec_options, open_spec, refuse_beside_spec

log = logging.getLogger(__name__)


@click.group("campaign")
def campaign() -> None:
    """Plan a discount campaign, evaluate what it earned, simulate the loop.

    \b
    Examples:
      offerlab campaign plan --data mydata.yaml --budget 5000 --out plan.parquet
      offerlab campaign evaluate --plan plan.parquet --outcomes outcomes.parquet --revenue net --out result.json
      offerlab campaign simulate --rounds 5 --customers 20000 --seed 0 --out sim.json
    """


def _refuse_existing(path: str | None, force: bool, flag: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not force:
        raise ValueError(f"{flag} {p} exists; pass --force to replace it (nothing was written)")
    return p


def _model_version(model_uri: str) -> str | None:
    """The registry version behind a `models:/name@alias` URI (None for other URIs)."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return None
    from mlflow import MlflowClient

    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - the version is information, the plan stands without it
        return None


def plan_economics(spec, policy, levels: list[str], model_rates: dict[str, float] | None = None):
    """(economics, the spec's budget): the data spec's economics (declared, refused when incomplete), else the
    model's own policy with the rates its training campaign declared (and no budget)."""
    from offerlab.campaign.plan import Economics

    if spec is None:
        return Economics.from_policy(policy, levels, model_rates or None), None
    declared = spec.policy()
    if list(spec.levels()) != list(levels):
        raise ValueError(f"the data spec's campaign levels {spec.levels()} are not the model's {levels}: plan with "
                         "a model trained on this campaign's levels")
    return Economics(list(levels), np.array([declared["discounts"][lv] for lv in levels]),
                     float(declared["margin"]), float(declared["contact_cost"]), declared.get("returns")
                     ), declared.get("budget")


@campaign.command("plan")
@data_spec_options
@click.option("--input", "input_path", type=click.Path(dir_okay=False), default=None,
              help="Transactions parquet (customer_id, timestamp[, amount, category]); with --data the spec's.")
@click.option("--customers", type=click.Path(dir_okay=False), default=None,
              help="Customers parquet with the attributes the uplift model uses.")
@click.option("--budget", type=float, default=None,
              help="Total expected spend (discounts paid + contact costs) the plan may use; default: the spec's "
                   "economics.budget.")
@click.option("--explore", type=float, default=0.1, show_default=True,
              help="Share of (non-holdout) customers given a level drawn uniformly over all levels.")
@click.option("--holdout", type=float, default=0.05, show_default=True,
              help="Share of customers randomly held out (no offer): the control that prices the plan.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the holdout and exploration draws.")
@click.option("--model-uri", default=None, help="MLflow URI of the uplift model (default: the registry alias).")
@click.option("--alias", default="champion", show_default=True, help="Registry alias of offerlab-uplift.")
@click.option("--as-of", default=None, help="Feature instant (default: end of the day of the latest transaction).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Customers per feature chunk.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="The plan (parquet).")
@click.option("--force", is_flag=True, help="Replace an existing plan file.")
def plan_cmd(data_spec, data_sets, input_path, customers, budget, explore, holdout, seed, model_uri, alias, as_of,
             chunk_size, out_path, force) -> None:
    """Per customer the level with the best expected incremental profit within the budget, a randomised holdout
    and an exploration share, each row with the probability it was assigned by; logged as an MLflow run."""
    summary = run_plan(data_spec=data_spec, data_sets=data_sets, input_path=input_path, customers=customers,
                       budget=budget, explore=explore, holdout=holdout, seed=seed, model_uri=model_uri, alias=alias,
                       as_of=as_of, chunk_size=chunk_size, out_path=out_path, force=force)
    click.echo(json.dumps(summary, indent=1, default=float))


def run_plan(*, out_path: str | Path, data_spec: str | None = None, data_sets: tuple[str, ...] = (),
             input_path: str | None = None, customers: str | None = None, budget: float | None = None,
             explore: float = 0.1, holdout: float = 0.05, seed: int = 0, model_uri: str | None = None,
             alias: str = "champion", as_of: str | None = None, chunk_size: int = 50_000, force: bool = False,
             progress: bool = True) -> dict:
    """`offerlab campaign plan` (the same result from Python): plan, write, log; returns the summary."""
    import mlflow
    from tqdm.auto import tqdm

    from offerlab import tracking
    from offerlab.campaign.plan import Design, curve_figure, make_plan, model_predictions, write_plan
    from offerlab.serving.score import (
        customer_chunks,
        default_as_of,
        discount_features,
        load_model,
        parse_as_of,
        read_inputs,
        resolve_uri,
        spec_inputs,
    )

    out = Path(out_path)
    if out.suffix != ".parquet":
        raise ValueError(f"--out {out} must end in .parquet")
    _refuse_existing(str(out), force, "--out")
    spec = open_spec(data_spec, tuple(data_sets))
    if spec is not None:
        refuse_beside_spec(input=input_path, customers=customers)
        inputs = spec_inputs("discount", spec)
    elif input_path is None:
        raise ValueError("give --data (a data spec) or --input (a transactions parquet)")
    else:
        inputs = read_inputs("discount", input_path, customers)
    uri = resolve_uri("discount", model_uri, alias)  # score's command name: the uplift family's alias
    pyfunc = load_model("discount", model_uri, alias)
    inner = pyfunc.unwrap_python_model()
    model, policy = inner.model, inner.policy
    econ, spec_budget = plan_economics(spec, policy, list(model.levels), getattr(model, "discounts", None))
    budget = spec_budget if budget is None else budget
    if budget is None:
        raise ValueError("a campaign plan needs a budget: pass --budget (total expected spend) or set "
                         "economics.budget in the data spec")
    design = Design(float(budget), explore, holdout, seed)
    when = parse_as_of(as_of) if as_of else default_as_of(inputs.transactions)
    parts = []
    with tqdm(total=inputs.transactions["customer_id"].nunique(), unit="customer", disable=not progress,
              desc="campaign plan: features") as bar:
        for n, tx, _ in customer_chunks(chunk_size, inputs.transactions):
            parts.append(discount_features(pyfunc, tx, inputs.customers, when))
            bar.update(n)
    feats = pd.concat(parts)
    ids = feats.index.to_numpy()
    feats = feats.reset_index(drop=True)
    pred, members = model_predictions(model, feats)
    plan = make_plan(pred, econ, ids, design, members, model_uri=uri, model_version=_model_version(uri),
                     as_of=str(when))
    plan.frame = pd.concat([plan.frame, feats.add_prefix("f.")], axis=1)
    s = plan.summary
    with tracking.start_run("campaign", "plan", tags={"offerlab.campaign": "plan"}) as run:
        mlflow.log_params({"budget": design.budget, "explore": design.explore, "holdout": design.holdout,
                           "seed": design.seed, "model_uri": uri, "model_version": s["model_version"] or "",
                           "customers": s["customers"], "as_of": s["as_of"], "levels": ",".join(econ.levels)})
        metrics = {"expected_profit": s["expected_profit"], "expected_spend": s["expected_spend"],
                   "price_of_spend": s["price_of_spend"], "expected_spend_explore": s["expected_spend_explore"]}
        for key in ("expected_profit_ci", "expected_spend_ci"):
            if s[key] is not None:
                metrics[f"{key}_lo"], metrics[f"{key}_hi"] = s[key]
        metrics.update({f"customers_{arm}": v for arm, v in s["arms"].items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        import matplotlib.pyplot as plt

        fig = curve_figure(plan.curve, design.budget)
        mlflow.log_figure(fig, "plots/profit_vs_budget.png")
        plt.close(fig)
        mlflow.log_dict(plan.curve.to_dict(orient="list"), "plots/profit_vs_budget.json")
        s["run_id"] = run.info.run_id
        mlflow.log_dict(s, "plan_summary.json")  # counts and money totals only: no customer id
    write_plan(plan, out)
    log.info("planned %d customers: expected incremental profit %.2f, expected spend %.2f of budget %.2f",
             s["customers"], s["expected_profit"], s["expected_spend"], design.budget)
    if design.budget > 0 and s["expected_spend_explore"] > 0.25 * design.budget:
        log.warning("exploration takes %.0f%% of the budget (its random levels go to random customers): a lower "
                    "--explore leaves more to the planned customers", 100 * s["expected_spend_explore"] / design.budget)
    return {**s, "out": str(out)}


def read_outcomes(path: str | Path, spec=None, segment_by: str | None = None) -> pd.DataFrame:
    """The outcomes file as canonical columns (customer_id, conversion, revenue[, treatment]): through the data
    spec's campaign mapping (its column names and label values) when given, else as named."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"outcomes file not found: {path}")
    if spec is None:
        return pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    from offerlab.data.loaders import load_mapped

    block = spec.spec.tables.get("campaign")
    if block is None:
        raise spec.key_error("tables.campaign", "evaluating outcomes through a data spec needs its campaign table "
                             "mapping (the outcomes use the same columns as the past campaign log)")
    keep = [segment_by] if segment_by and segment_by not in block.columns else []
    mapping = block.model_copy(update={"keep": keep, "dates": [], "path": path.name,
                                       "format": None}).mapping("campaign")
    return load_mapped(path, mapping, timezone=spec.spec.semantics.timezone)


def to_net_revenue(outcomes: pd.DataFrame, plan: pd.DataFrame, summary: dict, revenue: str) -> pd.DataFrame:
    """Net revenue (what the customer paid): gross x (1 - d of the level the plan gave)."""
    if revenue == "net":
        return outcomes
    econ = summary["economics"]
    d = plan.set_index(plan["customer_id"].astype(str))["level"].map(econ["discounts"]).astype(float)
    rate = outcomes["customer_id"].astype(str).map(d).fillna(0.0).to_numpy()
    gross = pd.to_numeric(outcomes["revenue"], errors="coerce")
    out = outcomes.assign(revenue=gross * (1.0 - rate))
    if "returned_revenue" in out.columns:  # what came back, at list price too
        out["returned_revenue"] = pd.to_numeric(out["returned_revenue"], errors="coerce") * (1.0 - rate)
    return out


@campaign.command("evaluate")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), required=True, help="A plan parquet.")
@click.option("--outcomes", "outcomes_path", type=click.Path(dir_okay=False), required=True,
              help="Outcomes per planned customer (parquet or CSV): customer_id, conversion (0/1), revenue "
                   "[, treatment]; with --data in the campaign table's own column names and label values.")
@data_spec_options
@click.option("--revenue", "revenue", type=click.Choice(["net", "gross"]), default=None,
              help="Is the outcomes' revenue what the customer paid (net of the discount) or the list price "
                   "(gross)? Required without --data (the spec's semantics.revenue says it).")
@click.option("--segment-by", default=None, help="A column of the outcomes (or the plan) to break the result by.")
@click.option("--missing-as-no-purchase", is_flag=True,
              help="A planned customer without an outcome row bought nothing (otherwise refused).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Result JSON.")
@click.option("--log-out", type=click.Path(dir_okay=False), default=None,
              help="Write the campaign as a training log (for `offerlab train uplift --campaign-log`).")
@click.option("--force", is_flag=True, help="Replace existing --out / --log-out files.")
def evaluate_cmd(plan_path, outcomes_path, data_spec, data_sets, revenue, segment_by, missing_as_no_purchase,
                 out_path, log_out, force) -> None:
    """The realised incremental profit of a plan against its holdout (IPW, SNIPW, DR with 95% CIs), per planned
    level, per expected-profit quartile and per segment; calibration of the predicted uplifts; an MLflow run."""
    result = run_evaluate(plan_path=plan_path, outcomes_path=outcomes_path, data_spec=data_spec,
                          data_sets=data_sets, revenue=revenue, segment_by=segment_by,
                          missing_as_no_purchase=missing_as_no_purchase, out_path=out_path, log_out=log_out,
                          force=force)
    ov = result["overall"]
    click.echo(json.dumps({"customers": result["customers"], "conversions": result["conversions"],
                           "expected_profit": ov["expected"], "incremental_profit_dr": ov["dr"],
                           "incremental_profit_dr_ci": ov["dr_ci"], "incremental_profit_snipw": ov["snipw"],
                           "incremental_profit_snipw_ci": ov["snipw_ci"], "run_id": result["run_id"],
                           "out": out_path, "log_out": log_out}, indent=1, default=float))


def run_evaluate(*, plan_path: str | Path, outcomes_path: str | Path, data_spec: str | None = None,
                 data_sets: tuple[str, ...] = (), revenue: str | None = None, segment_by: str | None = None,
                 missing_as_no_purchase: bool = False, out_path: str | Path | None = None,
                 log_out: str | Path | None = None, force: bool = False) -> dict:
    """`offerlab campaign evaluate` from Python; returns the result dict (no customer ids)."""
    import mlflow

    from offerlab import tracking
    from offerlab.campaign.evaluate import evaluate_matched, evaluation_figures, match_outcomes
    from offerlab.campaign.logs import log_from_plan, write_log
    from offerlab.campaign.plan import read_plan

    out = _refuse_existing(str(out_path) if out_path else None, force, "--out")
    log_path = _refuse_existing(str(log_out) if log_out else None, force, "--log-out")
    if log_path is not None and log_path.suffix != ".parquet":
        raise ValueError(f"--log-out {log_path} must end in .parquet")
    plan, summary = read_plan(plan_path)
    spec = open_spec(data_spec, tuple(data_sets))
    if spec is not None:
        declared = spec.spec.semantics.revenue
        if revenue is not None and declared is not None and revenue != declared:
            raise ValueError(f"--revenue {revenue} contradicts the data spec's semantics.revenue ({declared})")
        revenue = revenue or declared
    if revenue is None:
        raise ValueError("say what the outcomes' revenue is: --revenue net (what the customer paid, after the "
                         "discount) or --revenue gross (the list price); or give --data with semantics.revenue")
    outcomes = to_net_revenue(read_outcomes(outcomes_path, spec, segment_by), plan, summary, revenue)
    got = match_outcomes(plan, outcomes, missing_as_no_purchase=missing_as_no_purchase)
    result = evaluate_matched(plan, summary, got, segment_by=segment_by)
    result["revenue_semantics"] = revenue
    ov = result["overall"]
    with tracking.start_run("campaign", "evaluate", tags={"offerlab.campaign": "evaluate",
                                                         "offerlab.plan_run": summary.get("run_id") or ""}) as run:
        mlflow.log_params({"plan_run_id": summary.get("run_id") or "", "budget": summary.get("budget"),
                           "revenue": revenue, "segment_by": segment_by or "",
                           "missing_as_no_purchase": missing_as_no_purchase})
        metrics = {"customers": result["customers"], "conversions": result["conversions"],
                   "expected_profit": ov["expected"], "realised_spend": ov["realised_spend"]}
        for est in ("ipw", "snipw", "dr"):
            if ov.get(est) is not None:
                metrics[f"incremental_profit_{est}"] = ov[est]
                metrics[f"incremental_profit_{est}_lo"], metrics[f"incremental_profit_{est}_hi"] = ov[f"{est}_ci"]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        import matplotlib.pyplot as plt

        for name, fig in evaluation_figures(result).items():
            mlflow.log_figure(fig, name)
            plt.close(fig)
        result["run_id"] = run.info.run_id
        mlflow.log_dict(result, "evaluation.json")
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1, default=float))
        tmp.replace(out)
    if log_path is not None:
        write_log(log_from_plan(plan, got, summary), log_path, Path(plan_path).stem)
    log.info("evaluated %d planned customers: incremental profit (DR) %s", result["customers"], ov["dr"])
    return result


@campaign.command("simulate")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True, help="Campaign rounds.")
@click.option("--customers", type=click.IntRange(min=500), default=20_000, show_default=True,
              help="Customers per round.")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True,
              help="Seed of the simulated marketplace (repeatable: one simulation per seed, and a table over them).")
@click.option("--budget-share", type=click.FloatRange(0, 1, min_open=True), default=0.3, show_default=True,
              help="Each round's budget as a share of the spend of the truth's unconstrained optimum.")
@click.option("--explore", type=float, default=0.1, show_default=True, help="Exploration share of our loop.")
@click.option("--holdout", type=float, default=0.05, show_default=True, help="Holdout share of every loop.")
@click.option("--explore-decay/--no-explore-decay", default=True, show_default=True,
              help="Our loop explores --explore / r in round r (else --explore every round).")
@click.option("--quick", is_flag=True, help="A small network and few epochs (a smoke run, not the figures).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Simulation JSON.")
@click.option("--force", is_flag=True, help="Replace an existing JSON.")
def simulate_cmd(rounds, customers, seeds, budget_share, explore, holdout, explore_decay, quick, out_path,
                 force) -> None:
    """Run the loop on the synthetic marketplace with outcomes drawn from the ground truth; compare ours with
    exploration, ours without, and a T-learner LightGBM loop on the same rounds."""
    from offerlab.campaign.simulate import simulate, summary_table

    out = _refuse_existing(out_path, force, "--out")
    runs = [simulate(rounds, customers, s, budget_share=budget_share, explore=explore, holdout=holdout,
                     explore_decay=explore_decay, quick=quick) for s in seeds]
    result = runs[0] if len(runs) == 1 else {**runs[0], "seeds": runs}
    result["table"] = summary_table(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    tmp.replace(out)
    for row in result["table"]:
        click.echo(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    click.echo(f"wrote {out}")
