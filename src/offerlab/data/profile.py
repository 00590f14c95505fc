"""The data check: a profile of the canonical tables a data scientist reads before modelling.

`profile_tables` computes aggregates only (counts, shares, quantiles of distributions over at least
`MIN_GROUP` values, histograms): no customer id, no single amount, no row value reaches the profile, so it
can go to a report, a JSON file and MLflow alike. Per family it answers the question that decides whether
a model can be trusted on these data:

- purchases: how many customers buy more than once, how far apart, and how many the timing holdout scores;
- campaign: is the log randomised? A cross-validated classifier predicting the arm from the features
  (`offerlab.uplift.propensity.assignment_check`: AUC near 0.5 = randomised, well above = targeted), with
  the overlap of the estimated propensities, set against what the data spec declares;
- credit: the default rate, leakage suspects (one feature that alone predicts the label almost perfectly,
  out-of-fold single-feature AUC) and drift between the first and second half in time (PSI).

`write_report` renders the profile (Markdown, PNG plots, JSON) into a folder it swaps in only when complete;
`log_profile` logs it as one MLflow run in `offerlab-data`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

MIN_GROUP = 20  # an amount aggregate or a quantile is reported only over at least this many values
LEAKAGE_AUC = 0.95  # a single feature at or above this out-of-fold AUC is a leakage suspect
TOP_FEATURES = 10
LEAKAGE_FOLDS = 5
QUANTILES = {"p10": 0.10, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p90": 0.90}
ASSIGNMENTS = ("randomised", "targeted", "unknown")
CREDIT_RESERVED = ("application_id", "customer_id", "applied_at", "default")
REPORT_MD, REPORT_JSON = "data_check.md", "data_check.json"
PLOTS = {
    "inter_purchase": "inter_purchase_days.png",
    "overlap": "campaign_propensity_overlap.png",
    "leakage": "credit_single_feature_auc.png",
    "psi": "credit_psi.png",
}


# ----------------------------------------------------------------------------------------------- helpers


def _jsonable(x):
    """Plain Python types; NaN and infinities become None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def _distribution(values: np.ndarray, with_quantiles: bool = True) -> dict:
    """n, mean and quantiles of a distribution; only the count when it has fewer than MIN_GROUP values."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    out: dict = {"n": int(len(values))}
    if len(values) < MIN_GROUP:
        out["note"] = f"fewer than {MIN_GROUP} values: no quantiles reported"
        return out
    out["mean"] = float(values.mean())
    if with_quantiles:
        q = np.quantile(values, list(QUANTILES.values()))
        out.update({k: float(v) for k, v in zip(QUANTILES, q, strict=True)})
    return out


def _day_numbers(ts: pd.Series) -> np.ndarray:
    """Calendar day of each timestamp as an integer (days since 1970-01-01)."""
    return ts.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)


def _date(day: int | np.integer) -> str:
    return str(np.datetime64(int(day), "D"))


def _overview(df: pd.DataFrame, date_col: str | None) -> dict:
    """Rows, distinct customers, date range, fingerprint and missing values (only columns with any)."""
    from offerlab.tracking import data_fingerprint

    out: dict = {"rows": int(len(df)), "columns": [str(c) for c in df.columns]}
    if "customer_id" in df:
        out["customers"] = int(df["customer_id"].nunique())
    if date_col and date_col in df and len(df):
        lo, hi = df[date_col].min(), df[date_col].max()
        out["date_range"] = {"column": date_col, "first": str(lo.date()), "last": str(hi.date()),
                             "days": int((hi.normalize() - lo.normalize()) / pd.Timedelta(days=1)) + 1}
    out["missing"] = _missing(df)
    out["fingerprint"] = data_fingerprint(df)
    return out


def _missing(df: pd.DataFrame) -> dict:
    n = df.isna().sum()
    n = n[n > 0]
    return {str(c): {"count": int(v), "share": float(v / max(len(df), 1))} for c, v in n.items()}


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _as_float(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(s):
        return (s - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy(dtype=float) / 86400.0
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


# -------------------------------------------------------------------------------------------- purchases


def _log_histogram(gaps: np.ndarray, bins_per_decade: int = 8) -> dict:
    """Counts on log-spaced bins from 1 day to the next power of ten above the longest gap.

    Gaps are whole days, so edges sit half-way between integers (no empty bin between 1 and 2 days)."""
    top = max(1, math.ceil(math.log10(max(float(gaps.max()), 1.0) + 1)))
    edges = np.unique(np.round(np.logspace(0, top, top * bins_per_decade + 1))) - 0.5
    counts, _ = np.histogram(gaps, bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def profile_transactions(tx: pd.DataFrame, calibration_end: str | None = None,
                         holdout_end: str | None = None) -> dict:
    """Purchases: per-customer counts, repeat buyers, inter-purchase times (distinct days), holdout coverage."""
    out = _overview(tx, "timestamp")
    codes, uniques = pd.factorize(tx["customer_id"], sort=False)
    n_cust = len(uniques)
    per_customer = np.bincount(codes, minlength=n_cust)
    # distinct (customer, day) pairs, sorted by customer then day: one integer key per pair
    day = _day_numbers(tx["timestamp"])
    first_day = int(day.min())
    span = int(day.max()) - first_day + 1
    keys = np.unique(codes.astype(np.int64) * span + (day - first_day))
    pair_cust, pair_day = keys // span, keys % span + first_day
    days_per_customer = np.bincount(pair_cust, minlength=n_cust)
    same = pair_cust[1:] == pair_cust[:-1]
    gaps = (pair_day[1:] - pair_day[:-1])[same].astype(float)

    p = {
        "transactions_per_customer": {"mean": float(per_customer.mean()), "median": float(np.median(per_customer)),
                                      "p90": float(np.quantile(per_customer, 0.9))},
        "purchase_days_per_customer": {"mean": float(days_per_customer.mean()),
                                       "median": float(np.median(days_per_customer)),
                                       "p90": float(np.quantile(days_per_customer, 0.9))},
        "purchase_days": int(len(keys)),
        "repeat_buyers": int((days_per_customer >= 2).sum()),
        "repeat_buyer_share": float((days_per_customer >= 2).mean()),
        "inter_purchase_days": _distribution(gaps),
    }
    if len(gaps) >= MIN_GROUP:
        p["inter_purchase_days"]["histogram"] = _log_histogram(gaps)
    if "amount" in tx:
        amount = tx["amount"].to_numpy(dtype=float)
        p["amounts"] = ({"mean": float(amount.mean()), "median": float(np.median(amount)),
                         "zero_share": float((amount == 0).mean())}
                        if len(amount) >= MIN_GROUP else {"note": f"fewer than {MIN_GROUP} amounts: not reported"})
    else:
        p["amounts"] = None
        p["amounts_note"] = "no amounts in this log (date-only purchases): amount figures are not available"
    if "category" in tx:
        p["categories"] = int(tx["category"].nunique())
    if calibration_end is not None or holdout_end is not None:
        p["holdout"] = _holdout(pair_cust, pair_day, n_cust, first_day, calibration_end, holdout_end)
    out["purchases"] = p
    return out


def _holdout(pair_cust: np.ndarray, pair_day: np.ndarray, n_cust: int, first_day: int,
             calibration_end: str | None, holdout_end: str | None) -> dict:
    """Who the timing holdout scores: customers with a purchase day on or before the calibration end."""
    if calibration_end is None:
        raise ValueError("holdout_end given without calibration_end: give both protocol dates")
    cal = int(_day_numbers(pd.Series([pd.Timestamp(calibration_end)]))[0])
    out: dict = {"calibration_end": str(pd.Timestamp(calibration_end).date()),
                 "calibration_days": int(cal - first_day + 1)}
    in_cal = np.bincount(pair_cust[pair_day <= cal], minlength=n_cust) > 0
    out["scorable_customers"] = int(in_cal.sum())
    out["scorable_share"] = float(in_cal.mean())
    if holdout_end is None:
        return out
    end = int(_day_numbers(pd.Series([pd.Timestamp(holdout_end)]))[0])
    if end <= cal:
        raise ValueError(f"holdout_end ({holdout_end}) must be after calibration_end ({calibration_end})")
    in_ho = np.bincount(pair_cust[(pair_day > cal) & (pair_day <= end)], minlength=n_cust) > 0
    out.update({
        "holdout_end": str(pd.Timestamp(holdout_end).date()),
        "holdout_days": int(end - cal),
        "scorable_buying_in_holdout": int((in_cal & in_ho).sum()),
        "scorable_buying_in_holdout_share": float((in_cal & in_ho).sum() / max(in_cal.sum(), 1)),
        "new_in_holdout_customers": int((~in_cal & in_ho).sum()),
        "purchase_days_after_holdout": int((pair_day > end).sum()),
    })
    return out


# --------------------------------------------------------------------------------------------- campaign


def _campaign_levels(treatment: pd.Series, levels: list[str] | None) -> tuple[list[str], str | None]:
    seen = sorted(set(treatment.astype(str)))
    if levels is None:
        first = "control" if "control" in seen else seen[0]
        return [first] + [lv for lv in seen if lv != first], f"no levels given: '{first}' taken as the control"
    unknown = sorted(set(seen) - set(levels))
    if unknown:
        raise ValueError(f"campaign treatments {unknown} are not among campaign_levels {levels}")
    return list(levels), None


def _arm_table(campaign: pd.DataFrame, levels: list[str]) -> list[dict]:
    g = campaign.groupby(campaign["treatment"].astype(str), sort=False)
    rows = g.size().reindex(levels, fill_value=0)
    conv = g["conversion"].sum().reindex(levels, fill_value=0)
    rev = g["revenue"].sum().reindex(levels, fill_value=0.0)
    conv_rev = campaign["revenue"].where(campaign["conversion"] == 1, 0.0).groupby(
        campaign["treatment"].astype(str)).sum().reindex(levels, fill_value=0.0)
    cost = g["cost"].sum().reindex(levels, fill_value=0.0) if "cost" in campaign else None
    out = []
    for lv in levels:
        n, c = int(rows[lv]), int(conv[lv])
        arm = {"level": lv, "rows": n, "share": float(n / max(len(campaign), 1)), "conversions": c,
               "conversion_rate": float(c / n) if n else None,
               # an amount mean over fewer than MIN_GROUP customers would come close to a single amount
               "revenue_mean": float(rev[lv] / n) if n >= MIN_GROUP else None,
               "revenue_per_converter": float(conv_rev[lv] / c) if c >= MIN_GROUP else None}
        if cost is not None:
            arm["cost_mean"] = float(cost[lv] / n) if n >= MIN_GROUP else None
        out.append(arm)
    return out


def _verdict_words(check: dict) -> str:
    auc, thr = check["auc"], check["threshold"]
    if check["verdict"] == "randomised":
        return (f"randomised: the arm is not predictable from the features (cross-validated AUC {auc:.3f}, "
                f"at most {thr:.3f} for chance); arms compare directly")
    return (f"targeted: the arm is predictable from the features (cross-validated AUC {auc:.3f} > {thr:.3f} for "
            f"chance); compare arms only with estimated propensities, within the common support "
            f"({check['overlap_share']:.1%} of customers)")


def _declared_vs_check(declared: str, verdict: str) -> tuple[str, str | None]:
    if declared == "unknown":
        return (f"not declared: the data spec says 'unknown', the check says '{verdict}'",
                f"campaign assignment is not declared in the data spec; the check says '{verdict}': declare it")
    if declared == verdict:
        return "agrees", None
    msg = (f"MISMATCH: the data spec declares the campaign '{declared}' but the randomisation check says "
           f"'{verdict}'")
    return msg, msg


def _propensity_histograms(prop: np.ndarray, treatment: np.ndarray, levels: list[str], bins: int = 40) -> dict:
    """Per level j: counts of P(level j | x) among customers who got j and among those who did not."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = {}
    for j, lv in enumerate(levels):
        got = treatment == j
        out[lv] = {"received": np.histogram(prop[got, j], edges)[0].tolist(),
                   "not_received": np.histogram(prop[~got, j], edges)[0].tolist()}
    return {"edges": edges.tolist(), "by_level": out}


