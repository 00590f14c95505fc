"""The campaign loop: plan (budget, holdout, exploration with known probabilities), evaluate (outcome refusals,
IPW / SNIPW / DR against hand-computed values and the truth), campaign logs, and the commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from offerlab.campaign.evaluate import evaluate, incremental_profit, match_outcomes
from offerlab.campaign.logs import combine_logs, log_from_plan, read_log, write_log
from offerlab.campaign.plan import Design, Economics, assign, assignment_probabilities, make_plan, read_plan, write_plan
from offerlab.cli import main
from offerlab.data.schema import DataValidationError

ECON = Economics(["none", "d5", "d10", "d15"], np.array([0.0, 0.05, 0.10, 0.15]), margin=0.4, contact_cost=0.1)


def _matrices(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    profit = rng.normal(0.5, 2.0, (n, 4))
    profit[:, 0] = 0.0
    spend = np.abs(rng.normal(2.0, 1.0, (n, 4)))
    spend[:, 0] = 0.0
    return profit, spend


def test_assignment_probabilities_by_hand():
    p = assignment_probabilities(np.array([2, 0]), 4, explore=0.1, holdout=0.05)
    floor = 0.95 * 0.1 / 4  # 0.02375
    assert p[0] == pytest.approx([0.05 + floor, floor, floor + 0.95 * 0.9, floor])
    assert p[1] == pytest.approx([0.05 + floor + 0.855, floor, floor, floor])
    assert p.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_a_plan_never_exceeds_its_budget_and_draws_its_arms_at_the_design_rates():
    profit, spend = _matrices()
    full = spend[np.arange(len(spend)), np.argmax(profit, axis=1)].sum()
    for share in (0.3, 0.5, 0.8):
        a = assign(profit, spend, Design(share * full, explore=0.1, holdout=0.05, seed=3))
        assert a.spend_explore + a.spend_plan <= share * full + 1e-9
        given = spend[np.arange(len(spend)), a.level].sum()
        assert given == pytest.approx(a.spend_explore + a.spend_plan)
    assert (a.arm == 2).mean() == pytest.approx(0.05, abs=0.01)
    assert (a.arm == 1).mean() == pytest.approx(0.095, abs=0.015)
    assert (a.level[a.arm == 2] == 0).all()  # the holdout gets nothing
    assert (a.level[a.arm == 0] == a.planned[a.arm == 0]).all()
    assert (a.propensity >= 0.95 * 0.1 / 4 - 1e-12).all()


def test_refused_designs():
    profit, spend = _matrices(2000)
    with pytest.raises(ValueError, match="exploration share alone"):
        assign(profit, spend, Design(1.0, explore=0.5))
    with pytest.raises(ValueError, match="--budget must be a non-negative"):
        Design(-5.0)
    with pytest.raises(ValueError, match="--explore"):
        Design(10.0, explore=1.0)
    with pytest.raises(ValueError, match="--holdout"):
        Design(10.0, holdout=-0.1)


def _plan(n=3000, seed=0, budget=400.0):
    rng = np.random.default_rng(seed)
    conv = np.clip(rng.uniform(0.05, 0.2, (n, 1)) + np.array([0.0, 0.02, 0.04, 0.05]) * rng.uniform(0, 2, (n, 1)),
                   0, 1)
    revenue = conv * 50.0 * (1 - ECON.discounts)
    pred = {"conversion": conv, "revenue": revenue}
    plan = make_plan(pred, ECON, [f"c{i}" for i in range(n)], Design(budget, seed=seed))
    return plan, pred


def test_plan_rows_and_summary_and_file_round_trip(tmp_path):
    plan, _ = _plan()
    f = plan.frame
    assert {"customer_id", "level", "planned_level", "arm", "propensity", "expected_profit", "expected_spend",
            "propensity_none", "propensity_d15"} <= set(f.columns)
    assert f["expected_spend"].sum() <= 400.0 + 1e-9
    assert plan.summary["expected_spend"] == pytest.approx(f["expected_spend"].sum())
    assert plan.summary["arms"]["holdout"] == (f["arm"] == "holdout").sum()
    assert (np.diff(plan.curve["expected_profit"]) >= -1e-6).all()  # more budget never earns less
    write_plan(plan, tmp_path / "plan.parquet")
    rows, summary = read_plan(tmp_path / "plan.parquet")
    assert summary["budget"] == 400.0 and len(rows) == len(f)
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="is not an Offerlab plan"):
        read_plan(tmp_path / "other.parquet")


def _outcomes(plan):
    f = plan.frame
    return pd.DataFrame({"customer_id": f["customer_id"], "conversion": 0.0, "revenue": 0.0})


def test_outcomes_that_do_not_match_the_plan_are_refused_without_naming_customers():
    plan, _ = _plan(200)
    good = _outcomes(plan)
    cases = {
        "column missing": good.drop(columns="revenue"),
        "repeat a customer": pd.concat([good, good.head(1)]),
        "not in the plan": pd.concat([good, good.head(1).assign(customer_id="stranger-7")]),
        "have no outcome row": good.iloc[5:],
        "must be 0 or 1": good.assign(conversion=2.0),
        "are not numbers": good.assign(revenue="lots"),
        "are negative": good.assign(revenue=-1.0),
        "another level than the plan assigned": good.assign(treatment="d15").assign(
            treatment=np.where(plan.frame["level"] == "d15", "none", "d15")),
    }
    for message, frame in cases.items():
        with pytest.raises(DataValidationError, match=message) as e:
            match_outcomes(plan.frame, frame)
        assert "stranger-7" not in str(e.value) and "c1" not in str(e.value).split()
    filled = match_outcomes(plan.frame, good.iloc[5:], missing_as_no_purchase=True)
    assert len(filled) == 200 and filled["conversion"].iloc[:5].eq(0).all()


def test_incremental_profit_by_hand():
    y = np.array([10.0, 0.0, 4.0, 6.0])
    ctl = np.array([0.0, 1.0, 1.0, 0.0])
    e0 = np.array([0.5, 0.5, 0.25, 0.5])
    r = incremental_profit(y, ctl, e0, mu0=np.array([1.0, 1.0, 2.0, 1.0]))
    # IPW: mean(y) - mean(1[T=0] y / e) = 5 - (0 + 16) / 4 = 1; times 4 customers
    assert r["ipw"] == pytest.approx(4.0)
    # SNIPW: 5 - (0/0.5 + 4/0.25) / (1/0.5 + 1/0.25) = 5 - 16/6
    assert r["snipw"] == pytest.approx(4 * (5 - 16 / 6))
    # DR: sum of y - mu0 - 1[T=0] (y - mu0) / e = 9 + (0 - 1 + 2) + (4 - 2 - 8) + 5 = 9
    assert r["dr"] == pytest.approx(9.0)
    assert r["ipw_ci"][0] < r["ipw"] < r["ipw_ci"][1]


def test_evaluate_recovers_the_true_incremental_profit_of_a_plan():
    """Outcomes drawn from a known truth (the predictions): the DR and SNIPW intervals cover the truth."""
    plan, pred = _plan(30_000, seed=1, budget=3000.0)
    f = plan.frame
    code = {lv: j for j, lv in enumerate(ECON.levels)}
    t = f["level"].map(code).to_numpy()
    rng = np.random.default_rng(7)
    rows = np.arange(len(f))
    conv = (rng.random(len(f)) < pred["conversion"][rows, t]).astype(float)
    out = pd.DataFrame({"customer_id": f["customer_id"], "conversion": conv, "revenue": conv * 50 * (1 - ECON.discounts[t])})
    profit, _ = ECON.matrices(pred["revenue"])
    truth = profit[rows, t].sum()
    r = evaluate(f, plan.summary, out)
    ov = r["overall"]
    assert ov["expected"] == pytest.approx(truth)
    for est in ("dr", "snipw"):
        lo, hi = ov[f"{est}_ci"]
        assert lo <= truth <= hi, (est, lo, truth, hi)
    assert ov["dr_ci"][1] - ov["dr_ci"][0] < ov["ipw_ci"][1] - ov["ipw_ci"][0]  # the model's baseline helps
    assert set(r["groups"]["planned_level"]) <= set(ECON.levels)
    assert len(r["calibration"]["profit"]) == 5


def test_logs_keep_their_probabilities_and_a_plan_without_exploration_is_outside_the_support(tmp_path):
    feats = pd.DataFrame({"x": np.arange(3000.0)})
    plans = {}
    for name, explore in (("explored", 0.1), ("greedy", 0.0)):
        plan, _ = _plan(3000, budget=300.0)
        plan = make_plan(_plan(3000)[1], ECON, plan.frame["customer_id"], Design(300.0, explore=explore))
        frame = pd.concat([plan.frame, feats.add_prefix("f.")], axis=1)
        plans[name] = log_from_plan(frame, _outcomes(plan), plan.summary)
    write_log(plans["explored"], tmp_path / "log.parquet", "explored")
    back = read_log(tmp_path / "log.parquet")
    assert np.allclose(back.propensity, plans["explored"].propensity) and back.levels == ECON.levels
    combined, report = combine_logs([("explored", back), ("greedy", plans["greedy"])])
    assert len(combined) == 6000 and combined.propensity.shape == (6000, 4)
    by = {r["log"]: r for r in report}
    # known probabilities: every row is used (the choice is ignorable given the features); the greedy plan's
    # unplanned levels had probability 0, so its customers are outside the common support
    assert combined.assignment == "randomised" and by["greedy"]["used"] == 3000
    assert by["explored"]["outside_support"] == 0 and by["greedy"]["outside_support"] == 3000
    crm = plans["greedy"].subset(np.arange(3000))
    crm.assignment = "targeted"  # one targeted log: the doubly robust path, which trims outside the support
    combined, report = combine_logs([("explored", back), ("crm", crm)])
    assert combined.assignment == "targeted" and {r["log"]: r["used"] for r in report} == {"explored": 3000, "crm": 0}
    other = log_from_plan(pd.concat([plan.frame, feats.add_prefix("f.")], axis=1), _outcomes(plan),
                          {**plan.summary, "economics": {**plan.summary["economics"],
                                                         "discounts": {**ECON.to_dict()["discounts"], "d5": 0.07}}})
    with pytest.raises(ValueError, match="prices level 'd5'"):
        combine_logs([("explored", back), ("other", other)])


# ------------------------------------------------------------------------------------- the commands
TINY = {"base": None, "net": {"hidden": [16], "head_hidden": 8, "ensemble": 2, "patience": 2},
        "trainer": {"max_epochs": 6}}


def _invoke(*args, code=0):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == code, r.output
    return r


@pytest.mark.slow
def test_plan_evaluate_learn_on_a_strangers_spec(tmp_path, monkeypatch):
    """The README's loop on a stranger's files (other level names, gross revenue, Y/N labels): train, plan under
    a budget, evaluate outcomes in the stranger's own columns, learn again from the campaign's log."""
    from pathlib import Path

    from offerlab.data.stranger import LEVEL_NAMES, write_stranger_files
    from offerlab.data.synth import generate

    synth = generate(2500, seed=3)
    spec = write_stranger_files(synth, tmp_path / "files")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "base": str(root / "configs/uplift/default.yaml")}))
    trained = json.loads(_invoke("train", "uplift", "--data", spec, "--config", cfg, "--no-progress").stdout)
    uri = f"runs:/{trained['run_id']}/model"
    plan_path = tmp_path / "plan.parquet"
    _invoke("campaign", "plan", "--data", spec, "--model-uri", uri, "--out", plan_path, code=2)  # no budget
    assert not plan_path.exists()
    _invoke("promote", "uplift", "--run", trained["run_id"])  # the README's route: the registry's champion, no URI
    r = _invoke("campaign", "plan", "--data", spec, "--budget", 800, "--seed", 1, "--out", plan_path)
    summary = json.loads(r.stdout)
    assert summary["model_uri"] == "models:/offerlab-uplift@champion" and summary["model_version"] == "1"
    assert summary["expected_spend"] <= 800 and summary["customers"] == synth.transactions["customer_id"].nunique()
    assert summary["economics"]["discounts"] == {"holdout": 0.0, "promo_a": 0.05, "promo_b": 0.10, "promo_c": 0.15}
    import mlflow

    run = mlflow.get_run(summary["run_id"])
    assert run.data.metrics["expected_spend"] <= 800 and "expected_profit_ci_lo" in run.data.metrics
    assert "plots/profit_vs_budget.png" in [a.path for a in mlflow.MlflowClient().list_artifacts(
        summary["run_id"], "plots")]
    rows, _ = read_plan(plan_path)
    assert set(rows["level"]) <= set(LEVEL_NAMES.values())
    # outcomes in the stranger's own columns: gross list value, Y/N, drawn from the truth under the level given
    inverse = {v: k for k, v in LEVEL_NAMES.items()}
    truth = synth.truth_campaign.set_index("customer_id").loc[rows["customer_id"]]
    p = np.array([truth[f"p_conv_{inverse[lv]}"].iloc[i] for i, lv in enumerate(rows["level"])])
    bought = np.random.default_rng(0).random(len(rows)) < p
    outcomes = pd.DataFrame({"client_ref": rows["customer_id"], "offer": rows["level"],
                             "bought": np.where(bought, "Y", "N"), "list_value": bought * 60.0,
                             "returned_list_value": bought * 60.0 * (np.arange(len(rows)) % 5 == 0)})
    outcomes.to_csv(tmp_path / "outcomes.csv", index=False)
    result_path = tmp_path / "result.json"
    result_path.write_text("earlier")
    _invoke("campaign", "evaluate", "--plan", plan_path, "--outcomes", tmp_path / "outcomes.csv", "--data", spec,
            "--out", result_path, code=2)  # an existing result is not overwritten
    assert result_path.read_text() == "earlier"
    outcomes.iloc[3:].to_csv(tmp_path / "short.csv", index=False)
    r = _invoke("campaign", "evaluate", "--plan", plan_path, "--outcomes", tmp_path / "short.csv", "--data", spec,
                code=2)
    assert "3 of" in r.output and "--missing-as-no-purchase" in r.output
    r = _invoke("campaign", "evaluate", "--plan", plan_path, "--outcomes", tmp_path / "outcomes.csv",
                code=2)  # without a spec, the revenue's meaning must be said
    assert "--revenue" in r.output
    log_path = tmp_path / "week1.parquet"
    r = _invoke("campaign", "evaluate", "--plan", plan_path, "--outcomes", tmp_path / "outcomes.csv", "--data", spec,
                "--out", result_path, "--log-out", log_path, "--force")
    out = json.loads(r.stdout)
    result = json.loads(result_path.read_text())
    assert result["revenue_semantics"] == "gross" and result["customers"] == len(rows)
    assert out["incremental_profit_dr_ci"][0] < out["incremental_profit_dr"] < out["incremental_profit_dr_ci"][1]
    assert set(result["groups"]["planned_level"]) <= set(LEVEL_NAMES.values())
    # net revenue after the discount went into the profit: a promo_c buyer's 60 list value is 51 paid
    log = read_log(log_path)
    paid = log.revenue[(log.treatment_names == "promo_c") & (log.conversion == 1)]
    assert paid.size == 0 or np.allclose(paid, 51.0)
    # the spec counts returns: what came back is logged (net too) and, without it, the outcomes are refused
    back = log.returned_revenue[(log.treatment_names == "promo_c") & (log.conversion == 1)]
    assert np.isin(np.round(back, 6), [0.0, 51.0]).all()
    assert log.returned_revenue.sum() > 0 and (log.returned_revenue <= log.revenue + 1e-9).all()
    canonical = pd.DataFrame({"customer_id": rows["customer_id"], "conversion": bought.astype(int),
                              "revenue": bought * 60.0})
    canonical.to_parquet(tmp_path / "no_returns.parquet")
    r = _invoke("campaign", "evaluate", "--plan", plan_path, "--outcomes", tmp_path / "no_returns.parquet",
                "--revenue", "gross", code=2)
    assert "returned_revenue" in r.output and "count returns" in r.output
    # learn again from the campaign's own log beside the spec's campaign
    r = _invoke("train", "uplift", "--data", spec, "--config", cfg, "--no-progress", "--campaign-log", log_path)
    again = json.loads(r.stdout)
    assert [x["log"] for x in again["campaign_logs"]] == ["spec campaign", "week1.parquet"]
    from offerlab.uplift.model import UpliftModel  # noqa: F401 - the pyfunc's model

    model = mlflow.pyfunc.load_model(f"runs:/{again['run_id']}/model").unwrap_python_model().model
    logs = {x["log"]: x for x in model.fit_report["logs"]}
    assert logs["week1.parquet"]["propensity"].startswith("logged") and logs["week1.parquet"]["outside_support"] == 0
    assert sum(x["rows"] for x in logs.values()) == len(synth.campaign) + len(rows)


@pytest.mark.slow
def test_simulate_writes_the_rounds_of_every_loop(tmp_path):
    out = tmp_path / "sim.json"
    _invoke("campaign", "simulate", "--rounds", 2, "--customers", 1500, "--quick", "--out", out)
    sim = json.loads(out.read_text())
    assert len(sim["rounds"]) == 2 and set(sim["loops"]) == {"offerlab_greedy", "t_learner_gbm"}
    for entry in sim["rounds"] + sim["loops"]["t_learner_gbm"]:
        assert {"true_profit", "oracle_profit", "observable_oracle_profit", "share_of_observable_oracle",
                "estimated_profit", "estimated_ci", "budget", "spend"} <= set(entry)
        assert entry["expected_spend"] <= entry["budget"] + 1e-6
    assert sim["rounds"][0]["explore"] == 0.1 and sim["loops"]["offerlab_greedy"][0]["explore"] == 0.0
    _invoke("campaign", "simulate", "--rounds", 1, "--customers", 1500, "--out", out, code=2)  # exists


def test_plan_economics_take_the_models_rates_and_refuse_a_level_without_one():
    from offerlab.campaign.cli import plan_economics
    from offerlab.uplift.policy import PolicyConfig

    policy = PolicyConfig(margin=0.4, contact_cost=0.1)
    econ, budget = plan_economics(None, policy, ECON.levels, dict(zip(ECON.levels, ECON.discounts, strict=True)))
    assert econ.discounts.tolist() == [0.0, 0.05, 0.10, 0.15] and budget is None and econ.margin == 0.4
    with pytest.raises(ValueError, match="d5"):
        plan_economics(None, policy, ECON.levels, None)
