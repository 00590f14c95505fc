"""Discount policy: economics by hand, the budget is never exceeded, allocation near optimal, OPE covers truth."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from offerlab.uplift.policy import (
    PolicyConfig,
    choose_levels,
    level_economics,
    observed_profit,
    policy_value,
    recommend,
)


def test_level_economics_by_hand():
    # revenue net of discount: control 10, 10% level 12 -> list price 13.333.., discount paid 1.333..;
    # the margin is on the list price and the discount is charged once: 0.5 (13.33 - 10) - 1.33 - 0.2
    profit, spend = level_economics(np.array([[10.0, 12.0]]), np.array([0.0, 0.1]), margin=0.5, contact_cost=0.2)
    assert spend[0, 1] == pytest.approx(12 * 0.1 / 0.9 + 0.2)
    assert profit[0, 1] == pytest.approx(0.5 * (12 / 0.9 - 10) - 12 * 0.1 / 0.9 - 0.2)
    assert profit[0, 1] == pytest.approx(12 - 0.5 * 12 / 0.9 - 0.2 - (10 - 0.5 * 10))  # net - goods cost - contact
    assert profit[0, 0] == 0 and spend[0, 0] == 0


def test_unconstrained_choice_is_best_level_or_none():
    profit = np.array([[0, -1.0, -2.0], [0, 1.0, 3.0], [0, 2.0, 1.0]])
    spend = np.c_[np.zeros(3), np.ones((3, 2))]
    choice, used = choose_levels(profit, spend)
    assert choice.tolist() == [0, 2, 1]
    assert used == pytest.approx(2.0)


@pytest.mark.parametrize("seed", range(5))
def test_budget_never_exceeded_and_profit_grows_with_budget(seed):
    rng = np.random.default_rng(seed)
    n, n_levels = 2000, 4
    spend = np.c_[np.zeros(n), rng.gamma(2.0, 1.0, (n, n_levels - 1))]
    profit = np.c_[np.zeros(n), rng.normal(0.3, 1.0, (n, n_levels - 1)) * spend[:, 1:]]
    _, full = choose_levels(profit, spend)
    last = -np.inf
    for share in (0.0, 0.01, 0.1, 0.3, 0.5, 0.99, 1.0, 2.0):
        choice, used = choose_levels(profit, spend, share * full)
        assert used <= share * full + 1e-9
        assert used == pytest.approx(spend[np.arange(n), choice].sum())
        total = profit[np.arange(n), choice].sum()
        assert total >= last - 1e-9
        last = total


def test_budgeted_allocation_close_to_brute_force_optimum():
    rng = np.random.default_rng(7)
    ratios = []
    for _ in range(20):
        n, n_levels = 6, 3
        spend = np.c_[np.zeros(n), rng.uniform(0.5, 2.0, (n, n_levels - 1))]
        profit = np.c_[np.zeros(n), rng.uniform(-0.5, 2.0, (n, n_levels - 1))]
        budget = 0.4 * spend[:, 1:].sum()
        best = 0.0
        for combo in itertools.product(range(n_levels), repeat=n):
            c = np.array(combo)
            if spend[np.arange(n), c].sum() <= budget:
                best = max(best, profit[np.arange(n), c].sum())
        choice, used = choose_levels(profit, spend, budget)
        assert used <= budget + 1e-12
        ratios.append(profit[np.arange(n), choice].sum() / best)
    assert min(ratios) > 0.8 and np.mean(ratios) > 0.95


def test_ipw_and_dr_confidence_intervals_cover_the_true_value():
    rng = np.random.default_rng(0)
    n, n_levels = 40000, 3
    x = rng.normal(size=n)
    t = rng.integers(0, n_levels, n)
    e = np.full((n, n_levels), 1 / n_levels)
    effect = np.c_[np.zeros(n), 0.5 * (x > 0), np.full(n, 0.2)]
    y = 1.0 + effect[np.arange(n), t] + rng.normal(size=n)
    choice = np.where(x > 0, 1, 2)
    truth = effect[np.arange(n), choice].mean()  # incremental over treat-none
    val = policy_value(choice, t, y, e, mu=1.0 + effect)
    assert val["ipw_ci"][0] <= truth <= val["ipw_ci"][1]
    assert val["dr_ci"][0] <= truth <= val["dr_ci"][1]
    assert val["dr_ci"][1] - val["dr_ci"][0] < val["ipw_ci"][1] - val["ipw_ci"][0]  # DR is tighter


def test_observed_profit_counts_discount_and_contact():
    prof = observed_profit(np.array([0, 1]), np.array([10.0, 9.0]), np.array([0.0, 0.1]), 0.4, 0.1)
    # treated: list price 9 / 0.9 = 10, margin 4.0 on it, minus the 1.0 discount paid and the contact
    assert prof.tolist() == pytest.approx([4.0, 0.4 * 10 - 1.0 - 0.1])


def test_recommend_one_customer_and_refuses_bad_discount():
    pred = {"conversion": np.array([[0.1, 0.3]]), "revenue": np.array([[5.0, 14.0]])}
    rec = recommend(pred, ["none", "10pct"], PolicyConfig(margin=0.5, contact_cost=0.1,
                                                         discounts={"10pct": 0.1}), customer_id=["c1"])
    assert rec.loc[0, "level"] == "10pct" and bool(rec.loc[0, "treat"])
    assert rec.loc[0, "expected_incremental_profit"] == pytest.approx(0.5 * (14 / 0.9 - 5) - 14 * 0.1 / 0.9 - 0.1)
    with pytest.raises(ValueError, match="discount rates"):
        PolicyConfig(margin=0.5, contact_cost=0.1, discounts={"10pct": 1.5}).discount_rates(["none", "10pct"])


def test_money_has_no_default():
    """A level without a rate is refused (it was priced at 0% before); margin and contact cost must be given."""
    policy = PolicyConfig(margin=0.4, contact_cost=0.1, discounts={"d5": 0.05})
    with pytest.raises(ValueError, match=r"no discount rate for level 'd10': set policy.discounts.d10"):
        policy.discount_rates(["none", "d5", "d10"])
    assert policy.discount_rates(["none", "d5", "d10"], {"d10": 0.1}).tolist() == [0.0, 0.05, 0.1]  # the data's own
    with pytest.raises(ValueError, match="control level 'none' gets no discount"):
        PolicyConfig(margin=0.4, contact_cost=0.1, discounts={"none": 0.05}).discount_rates(["none", "d5"], {"d5": 0.1})
    for missing in ("margin", "contact_cost"):
        with pytest.raises(ValueError, match=missing):
            PolicyConfig(**{k: v for k, v in {"margin": 0.4, "contact_cost": 0.1}.items() if k != missing})


def test_budgeted_allocation_meets_the_lagrangian_dual_bound():
    """On many customers the allocation is optimal up to one customer's profit: within 0.5% of the dual
    bound min_lambda sum_i max_l (profit - lambda spend) + lambda B, an upper bound on any feasible plan."""
    rng = np.random.default_rng(3)
    n = 5000
    spend = np.c_[np.zeros(n), rng.gamma(2.0, 0.5, (n, 3))]
    profit = np.c_[np.zeros(n), rng.normal(0.2, 1.0, (n, 3)) * spend[:, 1:]]
    _, full = choose_levels(profit, spend)
    for share in (0.1, 0.3, 0.7):
        budget = share * full
        choice, used = choose_levels(profit, spend, budget)
        got = profit[np.arange(n), choice].sum()
        dual = minimize_scalar(lambda lam, b=budget: (profit - lam * spend).max(axis=1).sum() + lam * b,  # convex
                               bounds=(0.0, 5.0), method="bounded", options={"xatol": 1e-6})
        bound = dual.fun
        assert used <= budget and got >= 0.995 * bound


def test_oracle_gap_is_one_when_the_model_knows_the_truth():
    """The oracle share is 1.00 at every budget when the predictions are the true expected outcomes (the
    policy, the truth and the evaluation share one profit convention and one allocator)."""
    from types import SimpleNamespace

    from offerlab.uplift.bench import oracle_gap

    rng = np.random.default_rng(1)
    n, levels, d = 3000, ["control", "d05", "d15"], np.array([0.0, 0.05, 0.15])
    p = np.clip(0.2 + rng.normal(0, 0.08, (n, 3)) + np.array([0.0, 0.03, 0.06]), 0.01, 0.99)
    basket = rng.lognormal(3.0, 0.5, n)[:, None] * (1 + 1.5 * d)
    truth = pd.DataFrame({f"{q}_{lv}": v[:, i] for q, v in (("p_conv", p), ("exp_revenue", p * basket * (1 - d)))
                          for i, lv in enumerate(levels)})
    pred = {"conversion": p, "revenue": p * basket * (1 - d)}
    out = oracle_gap(pred, SimpleNamespace(levels=levels), truth, PolicyConfig(margin=0.4, contact_cost=0.1), d)
    for share in ("0.1", "0.3", "1"):
        assert out["profit_share"][share]["share_of_oracle"] == pytest.approx(1.0)
        assert out["profit_share"][share]["true_spend_used"] <= out["profit_share"][share]["budget"] + 1e-9
    assert all(v == pytest.approx(0.0) for v in out["uplift_rmse"].values())
