"""How good the served models were, once outcomes have matured: logged decisions joined to what happened.

Outcome tables are keyed by the raw `customer_id` (the user's own tables); each id is hashed with the decision
log's key (`OFFERLAB_DECISION_LOG_KEY`) to join, and no id leaves this module. Which table is which, by columns:
- purchases (`customer_id`, `timestamp`): timing. For every logged timing answer, the first purchase after its
  as_of; observation ends at `observed_until` (default: the end of the day of the latest purchase). Calibration
  of P(buy within 30 d) over the answers whose 30 days have passed (mean predicted vs observed, ECE over 10
  quantile bins, AUC, Brier) and Harrell's C-index of the time to that purchase (censored at the end) against
  P(buy 30 d).
- campaign outcomes (`customer_id`, `conversion`, `revenue`, revenue net of the discount as in the campaign
  log): uplift, on the randomised share (answers whose level was drawn: 0 < P(none) < 1, `OFFERLAB_EXPLORE`).
  Realised incremental profit = mean observed profit - SNIPW estimate of the no-offer profit from the customers
  who drew none (`offerlab.campaign.evaluate.incremental_profit`), against the logged expected incremental
  profit of the same answers; observed profit = margin x list-price basket - discount - contact cost with the
  margin and contact cost the answer was made with (logged).
- matured applications (`customer_id`, `default`): credit AUC, ECE (10 quantile bins), mean PD vs default rate.
A customer with several logged answers is joined by the latest (campaign, credit) or by each answer (timing).

Promotion figures: the champion run's metrics of the version that answered (`auc_30d`, `c_index` for timing,
`eval_auc`, `eval_ece` for credit); a figure worse by more than `tolerance` is flagged as degraded (the CLI exits
non-zero), and so is a realised uplift profit whose 95% interval lies below the expected profit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.monitor.decision_log import pseudonyms

DAY = pd.Timedelta(days=1)
PROMOTED = {"timing": {"auc_30d": ("auc_30d", "higher"), "c_index": ("c_index", "higher")},
            "credit": {"auc": ("eval_auc", "higher"), "ece": ("eval_ece", "lower")}}


def classify(outcomes: pd.DataFrame, name: str) -> str:
    cols = set(outcomes.columns)
    if "customer_id" not in cols:
        raise ValueError(f"outcomes {name}: column 'customer_id' missing (has {sorted(cols)})")
    if "default" in cols:
        return "credit"
    if {"conversion", "revenue"} <= cols:
        return "uplift"
    if "timestamp" in cols:
        return "timing"
    raise ValueError(f"outcomes {name}: not purchases (customer_id, timestamp), campaign outcomes (customer_id, "
                     f"conversion, revenue) or matured applications (customer_id, default); has {sorted(cols)}")


def timing_performance(decisions: pd.DataFrame, purchases: pd.DataFrame, key: str,
                       observed_until: pd.Timestamp | None = None) -> dict:
    from offerlab.credit.metrics import auc, brier, ece
    from offerlab.timing.metrics import concordance_index

    d = decisions[decisions["p_buy_30d"].notna() & decisions["as_of"].notna()][["customer_key", "as_of", "p_buy_30d"]]
    p = pd.DataFrame({"customer_key": pseudonyms(purchases["customer_id"], key),
                      "next_at": pd.to_datetime(purchases["timestamp"]).astype("datetime64[ns]")})
    end = pd.Timestamp(observed_until) if observed_until is not None else (
        p["next_at"].max().normalize() + DAY - pd.Timedelta(microseconds=1))
    d = d.assign(as_of=pd.to_datetime(d["as_of"]).astype("datetime64[ns]")).sort_values("as_of", kind="stable")
    p = p.sort_values("next_at", kind="stable")
    p["at"] = p["next_at"]
    j = pd.merge_asof(d, p, left_on="as_of", right_on="at", by="customer_key", direction="forward",
                      allow_exact_matches=False)
    j = j[j["as_of"] < end]
    event = (j["next_at"].notna() & (j["next_at"] <= end)).to_numpy()
    t = np.where(event, (j["next_at"] - j["as_of"]) / DAY, (end - j["as_of"]) / DAY).astype(float)
    risk = j["p_buy_30d"].to_numpy(dtype=float)
    matured = ((j["as_of"] + 30 * DAY) <= end).to_numpy()
    y30 = (event & (t <= 30.0))[matured].astype(float)
    p30 = risk[matured]
    out = {"answers": int(len(j)), "matured_30d": int(matured.sum()), "observed_until": str(end),
           "c_index": concordance_index(t, event, risk) if event.any() else None}
    if matured.sum() >= 2 and 0 < y30.sum() < len(y30):
        out.update(mean_p_30d=float(p30.mean()), observed_30d=float(y30.mean()), ece_30d=ece(y30, p30),
                   auc_30d=auc(y30, p30), brier_30d=brier(y30, p30))
    return out


def _latest(decisions: pd.DataFrame, present: str) -> pd.DataFrame:
    d = decisions[decisions[present].notna()].sort_values("logged_at", kind="stable")
    return d.drop_duplicates("customer_key", keep="last")


def _keyed(outcomes: pd.DataFrame, key: str, name: str) -> pd.DataFrame:
    o = outcomes.assign(customer_key=pseudonyms(outcomes["customer_id"], key)).drop(columns=["customer_id"])
    if o["customer_key"].duplicated().any():
        raise ValueError(f"outcomes {name}: a customer appears more than once ({int(o['customer_key'].duplicated().sum())} "
                         "repeated rows); give one matured outcome per customer")
    return o


def uplift_performance(decisions: pd.DataFrame, outcomes: pd.DataFrame, key: str, name: str = "campaign") -> dict:
    from offerlab.campaign.evaluate import incremental_profit

    d = _latest(decisions, "discount_level")
    d = d[(d["p_none"] > 0) & (d["p_none"] < 1)]  # the randomised share: the level was drawn
    j = d.merge(_keyed(outcomes, key, name), on="customer_key", how="inner", validate="one_to_one")
    out = {"randomised_answers": int(len(d)), "matched": int(len(j))}
    if len(j) < 2:
        return out
    for col in ("discount_margin", "discount_contact_cost", "discount_rate"):
        if j[col].isna().any():
            raise ValueError(f"decision log: {col} missing on {int(j[col].isna().sum())} randomised answers; they "
                             "were logged by a service that does not record its economics")
    rate = j["discount_rate"].to_numpy(dtype=float)
    revenue = j["revenue"].to_numpy(dtype=float)
    gross = revenue / (1.0 - rate)
    treated = (j["discount_level"] != "none").to_numpy()
    y = (j["discount_margin"].to_numpy() * gross - (gross - revenue) - j["discount_contact_cost"].to_numpy() * treated)
    ctl = (~treated).astype(float)
    est = incremental_profit(y, ctl, j["p_none"].to_numpy(dtype=float))
    n = len(j)
    expected = float(j["discount_expected_profit"].sum())
    out.update(expected_total=expected, expected_per_customer=expected / n, held_out=est["held_out"])
    if est.get("snipw") is not None:
        out.update(realised_total=est["snipw"], realised_ci=est["snipw_ci"], realised_per_customer=est["snipw"] / n,
                   conversion_rate=float(j["conversion"].mean()))
    return out


def credit_performance(decisions: pd.DataFrame, outcomes: pd.DataFrame, key: str, name: str = "applications") -> dict:
    from offerlab.credit.metrics import auc, ece

    d = _latest(decisions, "credit_pd")
    j = d.merge(_keyed(outcomes[["customer_id", "default"]], key, name), on="customer_key", how="inner",
                validate="one_to_one")
    y = j["default"].to_numpy(dtype=float)
    p = j["credit_pd"].to_numpy(dtype=float)
    out = {"answers": int(len(d)), "matured": int(len(j))}
    if len(j) >= 2 and 0 < y.sum() < len(y):
        out.update(auc=auc(y, p), ece=ece(y, p), mean_pd=float(p.mean()), default_rate=float(y.mean()))
    return out


def promoted_figures(decisions: pd.DataFrame) -> dict[str, dict]:
    """family -> {figure: value at promotion} from the run of the registry version that answered most."""
    from mlflow import MlflowClient

    from offerlab.registry import model_name

    client = MlflowClient()
    out: dict[str, dict] = {}
    for fam, figures in PROMOTED.items():
        col = f"{fam}_version"
        if col not in decisions or decisions[col].dropna().empty:
            continue
        version = str(decisions[col].dropna().mode().iloc[0])
        try:
            mv = client.get_model_version(model_name(fam), version)
            metrics = client.get_run(mv.run_id).data.metrics
        except Exception:  # noqa: BLE001 - no registry entry: nothing to compare with, said in the report
            continue
        got = {k: metrics[m] for k, (m, _) in figures.items() if m in metrics}
        if got:
            out[fam] = {"version": version, **got}
    return out


def degradations(report: dict, promoted: dict, tolerance: float) -> list[str]:
    """What is worse than at promotion by more than `tolerance` (absolute), and uplift below its expectation."""
    flags = []
    for fam, figures in PROMOTED.items():
        now, then = report.get(fam) or {}, promoted.get(fam) or {}
        for k, (_, better) in figures.items():
            if now.get(k) is None or then.get(k) is None:
                continue
            worse = then[k] - now[k] if better == "higher" else now[k] - then[k]
            if worse > tolerance:
                flags.append(f"{fam} {k} {now[k]:.4f} vs {then[k]:.4f} at promotion (worse by {worse:.4f} > "
                             f"tolerance {tolerance:g})")
    u = report.get("uplift") or {}
    if u.get("realised_ci") is not None and u["realised_ci"][1] < u["expected_total"]:
        flags.append(f"uplift realised incremental profit {u['realised_total']:.2f} (95% CI {u['realised_ci'][0]:.2f} "
                     f"to {u['realised_ci'][1]:.2f}) below the expected {u['expected_total']:.2f}")
    return flags


def performance_report(decisions: pd.DataFrame, outcomes: dict[str, pd.DataFrame], key: str, *,
                       observed_until: str | None = None) -> dict:
    """family -> figures, for each outcome table given (`outcomes`: name -> table, classified by columns)."""
    report: dict = {}
    for name, table in outcomes.items():
        fam = classify(table, name)
        if fam in report:
            raise ValueError(f"outcomes {name}: a second {fam} outcome table; give one per family")
        if fam == "timing":
            report[fam] = timing_performance(decisions, table, key,
                                             pd.Timestamp(observed_until) if observed_until else None)
        elif fam == "uplift":
            report[fam] = uplift_performance(decisions, table, key, name)
        else:
            report[fam] = credit_performance(decisions, table, key, name)
    return report


def markdown(report: dict, promoted: dict, flags: list[str], meta: dict) -> str:
    lines = ["# Performance report", "", f"Decisions: {', '.join(meta['decisions'])} ({meta['n_decisions']} records); "
             f"outcomes: {', '.join(meta['outcomes'])}; tolerance {meta['tolerance']:g}.", ""]
    for fam, figures in report.items():
        lines += [f"## {fam}", "", "| figure | now | at promotion |", "| --- | ---: | ---: |"]
        then = promoted.get(fam, {})
        for k, v in figures.items():
            shown = f"{v:.4f}" if isinstance(v, float) else (
                f"[{v[0]:.2f}, {v[1]:.2f}]" if isinstance(v, list) else str(v))
            was = then.get(k)
            lines.append(f"| {k} | {shown} | {was:.4f} |" if isinstance(was, float) else f"| {k} | {shown} | |")
        lines.append("")
    lines += ["## Degradation", ""] + ([f"- {f}" for f in flags] if flags else ["none beyond the tolerance"])
    return "\n".join(lines) + "\n"
