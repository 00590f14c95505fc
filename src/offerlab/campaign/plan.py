"""Plan a discount campaign: the budgeted policy per customer, a randomised holdout and exploration with known
probabilities, so that what the campaign earned can be measured afterwards and the next model can learn from it.

Assignment scheme (every probability is known and logged):
1. holdout: each customer independently with probability h gets nothing (the control that prices the plan);
2. exploration: each remaining customer with probability eps gets a level drawn uniformly over all L levels
   ("none" included): epsilon-greedy over levels;
3. the rest get the budgeted policy's level: each customer's best level at the price of spend that
   `offerlab.uplift.policy.allocate` finds for them under the budget left after the exploration rows' spend.
The planned (greedy) level of every row, holdout and exploration included, is its best level at that one price.
So customer i receives level l with probability
    P_i(l) = h 1[l = 0] + (1 - h) eps / L + (1 - h) (1 - eps) 1[l = planned_i].
Why epsilon-greedy rather than sampling in proportion to a softened profit: its probabilities do not depend on
the model's scores, so every level keeps a floor (1 - h) eps / L (0.024 at eps 0.1, h 0.05, L 4, above the
0.02 overlap threshold the learner trims at): inverse-propensity weights stay bounded (at most L / ((1-h) eps))
and every plan's log stays inside the common support, while a softmax gives near-zero probabilities (huge
weights, trimmed rows) exactly to the levels the model is surest are bad, which is where a wrong model is never
corrected. The planned level is fixed before the draws, so holdout and exploration are independent of it.

A plan never exceeds its budget: the exploration rows' expected spend is known once their levels are drawn and
is taken off the budget before the allocation (refused if it alone exceeds the budget).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from offerlab.uplift.policy import allocate, choose_at_price, control_profit

PLAN_META_KEY = b"offerlab.plan"
ARMS = ("plan", "explore", "holdout")
Z95 = 1.959964


@dataclass(frozen=True)
class Design:
    """How a plan assigns: the budget, the exploration share and the holdout share, and the seed of the draws."""

    budget: float | None
    explore: float = 0.1
    holdout: float = 0.05
    seed: int = 0

    def __post_init__(self):
        if self.budget is not None and not (np.isfinite(self.budget) and self.budget >= 0):
            raise ValueError(f"--budget must be a non-negative amount, got {self.budget}")
        if not 0.0 <= self.explore < 1.0:
            raise ValueError(f"--explore is a share of customers in [0, 1), got {self.explore}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"--holdout is a share of customers in [0, 1), got {self.holdout}")


@dataclass
class Assignment:
    """Per customer: the planned (greedy) level, the level given, the arm, and every level's probability."""

    planned: np.ndarray
    level: np.ndarray
    arm: np.ndarray  # codes into ARMS
    probability: np.ndarray  # (n, L) P_i(l)
    price: float  # the allocation's price of spend
    spend_explore: float
    spend_plan: float

    @property
    def propensity(self) -> np.ndarray:
        """The probability of the level each customer was given."""
        return self.probability[np.arange(len(self.level)), self.level]


def assignment_probabilities(planned: np.ndarray, n_levels: int, explore: float, holdout: float) -> np.ndarray:
    """P_i(l) = h 1[l = 0] + (1 - h) eps / L + (1 - h) (1 - eps) 1[l = planned_i], an (n, L) matrix."""
    n = len(planned)
    p = np.full((n, n_levels), (1.0 - holdout) * explore / n_levels)
    p[:, 0] += holdout
    p[np.arange(n), planned] += (1.0 - holdout) * (1.0 - explore)
    return p


