"""What a campaign earned: the realised incremental profit of a plan against its randomised holdout.

Every customer of the plan was assigned by the plan's known probabilities P_i(l) (`plan.assignment_probabilities`)
and has an observed profit y_i (`uplift.policy.observed_profit`: margin x list-price basket - discount paid -
contact cost). The plan's own value is observed: V = mean(y) (the campaign as run, exploration and holdout
included). What the same customers would have earned with no campaign, V0, is estimated from the customers who
got "none" (the holdout, plus exploration draws of "none"), each weighted by 1 / P_i(none):
    IPW     V0 = mean(1[T_i = 0] y_i / e_i)
    SNIPW   V0 = sum(1[T_i = 0] y_i / e_i) / sum(1[T_i = 0] / e_i)        (self-normalised: safer when weights vary)
    DR      V0 = mean(mu_i + 1[T_i = 0] (y_i - mu_i) / e_i)               (mu_i: the plan's expected profit under none)
The incremental profit is V - V0 per customer, times the number of customers for the total; 95% intervals come
from the per-customer influence terms (the delta method for SNIPW). Per planned level and per segment the same
estimators run within the group (the planned level was fixed before the random draws, so the holdout inside a
group is a valid control for it). Calibration: within bins of the predicted uplift of the planned level, the
realised difference between customers who got their planned level and those held out, next to the prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.data.schema import DataValidationError
from offerlab.uplift.policy import observed_profit

Z95 = 1.959964
OUTCOME_COLUMNS = ("customer_id", "conversion", "revenue")


def _row_hint(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    return f"{len(idx)} rows (first at row {int(idx[0]) + 1})"


def match_outcomes(plan: pd.DataFrame, outcomes: pd.DataFrame, *, missing_as_no_purchase: bool = False
                   ) -> pd.DataFrame:
    """Outcomes in the plan's row order; refused (no ids in the message) when they do not match the plan:
    a missing column, a repeated or unknown customer, a planned customer without a row (unless
    `missing_as_no_purchase`: then conversion and revenue are 0, declared by the caller), a level that differs
    from the one the plan assigned, or a value that is not a number."""
    for c in OUTCOME_COLUMNS:
        if c not in outcomes.columns:
            raise DataValidationError("outcomes", c, f"column missing; the outcomes need {list(OUTCOME_COLUMNS)}")
    ids = outcomes["customer_id"].astype(str)
    dup = ids.duplicated(keep="first").to_numpy()
    if dup.any():
        raise DataValidationError("outcomes", "customer_id", f"{_row_hint(dup)} repeat a customer: one outcome row "
                                  "per planned customer")
    planned = pd.Index(plan["customer_id"].astype(str))
    unknown = ~ids.isin(planned).to_numpy()
    if unknown.any():
        raise DataValidationError("outcomes", "customer_id", f"{_row_hint(unknown)} name customers who are not in "
                                  "the plan: outcomes must come from the planned campaign")
    out = outcomes.assign(customer_id=ids).set_index("customer_id").reindex(planned)
    absent = ~planned.isin(pd.Index(ids))
    if absent.any():
        if not missing_as_no_purchase:
            raise DataValidationError("outcomes", "customer_id", f"{int(absent.sum())} of {len(planned)} planned "
                                      "customers have no outcome row; an absent row is not a non-buyer: add them "
                                      "(conversion 0, revenue 0) or pass --missing-as-no-purchase")
        out.loc[absent, [c for c in ("conversion", "revenue", "returned_revenue") if c in out.columns]] = 0.0
    for c in ("conversion", "revenue") + (("returned_revenue",) if "returned_revenue" in out.columns else ()):
        v = pd.to_numeric(out[c], errors="coerce")
        bad = v.isna().to_numpy() | ~np.isfinite(v.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            raise DataValidationError("outcomes", c, f"{_row_hint(bad)} are not numbers")
        out[c] = v.astype(float)
    if ((out["conversion"] != 0) & (out["conversion"] != 1)).any():
        raise DataValidationError("outcomes", "conversion", "must be 0 or 1 (map the raw values with label_values)")
    if (out["revenue"] < 0).any():
        raise DataValidationError("outcomes", "revenue", f"{_row_hint((out['revenue'] < 0).to_numpy())} are negative")
    if "returned_revenue" in out.columns:
        bad = ((out["returned_revenue"] < 0) | (out["returned_revenue"] > out["revenue"] + 0.005)).to_numpy()
        if bad.any():
            raise DataValidationError("outcomes", "returned_revenue", f"{_row_hint(bad)} are outside [0, revenue]: "
                                      "what came back of a purchase is at most what was paid for it")
    if "treatment" in out.columns:
        given = out["treatment"].astype(str).to_numpy()
        differs = ~absent & (given != plan["level"].astype(str).to_numpy())
        if differs.any():
            raise DataValidationError("outcomes", "treatment", f"{_row_hint(differs)} got another level than the "
                                      "plan assigned: the campaign was not run as planned, so its probabilities "
                                      "do not describe it")
    return out.reset_index()


def _ci(m: float, se: float, n_total: int) -> tuple[float, list[float]]:
    return m * n_total, [(m - Z95 * se) * n_total, (m + Z95 * se) * n_total]


def incremental_profit(y: np.ndarray, ctl: np.ndarray, e0: np.ndarray, mu0: np.ndarray | None = None) -> dict:
    """The plan's incremental profit over no campaign, totals over the customers given, by IPW, SNIPW and DR."""
    n = len(y)
    out: dict = {"customers": n, "held_out": int(ctl.sum())}
    if n < 2 or ctl.sum() < 2:
        return {**out, "ipw": None, "ipw_ci": None, "snipw": None, "snipw_ci": None, "dr": None, "dr_ci": None}
    w = ctl / e0
    psi = y - w * y
    out["ipw"], out["ipw_ci"] = _ci(psi.mean(), psi.std(ddof=1) / np.sqrt(n), n)
    v0 = float((w * y).sum() / w.sum())
    psi_sn = y - w * (y - v0) / w.mean()  # influence terms of mean(y) - sum(w y) / sum(w)
    out["snipw"], out["snipw_ci"] = _ci(y.mean() - v0, psi_sn.std(ddof=1) / np.sqrt(n), n)
    if mu0 is not None:
        psi_dr = y - (mu0 + w * (y - mu0))
        out["dr"], out["dr_ci"] = _ci(psi_dr.mean(), psi_dr.std(ddof=1) / np.sqrt(n), n)
    else:
        out["dr"], out["dr_ci"] = None, None
    out["realised_profit"] = float(y.sum())
    return out


