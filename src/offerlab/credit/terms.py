"""Risk-based credit terms from the PD; every number comes from `configs/credit/terms.yaml`.

Per applicant, vectorised over a batch:
- decline when PD > `cutoff_pd`;
- annual rate = cost of funds + expected loss rate (PD x LGD) + operating cost + margin, capped at
  `max_rate` (`rate_capped` flags where the cap bit);
- instalment terms (as text, e.g. "3,6,12"): the first rule (ordered by max_pd) whose max_pd >= PD;
- limit = the smallest of: the expected-loss budget (PD x LGD x limit <= `el_budget`), the
  affordability cap (monthly annuity payment over the longest offered term <= `affordability_share`
  of monthly income, when income is known) and `max_limit`; rounded down to `limit_step`; an
  approval needs limit >= `min_limit`;
- purchase insurance offered to approved applicants within the insurance rule's PD and limit range, and (returns
  aware, `insurance.max_return_rate`) not to a customer who sends back more than that share of what they buy
  (`ret_return_rate_value`: returned value / spend before the application): insurance on goods that come back
  is paid for a loss that never happens, and returners claim most; unknown (no history): offered;
- late payers (`late_payments`): a customer with more than `max_late` late instalments in the last 6 months
  (`rep_late_6m`) is offered only the `terms` given there (the shortest), whatever the PD rule allows.
`insurance_declined_reason` / `terms_reason` say in words why a rule bit (no amounts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator


class TermRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_pd: float = Field(gt=0, le=1)
    terms: list[int] = Field(min_length=1, description="instalment terms in months")


class InsuranceRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_limit: float = Field(200.0, ge=0)
    max_pd: float = Field(0.20, gt=0, le=1)
    monthly_premium_rate: float = Field(0.004, ge=0, description="monthly premium as share of the limit")
    max_return_rate: float | None = Field(None, gt=0, le=1, description="no insurance above this share of the "
                                          "purchase value returned (null: returns not considered)")
    return_rate_column: str = Field("ret_return_rate_value", description="feature holding the return rate")


class LatePaymentRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_late: int = Field(ge=0, description="late instalments in the window tolerated before terms are cut")
    column: str = Field("rep_late_6m", description="feature counting late instalments (rep_late_3m/6m/12m)")
    terms: list[int] = Field(min_length=1, description="the only instalment terms offered above max_late")


class TermsPolicy(BaseModel):
    """All parameters of the credit terms (validated before any work starts)."""

    model_config = ConfigDict(extra="forbid")
    cutoff_pd: float = Field(0.30, gt=0, le=1, description="decline above this PD")
    lgd: float = Field(0.65, gt=0, le=1, description="loss given default")
    el_budget: float = Field(60.0, gt=0, description="max expected loss PD x LGD x limit per applicant")
    affordability_share: float = Field(0.30, gt=0, le=1, description="max monthly payment / monthly income")
    max_limit: float = Field(5000.0, gt=0)
    min_limit: float = Field(100.0, ge=0)
    limit_step: float = Field(50.0, gt=0)
    cost_of_funds: float = Field(0.04, ge=0)
    operating_cost: float = Field(0.03, ge=0)
    margin: float = Field(0.03, ge=0)
    max_rate: float = Field(0.20, gt=0, description="annual rate cap")
    term_rules: list[TermRule] = Field(
        default_factory=lambda: [
            TermRule(max_pd=0.05, terms=[3, 6, 12]), TermRule(max_pd=0.15, terms=[3, 6]), TermRule(max_pd=1.0, terms=[3])
        ]
    )
    insurance: InsuranceRule = Field(default_factory=InsuranceRule)
    late_payments: LatePaymentRule | None = Field(None, description="shorter terms for recent late payers")
    amount_column: str | None = Field("requested_amount", description="requested amount / basket value, if any")
    income_column: str | None = Field("income", description="annual income column, if any")

    @model_validator(mode="after")
    def _rules_cover_all(self) -> TermsPolicy:
        bounds = [r.max_pd for r in self.term_rules]
        if not bounds or bounds != sorted(bounds) or bounds[-1] < self.cutoff_pd:
            raise ValueError("term_rules must be ordered by increasing max_pd and reach at least cutoff_pd")
        if self.min_limit > self.max_limit:
            raise ValueError("min_limit must not exceed max_limit")
        return self


def annuity_factor(annual_rate: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Present value of 1 per month over `months` at `annual_rate` (so payment = principal / factor)."""
    r = np.asarray(annual_rate, dtype=float) / 12.0
    n = np.asarray(months, dtype=float)
    safe = np.where(r > 1e-12, r, 1.0)
    return np.where(r > 1e-12, (1.0 - (1.0 + safe) ** -n) / safe, n)