def assign(profit: np.ndarray, spend: np.ndarray, design: Design) -> Assignment:
    """Draw holdout and exploration, then allocate the budget left to the other customers (module docstring)."""
    profit, spend = np.asarray(profit, dtype=float), np.asarray(spend, dtype=float)
    n, n_levels = profit.shape
    rng = np.random.default_rng([design.seed, 0x0FFE])  # its own stream: never the one that made the data
    u_arm, u_level = rng.random(n), rng.integers(0, n_levels, n)
    hold = u_arm < design.holdout
    expl = ~hold & (u_arm < design.holdout + (1.0 - design.holdout) * design.explore)
    rows = np.arange(n)
    spend_explore = float(spend[rows[expl], u_level[expl]].sum())
    left = None
    if design.budget is not None:
        left = design.budget - spend_explore
        if left < 0:
            raise ValueError(f"the exploration share alone is expected to spend {spend_explore:.2f} of the budget "
                             f"{design.budget:.2f}: lower --explore (now {design.explore}) or raise --budget")
    exploit = ~(hold | expl)
    # one price for every customer, holdout and exploration rows included: the planned level is then the same
    # function of a customer's own scores in every arm, as the logged probabilities say (the allocation's
    # leftover fill would upgrade some exploit rows only, and their held-out twins would be logged with the
    # wrong probability of none). At the bisection's price the spend is within what is left of the budget.
    alloc = allocate(profit[exploit], spend[exploit], left)
    planned = choose_at_price(profit, spend, alloc.price)
    spend_plan = float(spend[rows[exploit], planned[exploit]].sum())
    level = planned.copy()
    level[hold] = 0
    level[expl] = u_level[expl]
    arm = np.where(hold, 2, np.where(expl, 1, 0))
    prob = assignment_probabilities(planned, n_levels, design.explore, design.holdout)
    total = spend_explore + spend_plan
    if design.budget is not None:
        assert total <= design.budget + 1e-9 * max(1.0, design.budget), "a plan exceeded its budget"
    return Assignment(planned, level, arm, prob, alloc.price, spend_explore, spend_plan)