def profile_campaign(campaign: pd.DataFrame, features: pd.DataFrame | None = None,
                     levels: list[str] | None = None, declared: str = "unknown", seed: int = 0) -> dict:
    """Arms, outcomes per arm and the randomisation check against what the data spec declares."""
    if declared not in ASSIGNMENTS:
        raise ValueError(f"campaign_assignment must be one of {ASSIGNMENTS}, got {declared!r}")
    out = _overview(campaign, None)
    levels, note = _campaign_levels(campaign["treatment"], levels)
    out.update({"levels": levels, "control": levels[0], "declared_assignment": declared,
                "conversion_rate": float(campaign["conversion"].mean()),
                "logged_propensity": "propensity" in campaign, "arms": _arm_table(campaign, levels)})
    if note:
        out["levels_note"] = note
    out["warnings"] = []
    if features is None:
        out["assignment_check"] = {"skipped": "no campaign features given: the randomisation check needs the "
                                              "features the assignment could have depended on"}
        return out
    if len(features) != len(campaign):
        raise ValueError(f"campaign_features has {len(features)} rows, the campaign {len(campaign)}: one row per "
                         "campaign row, same order")
    features = features.reset_index(drop=True)
    out["features"] = {"columns": int(features.shape[1]), "missing": _missing(features)}
    codes = pd.Categorical(campaign["treatment"].astype(str), categories=levels).codes.astype(np.int64)
    try:
        from offerlab.uplift.propensity import assignment_check

        check = assignment_check(features, codes, levels, seed=seed)
    except ValueError as e:  # e.g. a level with fewer customers than folds
        out["assignment_check"] = {"skipped": f"the randomisation check could not run: {e}"}
        return out
    prop = check.pop("propensity")
    check["overlap_histograms"] = _propensity_histograms(prop, codes, levels)
    check["verdict_words"] = _verdict_words(check)
    out["assignment_check"] = check
    out["declared_vs_check"], warning = _declared_vs_check(declared, check["verdict"])
    if warning:
        out["warnings"].append(warning)
    return out