def credit_terms(pd_: np.ndarray, policy: TermsPolicy, applications: pd.DataFrame | None = None,
                 features: pd.DataFrame | None = None) -> pd.DataFrame:
    """Decision, limit, rate, term options and insurance per applicant (index follows `applications`). The
    returns-aware rules read their columns from `features` (else `applications`); absent: rule not applied."""
    index = applications.index if applications is not None else pd.RangeIndex(len(np.atleast_1d(pd_)))

    def col(name: str | None) -> np.ndarray | None:
        found = _column(features, name)
        return found if found is not None else _column(applications, name)

    late = col(policy.late_payments.column) if policy.late_payments is not None else None
    out = terms_arrays(pd_, policy, _column(applications, policy.income_column),
                       _column(applications, policy.amount_column), return_rate=col(policy.insurance.return_rate_column),
                       late=late)
    return pd.DataFrame(out, index=index)


def terms_arrays(pd_: np.ndarray, policy: TermsPolicy, income: np.ndarray | None = None,
                 requested: np.ndarray | None = None, return_rate: np.ndarray | None = None,
                 late: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`credit_terms` as a dict of arrays (annual `income` and `requested` amount may be None or NaN; so may the
    applicant's `return_rate` and count of `late` instalments, where the rules using them do not apply)."""
    p = np.asarray(pd_, dtype=float)
    uncapped = policy.cost_of_funds + p * policy.lgd + policy.operating_cost + policy.margin
    rate = np.minimum(uncapped, policy.max_rate)

    bounds = np.array([r.max_pd for r in policy.term_rules])
    rule = np.minimum(np.searchsorted(bounds, p, side="left"), len(bounds) - 1)
    rule_terms = [sorted(r.terms) for r in policy.term_rules]
    longest = np.array([t[-1] for t in rule_terms])[rule]

    el_cap = policy.el_budget / np.maximum(p * policy.lgd, 1e-12)
    cap = np.minimum(el_cap, policy.max_limit)
    if income is not None:
        afford = policy.affordability_share * income / 12.0 * annuity_factor(rate, longest)
        cap = np.minimum(cap, np.where(np.isfinite(afford), afford, np.inf))
    limit = np.floor(cap / policy.limit_step) * policy.limit_step

    over_cutoff = p > policy.cutoff_pd
    too_small = limit < policy.min_limit
    approve = ~over_cutoff & ~too_small
    reason = np.where(over_cutoff, "PD above cut-off", np.where(too_small, "limit below minimum", ""))
    limit = np.where(approve, limit, 0.0)
    ins = policy.insurance
    options = np.array([",".join(map(str, t)) for t in rule_terms] + [""], dtype=object)  # per rule; last: none
    term_options = options[np.where(approve, rule, len(rule_terms))]
    terms_reason = np.full(len(p), "", dtype=object)
    lp = policy.late_payments
    if lp is not None and late is not None:
        cut = approve & (np.nan_to_num(np.asarray(late, dtype=float), nan=0.0) > lp.max_late)
        # never more than the PD rule allows: the late payer's terms within the rule's
        allowed = [",".join(str(t) for t in sorted(lp.terms) if t in r) or str(min(r)) for r in rule_terms] + [""]
        term_options = np.where(cut, np.array(allowed, dtype=object)[np.where(approve, rule, len(rule_terms))],
                                term_options)
        window = {"rep_late_3m": "3 months", "rep_late_6m": "6 months", "rep_late_12m": "12 months"}.get(lp.column,
                                                                                                     "window")
        terms_reason = np.where(cut, f"more than {lp.max_late} late instalments in the last {window}", "")
    insured = approve & (limit >= ins.min_limit) & (p <= ins.max_pd)
    ins_reason = np.where(approve & ~insured, "PD or limit outside the insurance range", "").astype(object)
    if ins.max_return_rate is not None and return_rate is not None:
        rr = np.asarray(return_rate, dtype=float)
        returner = insured & np.isfinite(rr) & (rr > ins.max_return_rate)
        insured = insured & ~returner
        ins_reason = np.where(returner, f"returns more than {ins.max_return_rate:.0%} of what they buy", ins_reason)
    out = {
        "decision": np.where(approve, "approve", "decline"),
        "decline_reason": reason,
        "limit": limit,
        "annual_rate": np.where(approve, rate, np.nan),
        "rate_capped": approve & (uncapped > policy.max_rate),
        "term_options": term_options,
        "terms_reason": terms_reason,
        "insurance_offered": insured,
        "insurance_monthly_premium": np.where(insured, np.round(ins.monthly_premium_rate * limit, 2), 0.0),
        "insurance_declined_reason": ins_reason,
    }
    if requested is not None:
        out["covers_request"] = approve & (requested <= limit)
    return out


def _column(df: pd.DataFrame | None, name: str | None) -> np.ndarray | None:
    if df is None or name is None or name not in df.columns:
        return None
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