def calibration(pred: np.ndarray, y: np.ndarray, got_planned: np.ndarray, ctl: np.ndarray, bins: int = 5
                ) -> list[dict]:
    """Binned predicted vs realised uplift of the planned level, per customer: in each quantile bin of `pred`
    (customers whose planned level is a treated one), mean y of those who got the planned level minus mean y of
    those held out, with a Welch 95% interval."""
    if len(pred) < bins * 2:
        return []
    edges = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, len(edges) - 2)
    out = []
    for b in range(len(edges) - 1):
        inb = which == b
        a, c = y[inb & got_planned], y[inb & ctl]
        row = {"bin": b, "lo": float(edges[b]), "hi": float(edges[b + 1]), "customers": int(inb.sum()),
               "expected": float(pred[inb].mean()), "treated": len(a), "held_out": len(c)}
        if len(a) >= 2 and len(c) >= 2:
            diff = float(a.mean() - c.mean())
            se = float(np.sqrt(a.var(ddof=1) / len(a) + c.var(ddof=1) / len(c)))
            row.update(realised=diff, realised_ci=[diff - Z95 * se, diff + Z95 * se])
        else:
            row.update(realised=None, realised_ci=None)
        out.append(row)
    return out


def counted_returns(econ: dict, got: pd.DataFrame) -> tuple[np.ndarray | None, float]:
    """(returned revenue per planned customer, handling cost per return) where the plan's economics count returns
    (its `policy.returns`, priced into its expected profits): then the outcomes must say what came back."""
    returns = econ.get("returns") or {}
    if not returns.get("counted"):
        return None, 0.0
    if "returned_revenue" not in got.columns:
        raise DataValidationError("outcomes", "returned_revenue", "column missing: the plan's economics count returns "
                                  "(policy.returns.counted), so its realised profit is net of them; give what came "
                                  "back of each purchase (0 if nothing), in the campaign mapping's column with --data")
    return got["returned_revenue"].to_numpy(dtype=float), float(returns.get("handling_cost") or 0.0)


def evaluate(plan: pd.DataFrame, summary: dict, outcomes: pd.DataFrame, *, segment_by: str | None = None,
             missing_as_no_purchase: bool = False) -> dict:
    """The realised incremental profit of `plan` (rows and summary of `read_plan`) given its outcomes (canonical
    columns customer_id, conversion, revenue net of the discount; optional treatment and a segment column)."""
    got = match_outcomes(plan, outcomes, missing_as_no_purchase=missing_as_no_purchase)
    return evaluate_matched(plan, summary, got, segment_by=segment_by)