@dataclass
class Economics:
    """What a level costs and earns: levels (control first), their discount rates, margin and contact cost."""

    levels: list[str]
    discounts: np.ndarray
    margin: float
    contact_cost: float
    returns: dict | None = None  # policy.returns (counted, handling_cost) where the campaign logs returns

    def policy(self):
        from offerlab.uplift.policy import PolicyConfig

        return PolicyConfig(margin=self.margin, contact_cost=self.contact_cost, returns=self.returns)

    def matrices(self, pred: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Incremental profit and spend (n, L) from the model's predictions per level (net revenue, and the
        expected returns when returns are counted), priced as the uplift policy prices them."""
        return self.policy().matrices_at(pred, self.discounts)

    def to_dict(self) -> dict:
        return {"levels": self.levels, "discounts": dict(zip(self.levels, self.discounts.tolist(), strict=True)),
                "margin": self.margin, "contact_cost": self.contact_cost, "returns": self.returns}

    @classmethod
    def from_policy(cls, policy, levels: list[str], data_rates: dict[str, float] | None = None) -> Economics:
        returns = policy.returns.model_dump() if getattr(policy, "returns", None) is not None else None
        return cls(list(levels), policy.discount_rates(list(levels), data_rates), float(policy.margin),
                   float(policy.contact_cost), returns)


@dataclass
class Plan:
    """A planned campaign: one row per customer (`frame`) and its summary (budget, expected profit with CI)."""

    frame: pd.DataFrame
    summary: dict
    curve: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)


def _interval(totals: np.ndarray) -> list[float] | None:
    if len(totals) < 2:
        return None
    m, sd = float(np.mean(totals)), float(np.std(totals, ddof=1))
    return [m - Z95 * sd, m + Z95 * sd]


def make_plan(pred: dict[str, np.ndarray], economics: Economics, customer_id, design: Design,
              members: list[dict[str, np.ndarray]] | None = None, **info) -> Plan:
    """The plan from the model's expected conversion and net revenue per level (n, L).

    `members`: the ensemble members' predictions: the expected profit's interval is mean +- 1.96 sd of the plan's
    expected profit under each member (the model's own uncertainty; None with fewer than two members)."""
    levels = economics.levels
    profit, spend = economics.matrices(pred)
    a = assign(profit, spend, design)
    n, rows = len(a.level), np.arange(len(a.level))
    base = control_profit(pred, economics.policy())  # profit under "none" (gross = net at d = 0), net of returns
    names = np.asarray(levels, dtype=object)
    frame = pd.DataFrame({
        "customer_id": np.asarray(customer_id),
        "planned_level": names[a.planned], "level": names[a.level], "arm": np.asarray(ARMS, dtype=object)[a.arm],
        "propensity": a.propensity,
        "expected_profit": profit[rows, a.level], "expected_spend": spend[rows, a.level],
        "expected_profit_planned": profit[rows, a.planned],
        "uplift_conversion": pred["conversion"][rows, a.level] - pred["conversion"][:, 0],
        "uplift_conversion_planned": pred["conversion"][rows, a.planned] - pred["conversion"][:, 0],
        "expected_base_profit": base,
    })
    for j, lv in enumerate(levels):
        frame[f"propensity_{lv}"] = a.probability[:, j]
    for j, lv in enumerate(levels):
        frame[f"expected_profit_{lv}"] = profit[:, j]
    if frame["customer_id"].duplicated().any():
        raise ValueError(f"{int(frame['customer_id'].duplicated().sum())} customers appear twice in the plan's "
                         "input: one row per customer")
    per_member = [economics.matrices(m) for m in (members or [])]
    totals = [float(p[rows, a.level].sum()) for p, _ in per_member]
    spends = [float(sp[rows, a.level].sum()) for _, sp in per_member]
    used = a.spend_explore + a.spend_plan
    counts = pd.Series(frame["level"]).value_counts()
    summary = {
        "customers": n, "budget": design.budget, "explore": design.explore, "holdout": design.holdout,
        "seed": design.seed, "price_of_spend": a.price,
        "expected_profit": float(frame["expected_profit"].sum()), "expected_profit_ci": _interval(np.asarray(totals)),
        "expected_spend": float(used), "expected_spend_ci": _interval(np.asarray(spends)),
        "expected_spend_explore": a.spend_explore,
        "arms": {arm: int((a.arm == k).sum()) for k, arm in enumerate(ARMS)},
        "levels": {lv: int(counts.get(lv, 0)) for lv in levels},
        "economics": economics.to_dict(), **info,
    }
    return Plan(frame, summary, budget_curve(profit, spend, design.budget))


def budget_curve(profit: np.ndarray, spend: np.ndarray, budget: float | None,
                 shares: tuple[float, ...] = tuple(i / 10 for i in range(11))) -> pd.DataFrame:
    """Expected incremental profit of the allocation (no holdout or exploration) at budgets from 0 to the
    unconstrained spend, plus the plan's own budget."""
    full = allocate(profit, spend, None).used
    points = sorted({float(s * full) for s in shares} | ({float(budget)} if budget is not None else set()))
    rows = np.arange(len(profit))
    out = []
    for b in points:
        al = allocate(profit, spend, b)
        out.append({"budget": b, "budget_share": b / full if full > 0 else float("nan"), "spend": al.used,
                    "expected_profit": float(profit[rows, al.choice].sum()), "price_of_spend": al.price})
    return pd.DataFrame(out)


def curve_figure(curve: pd.DataFrame, budget: float | None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(curve["budget"], curve["expected_profit"], marker="o", label="expected incremental profit")
    if budget is not None:
        ax.axvline(budget, ls="--", color="grey", label="this plan's budget")
    ax.set_xlabel("budget (expected spend)")
    ax.set_ylabel("expected incremental profit")
    ax.set_title("Profit vs budget")
    ax.legend()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ files
def write_plan(plan: Plan, out: Path) -> None:
    """The plan as parquet with its summary in the file's metadata (key `offerlab.plan`); written beside the
    target and renamed, so a failed run leaves no half-written plan."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(plan.frame, preserve_index=False)
    meta = {**(table.schema.metadata or {}), PLAN_META_KEY: json.dumps(plan.summary, default=float).encode()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def read_plan(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A plan written by `write_plan`: its rows and its summary (refused if the file is not a plan)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"plan file not found: {path}")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(PLAN_META_KEY)
    if raw is None:
        raise ValueError(f"{path} is not an Offerlab plan (no {PLAN_META_KEY.decode()} metadata): write plans "
                         "with `offerlab campaign plan`")
    return table.to_pandas(), json.loads(raw)


def model_predictions(model, features: pd.DataFrame) -> tuple[dict, list[dict]]:
    """(ensemble mean, per-member predictions) of an uplift model; members only where the model has them."""
    pred = model.predict_levels(features)
    members = model.predict_levels_members(features) if hasattr(model, "predict_levels_members") else []
    return pred, members