# ----------------------------------------------------------------------------------------------- credit


def _single_feature_auc(x: pd.Series, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """How well one feature alone ranks the label: max(AUC, 1 - AUC).

    Numbers use the raw value (a missing value ranked both below and above every value, the better kept, so a
    label hidden in missingness shows); categories an out-of-fold target-mean encoding, so a level that is rare
    or unique to a row cannot look predictive by fitting itself."""
    from sklearn.metrics import roc_auc_score

    if _is_numeric(x) or pd.api.types.is_bool_dtype(x) or pd.api.types.is_datetime64_any_dtype(x):
        v = _as_float(x)
        ok = np.isfinite(v)
        if not ok.any():
            return 0.5
        if ok.all():
            scores = [v]
        else:
            lo, hi = v[ok].min() - 1.0, v[ok].max() + 1.0
            scores = [np.where(ok, v, lo), np.where(ok, v, hi)]
    else:
        codes, _ = pd.factorize(x.astype("string").fillna("<missing>"))
        k = int(codes.max()) + 1
        enc = np.empty(len(y))
        for tr, te in folds:
            prior = y[tr].mean()
            sums = np.bincount(codes[tr], weights=y[tr], minlength=k)
            counts = np.bincount(codes[tr], minlength=k)
            enc[te] = ((sums + prior) / (counts + 1.0))[codes[te]]  # one pseudo-row of the prior: unseen = prior
        scores = [enc]
    auc = max(float(roc_auc_score(y, s)) for s in scores)
    auc_low = min(float(roc_auc_score(y, s)) for s in scores)
    return max(auc, 1.0 - auc_low)


def _leakage(features: pd.DataFrame, y: np.ndarray, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold

    n_pos = int(y.sum())
    if min(n_pos, len(y) - n_pos) < LEAKAGE_FOLDS:
        return {"skipped": f"needs at least {LEAKAGE_FOLDS} defaults and {LEAKAGE_FOLDS} non-defaults"}
    folds = list(StratifiedKFold(LEAKAGE_FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    aucs = {str(c): _single_feature_auc(features[c], y, folds) for c in features.columns}
    ranked = sorted(aucs.items(), key=lambda kv: -kv[1])
    return {"threshold": LEAKAGE_AUC, "folds": LEAKAGE_FOLDS, "aucs": dict(ranked),
            "top": [{"feature": c, "auc": a} for c, a in ranked[:TOP_FEATURES]],
            "suspects": [c for c, a in ranked if a >= LEAKAGE_AUC],
            "max_auc": ranked[0][1] if ranked else None}


def _psi_halves(features: pd.DataFrame, applied_at: pd.Series) -> dict:
    """PSI per feature between the applications before and after the median application date."""
    from offerlab.credit.monitoring import psi_categorical, psi_numeric, psi_status

    t = applied_at.reset_index(drop=True)
    median = t.median()
    first = (t <= median).to_numpy()
    if first.all():  # many applications on the last date: the second half starts at the median itself
        first = (t < median).to_numpy()
    if first.all() or not first.any():
        return {"skipped": "all applications share one date: PSI between halves in time is not computable"}
    out: dict = {"split_at": str(median.date()), "first_half_rows": int(first.sum()),
                 "second_half_rows": int((~first).sum()), "features": []}
    for c in features.columns:
        s = features[c]
        if _is_numeric(s) or pd.api.types.is_datetime64_any_dtype(s):
            v = _as_float(s)
            if not np.isfinite(v[first]).any():
                out["features"].append({"feature": str(c), "psi": None, "status": "not computable (no values)"})
                continue
            psi = psi_numeric(v[first], v[~first])
        else:
            psi = psi_categorical(s[first], s[~first])
        out["features"].append({"feature": str(c), "psi": float(psi), "status": psi_status(psi)})
    out["features"].sort(key=lambda r: -(r["psi"] if r["psi"] is not None else -1.0))
    out["shifted"] = [r["feature"] for r in out["features"] if r["psi"] is not None and r["status"] != "stable"]
    psis = [r["psi"] for r in out["features"] if r["psi"] is not None]
    out["max_psi"] = max(psis) if psis else None
    return out


def profile_applications(applications: pd.DataFrame, features: pd.DataFrame | None = None, seed: int = 0) -> dict:
    """Default rate, single-feature leakage suspects and PSI between the halves in time."""
    out = _overview(applications, "applied_at")
    if features is None:
        features = applications[[c for c in applications.columns if c not in CREDIT_RESERVED]]
    elif len(features) != len(applications):
        raise ValueError(f"application_features has {len(features)} rows, the applications {len(applications)}: "
                         "one row per application, same order")
    features = features.reset_index(drop=True)
    out["features"] = {"columns": int(features.shape[1]), "missing": _missing(features)}
    out["warnings"] = []
    if "default" in applications:
        labelled = applications["default"].notna().to_numpy()
        y = applications["default"].to_numpy(dtype=float)[labelled]
        out.update({"labelled": int(labelled.sum()), "defaults": int(y.sum()),
                    "default_rate": float(y.mean()) if len(y) else None})
        if features.shape[1]:
            out["leakage"] = _leakage(features[labelled].reset_index(drop=True), y.astype(np.int64), seed)
            lk = out["leakage"]
            for c in lk.get("suspects", []):
                out["warnings"].append(f"leakage suspect: '{c}' alone predicts default with out-of-fold AUC "
                                       f"{lk['aucs'][c]:.3f}; check it is known at application time")
    else:
        out["default_rate"] = None
        out["leakage"] = {"skipped": "no default label in the applications: leakage needs labels"}
    if features.shape[1]:
        out["psi"] = _psi_halves(features, applications["applied_at"])
        for c in out["psi"].get("shifted", []):
            r = next(r for r in out["psi"]["features"] if r["feature"] == c)
            out["warnings"].append(f"drift: '{c}' PSI {r['psi']:.3f} ({r['status']}) between the first and "
                                   "second half in time")
    else:
        out["psi"] = {"skipped": "no application features"}
    return out


# ------------------------------------------------------------------------------------------------- entry


def profile_tables(transactions: pd.DataFrame | None = None, customers: pd.DataFrame | None = None,
                   campaign: pd.DataFrame | None = None, applications: pd.DataFrame | None = None, *,
                   campaign_features: pd.DataFrame | None = None,
                   campaign_levels: list[str] | None = None,
                   campaign_assignment: str = "unknown",
                   application_features: pd.DataFrame | None = None,
                   calibration_end: str | None = None, holdout_end: str | None = None, seed: int = 0) -> dict:
    """A JSON-able profile of the canonical tables: aggregates only (no row values, no ids, no single amounts).

    Tables are the validated canonical tables (`offerlab.data.schema`); any may be None. `campaign_features`
    holds one row per campaign row (same order) with the raw features the randomisation check predicts the arm
    from; `campaign_levels` lists the levels, control first; `campaign_assignment` is what the data spec
    declares (randomised | targeted | unknown). `application_features` (one row per application) defaults to
    the application fields. `calibration_end` / `holdout_end` are the timing protocol dates."""
    profile: dict = {"settings": {"calibration_end": calibration_end, "holdout_end": holdout_end,
                                  "campaign_assignment": campaign_assignment, "seed": seed,
                                  "min_group": MIN_GROUP, "leakage_auc": LEAKAGE_AUC}}
    warnings: list[str] = []
    if transactions is not None:
        profile["transactions"] = profile_transactions(transactions, calibration_end, holdout_end)
        if profile["transactions"]["purchases"]["amounts"] is None:
            warnings.append(profile["transactions"]["purchases"]["amounts_note"])
    if customers is not None:
        profile["customers"] = _overview(customers, None)
        if transactions is not None:
            known = pd.Index(customers["customer_id"].astype(str).unique())
            buyers = pd.Index(transactions["customer_id"].astype(str).unique())
            profile["customers"]["buyers_without_customer_row"] = int((~buyers.isin(known)).sum())
            profile["customers"]["customers_without_purchase"] = int((~known.isin(buyers)).sum())
    if campaign is not None:
        profile["campaign"] = profile_campaign(campaign, campaign_features, campaign_levels, campaign_assignment,
                                               seed)
        warnings += profile["campaign"]["warnings"]
    if applications is not None:
        profile["applications"] = profile_applications(applications, application_features, seed)
        warnings += profile["applications"]["warnings"]
    profile["warnings"] = warnings
    return _jsonable(profile)


# ----------------------------------------------------------------------------------------------- report


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:,.{digits}f}" if abs(x) < 1e6 else f"{x:,.0f}"


def _table(headers: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return lines + [""]


def _overview_md(name: str, t: dict) -> list[str]:
    rows = [["rows", _num(t["rows"])]]
    if "customers" in t:
        rows.append(["distinct customers", _num(t["customers"])])
    if "date_range" in t:
        d = t["date_range"]
        rows.append([f"{d['column']} range", f"{d['first']} to {d['last']} ({d['days']:,} days)"])
    rows.append(["fingerprint", f"`{t['fingerprint']}`"])
    lines = [f"## {name}", ""] + _table(["", ""], rows)
    if t["missing"]:
        lines += ["Missing values:", ""]
        lines += _table(["column", "missing", "share"],
                        [[f"`{c}`", _num(m["count"]), _pct(m["share"])] for c, m in t["missing"].items()])
    else:
        lines += ["No missing values.", ""]
    return lines


def _purchases_md(p: dict, plots: dict) -> list[str]:
    lines = ["### Purchases", ""]
    tpc, dpc = p["transactions_per_customer"], p["purchase_days_per_customer"]
    rows = [["transactions per customer (mean / median / p90)",
             f"{_num(tpc['mean'], 2)} / {_num(tpc['median'], 1)} / {_num(tpc['p90'], 1)}"],
            ["distinct purchase days per customer (mean / median / p90)",
             f"{_num(dpc['mean'], 2)} / {_num(dpc['median'], 1)} / {_num(dpc['p90'], 1)}"],
            ["repeat buyers (>= 2 distinct purchase days)", f"{_num(p['repeat_buyers'])} ({_pct(p['repeat_buyer_share'])})"]]
    if p["amounts"] is None:
        rows.append(["amounts", p["amounts_note"]])
    elif "note" in p["amounts"]:
        rows.append(["amounts", p["amounts"]["note"]])
    else:
        a = p["amounts"]
        rows.append(["amount per transaction (mean / median)", f"{_num(a['mean'], 2)} / {_num(a['median'], 2)}"])
        rows.append(["zero amounts", _pct(a["zero_share"])])
    if "categories" in p:
        rows.append(["categories", _num(p["categories"])])
    lines += _table(["", ""], rows)
    g = p["inter_purchase_days"]
    lines += ["Days between consecutive distinct purchase days of a customer:", ""]
    if "mean" in g:
        lines += _table(["gaps", "mean", *QUANTILES], [[_num(g["n"]), _num(g["mean"], 1),
                                                        *[_num(g[k], 1) for k in QUANTILES]]])
    else:
        lines += [f"{_num(g['n'])} gaps: {g['note']}.", ""]
    if "inter_purchase" in plots:
        lines += [f"![inter-purchase days]({plots['inter_purchase']})", ""]
    h = p.get("holdout")
    if h:
        lines += ["### Timing holdout", ""]
        rows = [["calibration", f"to {h['calibration_end']} ({h['calibration_days']:,} days)"],
                ["customers the holdout scores (a purchase by the calibration end)",
                 f"{_num(h['scorable_customers'])} ({_pct(h['scorable_share'])} of all customers)"]]
        if "holdout_end" in h:
            rows += [["holdout", f"to {h['holdout_end']} ({h['holdout_days']:,} days)"],
                     ["of those, buying again in the holdout",
                      f"{_num(h['scorable_buying_in_holdout'])} ({_pct(h['scorable_buying_in_holdout_share'])})"],
                     ["customers first seen in the holdout (not scored)", _num(h["new_in_holdout_customers"])],
                     ["purchase days after the holdout end (ignored)", _num(h["purchase_days_after_holdout"])]]
        lines += _table(["", ""], rows)
    return lines


def _campaign_md(c: dict, plots: dict) -> list[str]:
    lines = ["### Arms", ""]
    if "levels_note" in c:
        lines += [f"Note: {c['levels_note']}.", ""]
    headers = ["level", "rows", "share", "conversion rate", "mean revenue", "revenue per converter"]
    has_cost = any("cost_mean" in a for a in c["arms"])
    if has_cost:
        headers.append("mean cost")
    rows = []
    for a in c["arms"]:
        name = f"{a['level']} (control)" if a["level"] == c["control"] != "control" else a["level"]
        r = [name, _num(a["rows"]), _pct(a["share"]), _pct(a["conversion_rate"]), _num(a["revenue_mean"], 2),
             _num(a["revenue_per_converter"], 2)]
        if has_cost:
            r.append(_num(a.get("cost_mean"), 2))
        rows.append(r)
    lines += _table(headers, rows)
    lines += [f"Amount means over fewer than {MIN_GROUP} customers are not shown (n/a).", ""]
    if c.get("logged_propensity"):
        lines += ["The log carries its own assignment propensities (`propensity` column).", ""]
    lines += ["### Randomisation check", ""]
    chk = c["assignment_check"]
    if "skipped" in chk:
        return lines + [f"Skipped: {chk['skipped']}.", ""]
    lines += [f"**Verdict: {chk['verdict_words']}.**", "",
              f"Declared in the data spec: `{c['declared_assignment']}` — {c['declared_vs_check']}.", ""]
    if c["declared_vs_check"].startswith("MISMATCH"):
        lines += [f"> **Warning:** {c['declared_vs_check']}. Fix the data spec (`assignment`) or the log before "
                  "estimating uplift: a targeted log read as randomised biases every arm comparison.", ""]
    rows = [[lv, _num(a)] for lv, a in chk["auc_by_level"].items()]
    lines += _table(["level (one vs rest)", "arm-prediction AUC"], rows)
    lines += [f"Macro AUC {_num(chk['auc'])}; chance standard error {_num(chk['chance_se'], 4)}; threshold "
              f"{_num(chk['threshold'])}.", "",
              f"Common support (every level's estimated probability >= {chk['min_propensity']}): "
              f"{_pct(chk['overlap_share'])} of customers.", ""]
    lines += _table(["level", "min propensity", "median", "max"],
                    [[lv, *(_num(v) for v in r)] for lv, r in chk["propensity_range"].items()])
    if "overlap" in plots:
        lines += [f"![propensity overlap]({plots['overlap']})", ""]
    return lines


def _applications_md(a: dict, plots: dict) -> list[str]:
    lines = ["### Labels", ""]
    if a.get("default_rate") is None:
        lines += ["No default labels.", ""]
    else:
        lines += [f"{_num(a['labelled'])} labelled applications, {_num(a['defaults'])} defaults: default rate "
                  f"{_pct(a['default_rate'])}.", ""]
    lines += ["### Leakage suspects", ""]
    lk = a.get("leakage", {"skipped": "no application features"})
    if "skipped" in lk:
        lines += [f"Skipped: {lk['skipped']}.", ""]
    else:
        if lk["suspects"]:
            lines += [f"> **Warning:** {len(lk['suspects'])} feature(s) alone predict the label with out-of-fold "
                      f"AUC >= {lk['threshold']}: " + ", ".join(f"`{s}`" for s in lk["suspects"]) +
                      ". Check that they are known at application time.", ""]
        else:
            lines += [f"No single feature reaches out-of-fold AUC {lk['threshold']}.", ""]
        lines += [f"Top single-feature AUCs (max(AUC, 1 - AUC); categories target-encoded out of fold, "
                  f"{lk['folds']} folds):", ""]
        lines += _table(["feature", "AUC", "suspect"],
                        [[f"`{r['feature']}`", _num(r["auc"]), "yes" if r["auc"] >= lk["threshold"] else ""]
                         for r in lk["top"]])
        if "leakage" in plots:
            lines += [f"![single-feature AUC]({plots['leakage']})", ""]
    lines += ["### Stability in time (PSI, first vs second half)", ""]
    ps = a["psi"]
    if "skipped" in ps:
        return lines + [f"Skipped: {ps['skipped']}.", ""]
    lines += [f"Split at the median application date {ps['split_at']}: {_num(ps['first_half_rows'])} vs "
              f"{_num(ps['second_half_rows'])} applications. PSI < 0.10 stable, 0.10-0.25 moderate, >= 0.25 "
              "significant.", ""]
    lines += _table(["feature", "PSI", "status"],
                    [[f"`{r['feature']}`", _num(r["psi"]), r["status"]] for r in ps["features"]])
    if "psi" in plots:
        lines += [f"![PSI]({plots['psi']})", ""]
    return lines


def render_markdown(profile: dict, title: str = "Data check", plots: dict | None = None) -> str:
    plots = plots or {}
    s = profile.get("settings", {})
    lines = [f"# {title}", "",
             "Aggregates only: no customer id, no single amount, no row value. Quantiles and amount means are "
             f"reported over at least {s.get('min_group', MIN_GROUP)} values.", ""]
    if profile.get("readiness"):  # set by `offerlab data check`: what each model family still needs
        lines += ["## Ready to model?", "", "| family | state |", "| --- | --- |"]
        lines += [f"| {f} | {state} |" for f, state in profile["readiness"].items()] + [""]
    lines += ["## Warnings", ""]
    lines += [f"- {w}" for w in profile.get("warnings", [])] or ["None."]
    lines += [""]
    if "transactions" in profile:
        lines += _overview_md("Transactions", profile["transactions"])
        lines += _purchases_md(profile["transactions"]["purchases"], plots)
    if "customers" in profile:
        c = profile["customers"]
        lines += _overview_md("Customers", c)
        if "buyers_without_customer_row" in c:
            lines += [f"Buyers without a customers row: {_num(c['buyers_without_customer_row'])}; customers "
                      f"without a purchase: {_num(c['customers_without_purchase'])}.", ""]
    if "campaign" in profile:
        lines += _overview_md("Campaign", profile["campaign"])
        lines += _campaign_md(profile["campaign"], plots)
    if "applications" in profile:
        lines += _overview_md("Applications (credit)", profile["applications"])
        lines += _applications_md(profile["applications"], plots)
    return "\n".join(lines).rstrip() + "\n"


def _plot_inter_purchase(h: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        # bins differ in log width (whole days): a density per decade keeps the bar areas honest
        density = counts / max(counts.sum(), 1) / np.diff(np.log10(edges))
        ax.bar(edges[:-1], density, width=np.diff(edges), align="edge", edgecolor="white")
        ax.set_xscale("log")
        ax.set_xlabel("days between consecutive purchase days (log scale)")
        ax.set_ylabel("share of gaps per decade")
        ax.set_title("Inter-purchase times")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _plot_overlap(hist: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    edges = np.asarray(hist["edges"])
    levels = list(hist["by_level"])
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2), squeeze=False)
    try:
        for ax, lv in zip(axes[0], levels, strict=True):
            for key, label in (("received", f"got {lv}"), ("not_received", "other arms")):
                counts = np.asarray(hist["by_level"][lv][key], dtype=float)
                dens = counts / max(counts.sum(), 1.0)
                ax.stairs(dens, edges, fill=True, alpha=0.5, label=label)
            ax.set_title(lv)
            ax.set_xlabel(f"estimated P({lv} | features)")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("share of customers")
        fig.suptitle("Propensity overlap")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _plot_bars(names: list[str], values: list[float], lines: list[float], xlabel: str, title: str,
               path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    try:
        ax.barh(names[::-1], values[::-1])
        for x in lines:
            ax.axvline(x, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def _write_plots(profile: dict, folder: Path) -> dict[str, str]:
    plots: dict[str, str] = {}
    hist = profile.get("transactions", {}).get("purchases", {}).get("inter_purchase_days", {}).get("histogram")
    if hist:
        _plot_inter_purchase(hist, folder / PLOTS["inter_purchase"])
        plots["inter_purchase"] = PLOTS["inter_purchase"]
    over = profile.get("campaign", {}).get("assignment_check", {}).get("overlap_histograms")
    if over:
        _plot_overlap(over, folder / PLOTS["overlap"])
        plots["overlap"] = PLOTS["overlap"]
    apps = profile.get("applications", {})
    top = apps.get("leakage", {}).get("top")
    if top:
        _plot_bars([r["feature"] for r in top], [r["auc"] for r in top], [LEAKAGE_AUC], "single-feature AUC",
                   "Single-feature AUC (out of fold)", folder / PLOTS["leakage"])
        plots["leakage"] = PLOTS["leakage"]
    psi = [r for r in apps.get("psi", {}).get("features", []) if r["psi"] is not None]
    if psi:
        _plot_bars([r["feature"] for r in psi], [r["psi"] for r in psi], [0.10, 0.25], "PSI",
                   "PSI, first vs second half in time", folder / PLOTS["psi"])
        plots["psi"] = PLOTS["psi"]
    return plots


def _is_report_file(p: Path) -> bool:
    return p.is_file() and (p.name in (REPORT_MD, REPORT_JSON) or p.suffix == ".png")


def write_report(profile: dict, out_dir: str | Path, title: str = "Data check") -> list[Path]:
    """Write <out_dir>/data_check.md (Markdown, human-readable sections and tables) + PNG plots + data_check.json.

    Everything is written into a temporary folder beside `out_dir` and swapped in only when complete, so a
    failed run never leaves a half-written report or clobbers an earlier one. `out_dir` is replaced as a
    whole: it must be absent, empty or hold only an earlier report. Returns the written files."""
    out = Path(out_dir).resolve()
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} exists and is not a folder")
        other = sorted(p.name for p in out.iterdir() if not _is_report_file(p))
        if other:
            raise ValueError(f"{out} holds files that are not a data-check report ({other[:5]}); the report "
                             "replaces its folder as a whole: choose an empty or report-only folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        text = json.dumps(profile, indent=2, allow_nan=False)  # un-serialisable: fails before anything moves
        (tmp / REPORT_JSON).write_text(text + "\n")
        plots = _write_plots(profile, tmp)
        (tmp / REPORT_MD).write_text(render_markdown(profile, title, plots))
        backup = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            out.rename(backup)
        try:
            tmp.rename(out)
        except BaseException:
            if backup.exists():
                backup.rename(out)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / REPORT_MD, out / REPORT_JSON] + [out / name for name in plots.values()]


# ----------------------------------------------------------------------------------------------- mlflow


def _metric_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "_", name)


def profile_metrics(profile: dict) -> dict[str, float]:
    """The key figures of a profile as flat MLflow metrics (`transactions.rows`, `campaign.assignment_auc`...)."""
    m: dict[str, float | None] = {}
    for table in ("transactions", "customers", "campaign", "applications"):
        t = profile.get(table)
        if t is None:
            continue
        m[f"{table}.rows"] = t["rows"]
        m[f"{table}.customers"] = t.get("customers")
        m[f"{table}.missing_columns"] = len(t["missing"])
    p = profile.get("transactions", {}).get("purchases")
    if p:
        m["transactions.repeat_buyer_share"] = p["repeat_buyer_share"]
        m["transactions.purchase_days_per_customer_mean"] = p["purchase_days_per_customer"]["mean"]
        m["transactions.inter_purchase_days_median"] = p["inter_purchase_days"].get("p50")
        m["transactions.inter_purchase_days_mean"] = p["inter_purchase_days"].get("mean")
        if p["amounts"]:
            m["transactions.amount_mean"] = p["amounts"].get("mean")
            m["transactions.amount_median"] = p["amounts"].get("median")
        h = p.get("holdout") or {}
        m["transactions.scorable_customers"] = h.get("scorable_customers")
        m["transactions.scorable_share"] = h.get("scorable_share")
        m["transactions.scorable_buying_in_holdout_share"] = h.get("scorable_buying_in_holdout_share")
    c = profile.get("campaign")
    if c:
        m["campaign.conversion_rate"] = c["conversion_rate"]
        for a in c["arms"]:
            m[f"campaign.rows.{a['level']}"] = a["rows"]
            m[f"campaign.conversion_rate.{a['level']}"] = a["conversion_rate"]
        chk = c["assignment_check"]
        if "auc" in chk:
            m["campaign.assignment_auc"] = chk["auc"]
            m["campaign.assignment_threshold"] = chk["threshold"]
            m["campaign.overlap_share"] = chk["overlap_share"]
            m["campaign.targeted"] = float(chk["verdict"] == "targeted")
            m["campaign.declared_mismatch"] = float(c["declared_vs_check"].startswith("MISMATCH"))
    a = profile.get("applications")
    if a:
        m["applications.default_rate"] = a.get("default_rate")
        lk = a.get("leakage", {})
        m["applications.max_single_feature_auc"] = lk.get("max_auc")
        if "suspects" in lk:
            m["applications.leakage_suspects"] = len(lk["suspects"])
        ps = a.get("psi", {})
        m["applications.max_psi"] = ps.get("max_psi")
        if "shifted" in ps:
            m["applications.shifted_features"] = len(ps["shifted"])
    m["warnings"] = len(profile.get("warnings", []))
    return {_metric_name(k): float(v) for k, v in m.items() if v is not None}


def profile_tags(profile: dict) -> dict[str, str]:
    tags: dict[str, str] = {}
    for table in ("transactions", "customers", "campaign", "applications"):
        t = profile.get(table)
        if t is None:
            continue
        tags[f"{table}.fingerprint"] = t["fingerprint"]
        if "date_range" in t:
            tags[f"{table}.first_date"] = t["date_range"]["first"]
            tags[f"{table}.last_date"] = t["date_range"]["last"]
    c = profile.get("campaign")
    if c:
        tags["campaign.declared_assignment"] = c["declared_assignment"]
        if "verdict" in c["assignment_check"]:
            tags["campaign.assignment_verdict"] = c["assignment_check"]["verdict"]
            tags["campaign.declared_vs_check"] = c["declared_vs_check"][:250]
    p = profile.get("transactions", {}).get("purchases")
    if p:
        tags["transactions.has_amounts"] = str(p["amounts"] is not None).lower()
    return tags


def log_profile(profile: dict, files: list[Path], run_name: str = "data-check", params: dict | None = None) -> str:
    """One MLflow run in experiment `offerlab-data`: key figures as metrics, the report files as artifacts.

    Returns the run id."""
    import mlflow

    from offerlab.tracking import start_run

    with start_run("data", run_name) as run:
        if params:
            mlflow.log_params(params)
        mlflow.log_metrics(profile_metrics(profile))
        mlflow.set_tags(profile_tags(profile))
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="data_check")
    return run.info.run_id