def evaluate_matched(plan: pd.DataFrame, summary: dict, got: pd.DataFrame, *, segment_by: str | None = None) -> dict:
    """`evaluate` on outcomes already in the plan's row order (`match_outcomes`)."""
    econ = summary["economics"]
    levels = econ["levels"]
    d = np.array([econ["discounts"][lv] for lv in levels])
    code = {lv: j for j, lv in enumerate(levels)}
    t = plan["level"].astype(str).map(code).to_numpy()
    planned = plan["planned_level"].astype(str).map(code).to_numpy()
    returned, handling = counted_returns(econ, got)
    y = observed_profit(t, got["revenue"].to_numpy(), d, econ["margin"], econ["contact_cost"], returned, handling)
    kept = got["revenue"].to_numpy() - (0.0 if returned is None else returned)  # the discount of a return is refunded
    ctl = (t == 0).astype(float)
    e0 = plan[f"propensity_{levels[0]}"].to_numpy(dtype=float)
    mu0 = plan["expected_base_profit"].to_numpy(dtype=float)
    result = {"plan": {k: summary.get(k) for k in ("run_id", "model_uri", "budget", "explore", "holdout",
                                                   "expected_profit", "expected_profit_ci", "expected_spend")},
              "customers": len(plan), "conversions": int(got["conversion"].sum())}
    overall = incremental_profit(y, ctl, e0, mu0)
    overall["expected"] = float(plan["expected_profit"].sum())
    overall["realised_spend"] = float((kept * d[t] / (1 - d[t]) + econ["contact_cost"] * (t > 0)).sum())
    result["overall"] = overall
    groups = {"planned_level": plan["planned_level"].astype(str).to_numpy()}
    q = pd.qcut(plan["expected_profit_planned"].rank(method="first"), 4, labels=["q1", "q2", "q3", "q4"])
    groups["expected_profit_quartile"] = q.astype(str).to_numpy()
    if segment_by is not None:
        source = got if segment_by in got.columns else plan
        if segment_by not in source.columns:
            raise DataValidationError("outcomes", segment_by, "--segment-by names a column of neither the outcomes "
                                      "nor the plan")
        groups[segment_by] = source[segment_by].astype(str).to_numpy()
    result["groups"] = {}
    for name, g in groups.items():
        block = {}
        for value in pd.unique(g):
            m = g == value
            est = incremental_profit(y[m], ctl[m], e0[m], mu0[m])
            est["expected"] = float(plan["expected_profit"].to_numpy()[m].sum())
            block[str(value)] = est
        result["groups"][name] = block
    treated_plan = planned > 0
    got_planned = (t == planned)
    result["calibration"] = {
        "profit": calibration(plan["expected_profit_planned"].to_numpy()[treated_plan], y[treated_plan],
                              got_planned[treated_plan], ctl[treated_plan].astype(bool)),
        "conversion": calibration(plan["uplift_conversion_planned"].to_numpy()[treated_plan],
                                  got["conversion"].to_numpy()[treated_plan], got_planned[treated_plan],
                                  ctl[treated_plan].astype(bool)),
    }
    return result


def evaluation_figures(result: dict) -> dict:
    """name -> matplotlib figure: the calibration plots and the per-level realised vs expected profit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    for kind, rows in result["calibration"].items():
        rows = [r for r in rows if r["realised"] is not None]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(5, 4))
        x = [r["expected"] for r in rows]
        yv = [r["realised"] for r in rows]
        err = np.array([[r["realised"] - r["realised_ci"][0], r["realised_ci"][1] - r["realised"]] for r in rows]).T
        ax.errorbar(x, yv, yerr=err, fmt="o", capsize=3, label="realised (planned level vs held out)")
        lim = [min(x + yv), max(x + yv)]
        ax.plot(lim, lim, "--", color="grey", label="perfect calibration")
        ax.set_xlabel(f"predicted uplift per customer ({kind})")
        ax.set_ylabel("realised uplift per customer")
        ax.set_title(f"Calibration of the predicted uplift: {kind}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs[f"plots/calibration_{kind}.png"] = fig
    block = result["groups"]["planned_level"]
    names = list(block)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, [block[k]["expected"] for k in names], 0.4, label="expected")
    real = [block[k]["snipw"] if block[k]["snipw"] is not None else np.nan for k in names]
    ci = [block[k]["snipw_ci"] or [np.nan, np.nan] for k in names]
    ax.bar(pos + 0.2, real, 0.4, label="realised (SNIPW)",
           yerr=np.abs(np.array([[r - c[0], c[1] - r] for r, c in zip(real, ci, strict=True)]).T), capsize=3)
    ax.set_xticks(pos, names)
    ax.set_xlabel("planned level")
    ax.set_ylabel("incremental profit")
    ax.set_title("Incremental profit per planned level")
    ax.legend()
    fig.tight_layout()
    figs["plots/profit_per_level.png"] = fig
    return figs
