"""Which discount, if any: per-customer choice by expected incremental profit, under an optional budget,
and its value off-policy on held-out randomised data.

Economics of level l for one customer (control = no contact, no discount). Revenue is what the customer
pays, net of the discount; the basket at list price is gross = rev / (1 - d); the margin is earned on the
list price (the goods cost the same whatever the discount), and the discount is paid out of it once:
    spend_l  = expected discount paid + contact cost = E[rev_l] d_l / (1 - d_l) + contact_cost
    profit_l = margin (E[gross_l] - E[gross_control]) - spend_l        (incremental over control)
i.e. realised profit = margin x gross - discount paid - contact = rev - (1 - margin) gross - contact.
With returns counted (`policy.returns`, see `uplift/returns.py`) the same identity runs on the kept revenue
rev - returned (the refund loses the margin of the goods sent back and refunds their discount), and each
return costs `handling_cost`: profit_l -= handling_cost (P(return)_l - P(return)_control); spend stays the
discount paid on what is kept plus the contact cost (handling is an operating cost, not campaign spend).
(margin x net revenue - discount paid would charge the discount twice: once inside the net revenue,
once as a cost.) The synthetic generator's truth (`synth.true_expected_profit`) uses the same identity.
Without a budget each customer gets argmax(0, profit_1, ..., profit_L). With a total budget B on expected spend, the choice is
a multiple-choice knapsack; we solve its Lagrangian relaxation (each customer maximises profit - lambda
spend; lambda found by bisection so that total spend <= B) and then fill the leftover budget greedily
with the best remaining upgrades by incremental profit per unit of spend. Spend never exceeds B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from offerlab.uplift.returns import ReturnsPolicy


class PolicyConfig(BaseModel):
    """Margin, contact cost, discount rates and budget of a campaign: money, so nothing has a default. The
    margin and contact cost must be given; a level's rate comes from `discounts` or from the data (the
    synthetic generator's meta, Hillstrom's e-mails at 0) and a level with neither is refused.
    `price_of_spend` is not set by hand as a rule: training with a budget stores the allocation's price here."""

    model_config = ConfigDict(extra="forbid")
    margin: float = Field(gt=0, le=1e6, description="profit per unit of list-price (gross) revenue")
    contact_cost: float = Field(ge=0, description="cost of contacting one customer with any level")
    discounts: dict[str, float] | None = Field(None, description="discount rate per level (0 <= d < 1)")
    budget: float | None = Field(None, ge=0, description="total expected spend allowed; None = unconstrained")
    price_of_spend: float | None = Field(None, ge=0, description="the budget's shadow price found at training "
                                         "(profit given up per unit of spend); serving picks argmax profit - "
                                         "price x spend one customer at a time. None = 0 (plain argmax)")
    returns: ReturnsPolicy | None = Field(None, description="how returns are counted (counted, handling_cost); "
                                          "required when the campaign logs returned_revenue")

    @property
    def counts_returns(self) -> bool:
        return self.returns is not None and self.returns.counted

    def level_matrices(self, pred: np.ndarray | dict, levels: list[str], default: dict[str, float] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Expected incremental profit and spend (n, L) of each level from the model's predictions per level
        (a dict with `revenue`, and `returned` / `p_return` when returns are counted; or the revenue array alone
        for a policy that does not count returns), at this policy's rates (`discount_rates(levels, default)`),
        margin, contact cost and returns treatment."""
        return self.matrices_at(pred, self.discount_rates(levels, default))

    def matrices_at(self, pred: np.ndarray | dict, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`level_matrices` at the rates `d` (levels order, already checked)."""
        if not isinstance(pred, dict):
            if self.counts_returns:
                raise ValueError("policy.returns.counted is true but only revenue was given: the economics need the "
                                 "model's expected returned revenue per level (a model fitted with returned_revenue)")
            return level_economics(pred, d, self.margin, self.contact_cost)
        if not self.counts_returns:
            return level_economics(pred["revenue"], d, self.margin, self.contact_cost)
        if "returned" not in pred:
            raise ValueError("policy.returns.counted is true but the model predicts no returns: it was fitted on a "
                             "campaign without returned_revenue; retrain with it or set policy.returns.counted: false")
        return level_economics(pred["revenue"], d, self.margin, self.contact_cost, returned=pred["returned"],
                               p_return=pred.get("p_return"), handling_cost=float(self.returns.handling_cost))

    def discount_rates(self, levels: list[str], default: dict[str, float] | None = None) -> np.ndarray:
        """Rates in `levels` order (levels[0] is the control: 0 unless stated); a treated level without a rate
        in `discounts` or in `default` (the data's own) is refused, never priced at 0."""
        rates = {levels[0]: 0.0, **(default or {}), **(self.discounts or {})} if levels else {}
        missing = [lv for lv in levels if lv not in rates]
        if missing:
            raise ValueError(f"no discount rate for level {missing[0]!r}: set policy.discounts.{missing[0]} "
                             f"(economics.discounts.{missing[0]} in a data spec); levels {levels}")
        d = np.array([float(rates[lv]) for lv in levels])
        if ((d < 0) | (d >= 1)).any():
            raise ValueError(f"discount rates must lie in [0, 1), got {dict(zip(levels, d.tolist(), strict=True))}")
        if levels and d[0] != 0.0:
            raise ValueError(f"the control level {levels[0]!r} gets no discount; its rate must be 0, got {d[0]}")
        return d


def level_economics(revenue: np.ndarray, discounts: np.ndarray, margin: float, contact_cost: float,
                    returned: np.ndarray | None = None, p_return: np.ndarray | None = None,
                    handling_cost: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Incremental profit and spend per customer and level (n, L); column 0 (control) is 0, 0.
    With `returned` (expected returned net revenue per level) the economics run on the kept revenue; with
    `handling_cost` > 0, `p_return` (probability of a return per level) prices each return."""
    revenue = np.clip(np.asarray(revenue, dtype=float), 0.0, None)  # a regressor may predict below 0
    if returned is not None:
        revenue = np.clip(revenue - np.asarray(returned, dtype=float), 0.0, None)
    d = np.asarray(discounts, dtype=float)
    gross = revenue / (1.0 - d)
    spend = gross - revenue + contact_cost  # discount paid + contact
    spend[:, 0] = 0.0
    profit = margin * (gross - gross[:, :1]) - spend
    if handling_cost > 0:
        if p_return is None:
            raise ValueError("a handling cost per return needs the probability of a return per level (p_return)")
        p = np.asarray(p_return, dtype=float)
        profit = profit - handling_cost * (p - p[:, :1])
    profit[:, 0] = 0.0
    return profit, spend


def control_profit(pred: dict, policy: PolicyConfig) -> np.ndarray:
    """Expected absolute profit under the control (no discount, no contact): margin x kept revenue, less the
    handling of its returns when they are counted (the base the DR estimate adds incremental profit to)."""
    rev = np.clip(pred["revenue"][:, 0], 0.0, None)
    if not policy.counts_returns:
        return policy.margin * rev
    kept = np.clip(rev - pred["returned"][:, 0], 0.0, None)
    out = policy.margin * kept
    if policy.returns.handling_cost:
        out = out - policy.returns.handling_cost * pred["p_return"][:, 0]
    return out


def choose_at_price(profit: np.ndarray, spend: np.ndarray, price: float) -> np.ndarray:
    """Level index per customer maximising profit - price x spend: the budgeted policy one customer at a time
    (serving), given the price of spend that the whole-file allocation found. Column 0 (none) scores 0, so
    "none" wins ties and losses."""
    return np.argmax(np.asarray(profit, dtype=float) - price * np.asarray(spend, dtype=float), axis=1)


_choose_at = choose_at_price


def _total(spend: np.ndarray, choice: np.ndarray) -> float:
    return float(spend[np.arange(len(choice)), choice].sum())


@dataclass(frozen=True)
class Allocation:
    """A budgeted choice: level index per customer (0 = none), the expected spend it uses, and the price of
    spend (the Lagrange multiplier lambda: each customer maximises profit - lambda spend; 0 = no budget bound)."""

    choice: np.ndarray
    used: float
    price: float


def allocate(profit: np.ndarray, spend: np.ndarray, budget: float | None = None, iters: int = 60) -> Allocation:
    """Level index per customer (0 = none) maximising total profit with total spend <= budget.

    Lagrangian bisection for the price of spend, then a greedy fill of the leftover budget with the best
    remaining upgrades by profit per unit of spend. Spend never exceeds the budget.
    """
    profit = np.asarray(profit, dtype=float)
    spend = np.asarray(spend, dtype=float)
    if (spend < 0).any():
        raise ValueError("spend must be non-negative")
    choice = _choose_at(profit, spend, 0.0)
    if budget is None or _total(spend, choice) <= budget:
        return Allocation(choice, _total(spend, choice), 0.0)
    rows = np.arange(len(profit))
    pos = spend > 0
    ratio = np.where(pos, profit / np.where(pos, spend, 1.0), 0.0)
    lo, hi = 0.0, max(float(ratio.max()), 0.0) + 1.0  # at hi no paid level is worth it
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if _total(spend, _choose_at(profit, spend, mid)) > budget:
            lo = mid
        else:
            hi = mid
    choice = _choose_at(profit, spend, hi)
    left = budget - _total(spend, choice)
    # greedy fill: each customer's best upgrade from the current choice that adds profit
    cur_p, cur_s = profit[rows, choice], spend[rows, choice]
    d_p, d_s = profit - cur_p[:, None], spend - cur_s[:, None]
    gain = np.where((d_p > 0) & (d_s <= left), d_p / np.maximum(d_s, 1e-12), -np.inf)
    best = np.argmax(gain, axis=1)
    cand = np.flatnonzero(np.isfinite(gain[rows, best]))
    if len(cand):
        cand = cand[np.argsort(-gain[cand, best[cand]], kind="stable")]
        cost = d_s[cand, best[cand]]
        take = cand[np.cumsum(cost) <= left + 1e-12]
        choice = choice.copy()
        choice[take] = best[take]
    used = _total(spend, choice)
    assert used <= budget + 1e-9 * max(1.0, budget), "budgeted allocation exceeded its budget"
    return Allocation(choice, used, float(hi))


def choose_levels(profit: np.ndarray, spend: np.ndarray, budget: float | None = None, iters: int = 60
                  ) -> tuple[np.ndarray, float]:
    """(choice, spend used) of `allocate`."""
    a = allocate(profit, spend, budget, iters)
    return a.choice, a.used


def recommend(pred: dict[str, np.ndarray], levels: list[str], policy: PolicyConfig, *, customer_id=None,
              discounts: dict[str, float] | None = None, budget: float | None = None, price: float = 0.0
              ) -> pd.DataFrame:
    """One row per customer: the level to give (or the control = none) and why, for a campaign file.
    Under a budget (`budget`, else the policy's) the budgeted allocation; without one each customer's
    argmax(profit - price x spend) (`price` 0: plain argmax).

    Columns: customer_id, level, treat (bool), expected_incremental_profit, expected_spend,
    p_conversion (under the chosen level), expected_revenue, uplift_conversion (vs control).
    """
    profit, spend = policy.level_matrices(pred, levels, discounts)
    budget = policy.budget if budget is None else budget
    choice = choose_levels(profit, spend, budget)[0] if budget is not None else choose_at_price(profit, spend, price)
    rows = np.arange(len(choice))
    n = len(choice)
    return pd.DataFrame({
        "customer_id": np.arange(n) if customer_id is None else np.asarray(customer_id),
        "level": np.asarray(levels, dtype=object)[choice],
        "treat": choice > 0,
        "expected_incremental_profit": profit[rows, choice],
        "expected_spend": spend[rows, choice],
        "p_conversion": pred["conversion"][rows, choice],
        "expected_revenue": pred["revenue"][rows, choice],
        "uplift_conversion": pred["conversion"][rows, choice] - pred["conversion"][:, 0],
        **({"expected_returned_revenue": pred["returned"][rows, choice]} if "returned" in pred else {}),
    })


# ---------------------------------------------------------------------------------------- off-policy value
def observed_profit(treatment: np.ndarray, revenue: np.ndarray, discounts: np.ndarray, margin: float,
                    contact_cost: float, returned: np.ndarray | None = None, handling_cost: float = 0.0
                    ) -> np.ndarray:
    """Realised profit of each logged customer: margin x gross (list-price) revenue - discount paid - contact
    cost if treated, with gross = revenue / (1 - d) (the convention of `level_economics`). With `returned` (the
    log's returned revenue, when returns are counted) on the kept revenue, less `handling_cost` per return."""
    d = np.asarray(discounts, dtype=float)[treatment]
    if returned is not None:
        revenue = revenue - returned
    gross = revenue / (1.0 - d)
    out = margin * gross - (gross - revenue) - contact_cost * (treatment > 0)
    if returned is not None and handling_cost > 0:
        out = out - handling_cost * (returned > 0)
    return out


def _mean_ci(psi: np.ndarray, z: float = 1.959964) -> tuple[float, list[float]]:
    m = float(psi.mean())
    se = float(psi.std(ddof=1) / np.sqrt(len(psi))) if len(psi) > 1 else float("nan")
    return m, [m - z * se, m + z * se]


def policy_value(choice: np.ndarray, treatment: np.ndarray, profit_obs: np.ndarray, propensity: np.ndarray,
                 mu: np.ndarray | None = None) -> dict:
    """Incremental profit per customer of a policy over treat-none, off-policy, with 95% normal CIs.

    IPW: psi_i = y_i (1[T_i = pi_i] / e_i(pi_i) - 1[T_i = 0] / e_i(0)).
    Doubly robust (when `mu`, the model's expected profit per level (n, L), is given):
    psi_i = mu_i(pi_i) - mu_i(0) + 1[T_i = pi_i] (y_i - mu_i(pi_i)) / e_i(pi_i) - 1[T_i = 0] (y_i - mu_i(0)) / e_i(0).
    """
    rows = np.arange(len(choice))
    e_pi, e_0 = propensity[rows, choice], propensity[:, 0]
    hit, ctl = (treatment == choice).astype(float), (treatment == 0).astype(float)
    out: dict = {}
    out["ipw"], out["ipw_ci"] = _mean_ci(profit_obs * (hit / e_pi - ctl / e_0))
    if mu is not None:
        m_pi, m_0 = mu[rows, choice], mu[:, 0]
        psi = m_pi - m_0 + hit * (profit_obs - m_pi) / e_pi - ctl * (profit_obs - m_0) / e_0
        out["dr"], out["dr_ci"] = _mean_ci(psi)
    out["share_treated"] = float((choice > 0).mean())
    return out


def evaluate_policy(choice: np.ndarray, treatment: np.ndarray, profit_obs: np.ndarray, propensity: np.ndarray,
                    mu: np.ndarray | None, levels: list[str], best_single: int) -> dict:
    """The chosen policy beside treat-none (0 by construction) and treat-all with the single best level
    (`best_single`, picked on training data), plus the difference policy - best single with its CI."""
    n = len(choice)
    ours = policy_value(choice, treatment, profit_obs, propensity, mu)
    single = policy_value(np.full(n, best_single), treatment, profit_obs, propensity, mu)
    rows = np.arange(n)
    diff = profit_obs * ((treatment == choice) / propensity[rows, choice]
                         - (treatment == best_single) / propensity[:, best_single])
    d_mean, d_ci = _mean_ci(diff)
    return {
        "policy_value": ours["ipw"], "policy_value_ci": ours["ipw_ci"],
        "policy_value_dr": ours.get("dr"), "policy_value_dr_ci": ours.get("dr_ci"),
        "share_treated": ours["share_treated"],
        "treat_none_value": 0.0,
        "best_single_level": levels[best_single], "best_single_value": single["ipw"],
        "best_single_value_ci": single["ipw_ci"], "best_single_value_dr": single.get("dr"),
        "policy_minus_best_single": d_mean, "policy_minus_best_single_ci": d_ci,
    }


def best_single_level(treatment: np.ndarray, profit_obs: np.ndarray, propensity: np.ndarray) -> int:
    """The level (0 = none) whose treat-all IPW value is highest on the given (training) data."""
    n, n_levels = propensity.shape
    values = [0.0] + [policy_value(np.full(n, lv), treatment, profit_obs, propensity)["ipw"]
                      for lv in range(1, n_levels)]
    return int(np.argmax(values))
