"""One budget everywhere for the discount policy: `score --budget` allocates over the whole file (one chunk = many
chunks = the in-memory allocation, never over budget), training stores the budget's price of spend with the model,
and `/offers` picks argmax(profit - price x spend) one customer at a time, with optional epsilon-greedy exploration
whose assignment probabilities are exact."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from offerlab.cli import main
from offerlab.serving.score import check_budget, discount_features, run_score
from offerlab.uplift.policy import PolicyConfig, allocate, choose_at_price, level_economics
from serving_models import serving_models  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tables(serving_models, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("budget_inputs")
    s = serving_models.synth
    some = s.customers["customer_id"].head(60)
    tx = s.transactions[s.transactions["customer_id"].isin(some)]
    paths = {"tx": d / "tx.parquet", "cust": d / "cust.parquet"}
    tx.to_parquet(paths["tx"])
    s.customers.to_parquet(paths["cust"])
    return paths, tx, s.customers


@pytest.fixture(scope="module")
def uplift_pyfunc(serving_models):  # noqa: F811
    from offerlab.serving.score import load_model

    return load_model("discount")


@pytest.fixture(scope="module")
def unconstrained(tables, tmp_path_factory):
    paths, _, _ = tables
    out = tmp_path_factory.mktemp("free") / "free.parquet"
    summary = run_score("discount", paths["tx"], out, customers=paths["cust"], progress=False)
    return summary, pd.read_parquet(out)


def _score(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["score", *args])
    return res.exit_code, res.output


def _matrices(frame: pd.DataFrame, pm, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    inner = pm.unwrap_python_model()
    levels = inner.model.levels
    rev = frame[[f"{prefix}expected_revenue_{lv}" for lv in levels]].to_numpy()
    d = inner.policy.discount_rates(levels, inner.model.discounts)
    return level_economics(rev, d, inner.policy.margin, inner.policy.contact_cost)


# ----------------------------------------------------------------------------------- batch scoring
def test_whole_file_allocation_one_chunk_equals_many_chunks_and_memory(tables, unconstrained, uplift_pyfunc,
                                                                       tmp_path):
    paths, tx, customers = tables
    free, free_frame = unconstrained
    assert free["budget"] is None and free["price_of_spend"] == 0.0 and free["price_source"] == "none"
    assert free["spend"] > 0, "the test model must treat someone for a budget to bind"
    budget = 0.3 * free["spend"]
    one = run_score("discount", paths["tx"], tmp_path / "one.parquet", customers=paths["cust"], progress=False,
                    budget=budget, chunk_size=10_000)
    many = run_score("discount", paths["tx"], tmp_path / "many.parquet", customers=paths["cust"], progress=False,
                     budget=budget, chunk_size=7)
    a, b = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "many.parquet")
    key = "customer_id"
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)  # same levels; numbers equal up to float32 batch rounding of the net
    assert one["price_of_spend"] == pytest.approx(many["price_of_spend"], rel=1e-5)
    assert one["price_of_spend"] > 0 and one["price_source"] == "budget"
    assert one["spend"] == pytest.approx(many["spend"]) and one["spend"] <= budget + 1e-9
    assert a["expected_spend"].sum() == pytest.approx(one["spend"]) and a["expected_spend"].sum() <= budget + 1e-9
    assert one["budget"] == budget and a["treat"].sum() < (free_frame["treat"]).sum()

    # = the in-memory allocation: the pyfunc's own budgeted predict on the whole file at once
    feats = discount_features(uplift_pyfunc, tx, customers, pd.Timestamp(one["as_of"]))
    mem = uplift_pyfunc.predict(feats.reset_index(drop=True), params={"budget": budget})
    mem.insert(0, key, feats.index.to_numpy())
    mem = mem.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[mem.columns], mem, check_dtype=False)
    profit, spend = _matrices(a, uplift_pyfunc)
    alloc = allocate(profit, spend, budget)
    assert alloc.price == pytest.approx(one["price_of_spend"])
    levels = uplift_pyfunc.unwrap_python_model().model.levels
    assert (np.asarray(levels, dtype=object)[alloc.choice] == a["level"].to_numpy()).all()


def test_offers_budget_applies_to_the_discount_columns(tables, unconstrained, tmp_path):
    paths, _, _ = tables
    free, _ = unconstrained
    budget = 0.5 * free["spend"]
    code, out = _score("offers", "--input", str(paths["tx"]), "--customers", str(paths["cust"]), "--budget",
                       str(budget), "--output", str(tmp_path / "offers.parquet"), "--chunk-size", "25",
                       "--samples", "4")
    assert code == 0, out
    offers = pd.read_parquet(tmp_path / "offers.parquet")
    assert offers["discount_expected_spend"].sum() <= budget + 1e-9
    assert '"price_of_spend"' in out and '"budget_source": "--budget"' in out


@pytest.mark.parametrize("bad", ["-1", "nan", "inf"])
def test_bad_budget_is_refused_naming_the_flag(tables, tmp_path, bad):
    paths, _, _ = tables
    code, msg = _score("discount", "--input", str(paths["tx"]), "--customers", str(paths["cust"]),
                       "--output", str(tmp_path / "x.parquet"), f"--budget={bad}")
    assert code == 2 and "--budget" in msg
    assert not (tmp_path / "x.parquet").exists()


def test_budget_refused_for_commands_without_discounts():
    with pytest.raises(ValueError, match="--budget"):
        check_budget(5.0, "timing")
    with pytest.raises(ValueError, match="--budget"):
        check_budget(-0.01, "discount")
    assert check_budget(None, "credit") is None and check_budget(0, "offers") == 0.0


# --------------------------------------------------------------------- batch = one at a time at the price
def test_choose_at_the_allocations_price_is_the_allocation_up_to_its_greedy_fill():
    rng = np.random.default_rng(0)
    n, L = 2000, 4
    spend = np.c_[np.zeros(n), rng.uniform(0.5, 3.0, (n, L - 1)).cumsum(axis=1)]
    profit = np.c_[np.zeros(n), rng.normal(0.3, 1.0, (n, L - 1)) * spend[:, 1:] ** 0.5]
    budget = 0.25 * spend[np.arange(n), choose_at_price(profit, spend, 0.0)].sum()
    a = allocate(profit, spend, budget)
    assert a.price > 0 and a.used <= budget
    one_by_one = choose_at_price(profit, spend, a.price)  # what serving gives each customer alone
    rows = np.arange(n)
    assert spend[rows, one_by_one].sum() <= budget
    differ = np.flatnonzero(one_by_one != a.choice)
    # the only differences are the allocation's greedy fill of its leftover budget: upgrades (more profit, more spend)
    assert len(differ) <= 0.02 * n
    assert (profit[differ, a.choice[differ]] > profit[differ, one_by_one[differ]]).all()
    assert (spend[differ, a.choice[differ]] > spend[differ, one_by_one[differ]]).all()
    # without a binding budget the price is 0 and both are the plain argmax
    free = allocate(profit, spend, None)
    assert free.price == 0.0 and (choose_at_price(profit, spend, 0.0) == free.choice).all()


def test_training_price_is_the_allocations_price_at_the_test_share_of_the_budget():
    from offerlab.uplift.train import training_price_of_spend

    rng = np.random.default_rng(1)
    model = SimpleNamespace(levels=["control", "d05", "d10"], discounts={"d05": 0.05, "d10": 0.10})
    pred = {"revenue": rng.gamma(2.0, 10.0, (500, 3)) * np.array([1.0, 1.1, 1.25])}
    policy = PolicyConfig(margin=0.4, contact_cost=0.1, budget=600.0)
    price = training_price_of_spend(model, pred, policy, 500, 2000)
    profit, spend = level_economics(pred["revenue"], np.array([0.0, 0.05, 0.10]), 0.4, 0.1)
    assert price == allocate(profit, spend, 600.0 * 500 / 2000).price and price > 0
    assert training_price_of_spend(model, pred, policy.model_copy(update={"budget": None}), 500, 2000) is None


# ------------------------------------------------------------------------- stored price: pyfunc round trip
@pytest.fixture(scope="module")
def priced_model(serving_models, uplift_pyfunc, tables, tmp_path_factory):  # noqa: F811
    """The serving test model re-logged with a stored price of spend, in a store of its own (the shared serving
    store stays as built), downloaded to a local folder: its URI is that folder."""
    import mlflow

    from offerlab.tracking import start_run
    from offerlab.uplift.pyfunc import log_pyfunc

    paths, tx, customers = tables
    inner = uplift_pyfunc.unwrap_python_model()
    feats = discount_features(uplift_pyfunc, tx, customers, pd.Timestamp("2024-12-31"))
    profit, spend = level_economics(inner.model.predict_levels(feats)["revenue"],
                                    inner.policy.discount_rates(inner.model.levels, inner.model.discounts),
                                    inner.policy.margin, inner.policy.contact_cost)
    price = allocate(profit, spend, 0.3 * spend[np.arange(len(spend)), profit.argmax(axis=1)].sum()).price
    assert price > 0
    policy = inner.policy.model_copy(update={"price_of_spend": price})
    folder = tmp_path_factory.mktemp("priced")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        mp.chdir(folder)
        with start_run("uplift", "budget-everywhere-test") as run:
            log_pyfunc(inner.model, policy, feats.head(5).reset_index(drop=True), folder / "artifacts")
        local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(folder / "m"))
    mlflow.set_tracking_uri(serving_models.tracking_uri)
    return str(local), price, feats


def test_stored_price_round_trips_and_is_used_by_predict_and_score(priced_model, tables, tmp_path):
    import mlflow

    uri, price, feats = priced_model
    pm = mlflow.pyfunc.load_model(uri)
    assert pm.unwrap_python_model().policy.price_of_spend == pytest.approx(price)
    out = pm.predict(feats.reset_index(drop=True))
    profit, spend = _matrices(out, pm)
    levels = np.asarray(pm.unwrap_python_model().model.levels, dtype=object)
    assert (out["level"].to_numpy() == levels[choose_at_price(profit, spend, price)]).all()
    assert (out["level"].to_numpy() != levels[profit.argmax(axis=1)]).any()  # the price changes some choices

    paths, _, _ = tables
    summary = run_score("discount", paths["tx"], tmp_path / "p.parquet", customers=paths["cust"], progress=False,
                        model_uri=uri, chunk_size=9)
    assert summary["price_source"] == "model" and summary["price_of_spend"] == pytest.approx(price)
    scored = pd.read_parquet(tmp_path / "p.parquet")
    p2, s2 = _matrices(scored, pm)
    assert (scored["level"].to_numpy() == levels[choose_at_price(p2, s2, price)]).all()


# ------------------------------------------------------------------------------------- /offers, one at a time
def _requests(serving_models, n: int):  # noqa: F811
    from offerlab.serving.contracts import DiscountRequest

    bodies = [serving_models.offers_request(n=k) for k in (3, 10, 50)]
    return [DiscountRequest.model_validate({**{k: b[k] for k in ("history", "as_of", "attributes")},
                                            "customer_id": f"r{i}"}) for i, b in enumerate(bodies * n)]


@pytest.mark.parametrize(("name", "value"), [("OFFERLAB_PRICE_OF_SPEND", "cheap"), ("OFFERLAB_PRICE_OF_SPEND", "-0.5"),
                                             ("OFFERLAB_PRICE_OF_SPEND", "nan"), ("OFFERLAB_EXPLORE", "1"),
                                             ("OFFERLAB_EXPLORE", "-0.1"), ("OFFERLAB_EXPLORE", "lots"),
                                             ("OFFERLAB_EXPLORE_SEED", "x")])
def test_bad_serving_settings_are_refused_at_start_naming_the_variable(serving_models, monkeypatch, name, value):  # noqa: F811
    from offerlab.serving.models import UpliftAdapter

    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        UpliftAdapter.load()


def test_discount_service_start_reports_a_bad_price(serving_models, monkeypatch):  # noqa: F811
    from serving.service import Discount

    monkeypatch.setenv("OFFERLAB_PRICE_OF_SPEND", "cheap")
    svc = Discount()
    assert not svc.wait_ready(30) and "OFFERLAB_PRICE_OF_SPEND" in svc.error


def test_price_precedence_env_over_stored_over_zero(serving_models, priced_model, monkeypatch):  # noqa: F811
    from offerlab.serving.models import UpliftAdapter

    uri, price, _ = priced_model
    monkeypatch.delenv("OFFERLAB_PRICE_OF_SPEND", raising=False)
    monkeypatch.delenv("OFFERLAB_EXPLORE", raising=False)
    assert UpliftAdapter.load().price_of_spend == 0.0  # the champion stores none: plain argmax
    stored = UpliftAdapter.load(uri)
    assert stored.price_of_spend == pytest.approx(price)
    reqs = _requests(serving_models, 4)
    for ans in stored.predict(reqs):
        p = np.array([lv.expected_incremental_profit for lv in ans.levels])
        s = np.array([lv.expected_spend for lv in ans.levels])
        best = int(choose_at_price(p[None], s[None], price)[0])
        assert ans.level == (ans.levels[best].level if best else None) == ans.greedy_level
        assert ans.price_of_spend == pytest.approx(price) and ans.assignment_probability == 1.0
    monkeypatch.setenv("OFFERLAB_PRICE_OF_SPEND", "1e6")
    env = UpliftAdapter.load(uri)
    assert env.price_of_spend == 1e6
    assert all(a.level is None and a.price_of_spend == 1e6 for a in env.predict(reqs))  # spend is never worth it


def test_exploration_probabilities_by_hand():
    from offerlab.serving.models import explore_levels

    greedy = np.array([0, 1, 2, 3] * 25_000)
    given, prob = explore_levels(greedy, 4, 0.2, np.random.default_rng(0))
    # eps / L + (1 - eps) = 0.05 + 0.8 = 0.85 for the greedy level, eps / L = 0.05 for each other level
    assert set(np.round(prob, 12)) == {0.85, 0.05}
    np.testing.assert_allclose(prob[given == greedy], 0.85)
    np.testing.assert_allclose(prob[given != greedy], 0.05)
    assert abs((given == greedy).mean() - 0.85) < 0.01
    for lv in range(4):  # every level, none included, is drawn about eps / L of the time off its greedy rows
        off = (greedy != lv)
        assert abs((given[off] == lv).mean() - 0.05) < 0.006
    same, p1 = explore_levels(greedy, 4, 0.0, None)
    assert (same == greedy).all() and (p1 == 1.0).all()


def test_answers_carry_the_assignment_probability(serving_models, monkeypatch):  # noqa: F811
    from offerlab.serving.models import UpliftAdapter

    for name in ("OFFERLAB_PRICE_OF_SPEND", "OFFERLAB_EXPLORE", "OFFERLAB_EXPLORE_SEED"):
        monkeypatch.delenv(name, raising=False)
    base = UpliftAdapter.load()
    reqs = _requests(serving_models, 100)
    greedy = [a.level for a in base.predict(reqs)]
    monkeypatch.setenv("OFFERLAB_EXPLORE", "0.2")
    monkeypatch.setenv("OFFERLAB_EXPLORE_SEED", "7")
    explorer = UpliftAdapter.load()
    assert explorer.explore == 0.2
    answers = explorer.predict(reqs)
    L = len(answers[0].levels)
    assert L == 4
    assert [a.greedy_level for a in answers] == greedy
    for a in answers:
        assert a.assignment_probability == pytest.approx(0.85 if a.level == a.greedy_level else 0.05)
    assert sum(a.level != a.greedy_level for a in answers) > 0
    again = UpliftAdapter.load().predict(reqs)  # same seed, same draws
    assert [a.level for a in again] == [a.level for a in answers]
    off = dataclasses.replace(explorer, explore=0.0, rng=None).predict(reqs)
    assert [a.level for a in off] == greedy and {a.assignment_probability for a in off} == {1.0}


def test_old_clients_still_parse_the_discount_answer():
    from offerlab.serving.contracts import DiscountAnswer

    old = {"customer_id": "c", "level": None, "expected_incremental_profit": 0.0,
           "levels": [{"level": "control", "expected_incremental_profit": 0.0, "expected_spend": 0.0,
                       "p_conversion": 0.1}], "model_version": "1", "model_ms": 0.5}
    ans = DiscountAnswer.model_validate(old)
    assert ans.price_of_spend is None and ans.assignment_probability is None and ans.greedy_level is None


# ------------------------------------------------------------------------------- training (about 10 s)
def test_training_with_a_budget_stores_the_price(mlflow_store, tmp_path):
    import mlflow

    from offerlab.data.synth import synth_to_dir
    from offerlab.uplift.config import load_config
    from offerlab.uplift.train import train_from_config

    synth_to_dir(1500, 0, tmp_path / "synth")
    cfg = load_config(None, {"name": "t", "data": {"dataset": "synth", "synth_dir": str(tmp_path / "synth")},
                             "net": {"hidden": [8], "head_hidden": 4, "ensemble": 1, "batch_size": 512,
                                     "patience": 1},
                             "trainer": {"max_epochs": 2}, "policy": {"margin": 0.4, "contact_cost": 0.1,
                                                                       "budget": 50.0,
                                                                       "returns": {"counted": True,
                                                                                   "handling_cost": 3.0}}})
    summary = train_from_config(cfg)
    run = mlflow.get_run(summary["run_id"])
    price = run.data.metrics["price_of_spend"]
    assert price > 0 and summary["metrics"]["price_of_spend"] == price  # the budget binds
    pm = mlflow.pyfunc.load_model(f"runs:/{summary['run_id']}/model")
    assert pm.unwrap_python_model().policy.price_of_spend == pytest.approx(price)


def test_spec_budget_is_the_default_and_the_flag_wins(tables, unconstrained, monkeypatch, tmp_path):
    import json

    import offerlab.cli
    import offerlab.serving.score as score
    from offerlab.serving.score import ScoreInputs

    paths, tx, customers = tables
    free, _ = unconstrained
    spec_budget = 0.2 * free["spend"]
    fake = SimpleNamespace(spec=SimpleNamespace(economics=SimpleNamespace(budget=spec_budget)))
    monkeypatch.setattr(offerlab.cli, "open_spec", lambda path, sets: fake if path else None)
    monkeypatch.setattr(score, "spec_inputs", lambda command, spec: ScoreInputs(transactions=tx, customers=customers))
    code, out = _score("discount", "--data", "spec.yaml", "--output", str(tmp_path / "a.parquet"))
    assert code == 0, out
    summary = json.loads(out[out.index("{"):])
    assert summary["budget"] == spec_budget and summary["budget_source"] == "economics.budget"
    assert summary["spend"] <= spec_budget + 1e-9
    code, out = _score("discount", "--data", "spec.yaml", "--budget", "0", "--output", str(tmp_path / "b.parquet"))
    summary = json.loads(out[out.index("{"):])
    assert code == 0 and summary["budget"] == 0 and summary["budget_source"] == "--budget" and summary["spend"] == 0
