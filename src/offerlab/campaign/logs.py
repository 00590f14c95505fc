"""Learning from every past campaign: several campaign logs, each with the probabilities it was assigned by, as
one training set for the uplift model.

Each log's per-customer probabilities of every level come from what is known about it:
- a plan's own log (written by `offerlab campaign evaluate --log-out`): the logged P_i(l) of its design;
- a randomised campaign: its design (the log's propensity column, the spec's declared design, else arm shares);
- a targeted campaign (the CRM chose from customer traits): estimated within that log alone (cross-fitted), since
  every campaign had its own rule.
The logs are stacked with per-row probabilities. When every log's probabilities are known (randomised campaigns
and plans: the assignment depended on the features only, through probabilities written down before any outcome),
each level's outcome model is consistent on the stacked rows as they are (the choice is ignorable given the
features), so the uplift model takes its randomised path with the per-row probabilities as the known design: no
row is dropped, and a row whose level had a small probability still teaches that level where it was tried. A
plan without exploration gives its unplanned levels probability 0: its rows teach only the levels it chose, in the
regions it chose them, which is why plans explore. When any log is targeted (probabilities estimated), the stack
takes the doubly robust path (`UpliftModel._fit_targeted`): customers with any level below `net.min_propensity`
are outside the common support and trimmed, the rest enter the first stage and the DR second stage.
What was used, per log, is in the returned report and in the model's `fit_report["logs"]`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from offerlab.data.schema import DataValidationError
from offerlab.uplift.data import CampaignData
from offerlab.uplift.propensity import MIN_PROPENSITY

FEATURE_PREFIX = "f."
log = logging.getLogger(__name__)


def log_from_plan(plan: pd.DataFrame, outcomes: pd.DataFrame, summary: dict) -> CampaignData:
    """A planned campaign with its matched outcomes as a campaign log: features the plan stored (`f.` columns),
    the level given, net revenue and the plan's probabilities of every level."""
    levels = summary["economics"]["levels"]
    feats = plan[[c for c in plan.columns if c.startswith(FEATURE_PREFIX)]]
    if feats.shape[1] == 0:
        raise ValueError("the plan stores no features (f. columns): it cannot become a training log")
    code = {lv: j for j, lv in enumerate(levels)}
    return CampaignData(
        customer_id=plan["customer_id"].to_numpy(dtype=object),
        features=feats.rename(columns=lambda c: c[len(FEATURE_PREFIX):]).reset_index(drop=True),
        treatment=plan["level"].astype(str).map(code).to_numpy(dtype=np.int64),
        conversion=outcomes["conversion"].to_numpy(dtype=float), revenue=outcomes["revenue"].to_numpy(dtype=float),
        levels=list(levels), propensity=plan[[f"propensity_{lv}" for lv in levels]].to_numpy(dtype=float),
        discounts=dict(summary["economics"]["discounts"]), assignment="plan",
        returned_revenue=(outcomes["returned_revenue"].to_numpy(dtype=float) if "returned_revenue" in outcomes
                          else None),
    )


def write_log(data: CampaignData, path: Path, name: str) -> None:
    """A campaign log file for `read_log`: features (f.), level, outcomes, every level's probability."""
    from offerlab.serving.score import write_atomic

    frame = pd.DataFrame({"customer_id": data.customer_id, "treatment": data.treatment_names,
                          "conversion": data.conversion, "revenue": data.revenue})
    if data.returned_revenue is not None:
        frame["returned_revenue"] = data.returned_revenue
    for j, lv in enumerate(data.levels):
        frame[f"propensity_{lv}"] = data.propensity[:, j]
        frame[f"discount_{lv}"] = float(data.discounts[lv])
    frame = pd.concat([frame, data.features.add_prefix(FEATURE_PREFIX)], axis=1)
    frame["log"] = name
    write_atomic(frame, Path(path))


def read_log(path: str | Path) -> CampaignData:
    """A campaign log written by `write_log` (`offerlab campaign evaluate --log-out`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"campaign log not found: {path}")
    frame = pd.read_parquet(path)
    levels = [c.removeprefix("propensity_") for c in frame.columns if c.startswith("propensity_")]
    need = ["customer_id", "treatment", "conversion", "revenue"]
    missing = [c for c in need if c not in frame.columns]
    if missing or not levels:
        raise DataValidationError(str(path), (missing or ["propensity_<level>"])[0], "not a campaign log: write one "
                                  "with `offerlab campaign evaluate --log-out`")
    code = {lv: j for j, lv in enumerate(levels)}
    t = frame["treatment"].astype(str).map(code)
    if t.isna().any():
        raise DataValidationError(str(path), "treatment", f"level not in {levels}")
    return CampaignData(
        customer_id=frame["customer_id"].to_numpy(dtype=object),
        features=frame[[c for c in frame.columns if c.startswith(FEATURE_PREFIX)]].rename(
            columns=lambda c: c[len(FEATURE_PREFIX):]).reset_index(drop=True),
        treatment=t.to_numpy(dtype=np.int64), conversion=frame["conversion"].to_numpy(dtype=float),
        revenue=frame["revenue"].to_numpy(dtype=float), levels=levels,
        propensity=frame[[f"propensity_{lv}" for lv in levels]].to_numpy(dtype=float),
        discounts={lv: float(frame[f"discount_{lv}"].iloc[0]) for lv in levels}, assignment="plan",
        returned_revenue=frame["returned_revenue"].to_numpy(dtype=float) if "returned_revenue" in frame else None,
    )


def _probabilities(data: CampaignData, seed: int, folds: int) -> tuple[np.ndarray, str]:
    if data.propensity is not None:
        return data.propensity, "logged (the plan's design)" if data.assignment == "plan" else "known (the log's design)"
    if data.assignment == "targeted":
        from offerlab.uplift.propensity import cross_fitted_propensity

        e = cross_fitted_propensity(data.features, data.treatment, len(data.levels), folds, seed)
        return e, f"estimated within this log (cross-fitted, {folds} folds)"
    if data.assignment == "randomised":
        share = np.bincount(data.treatment, minlength=len(data.levels)) / len(data)
        return np.tile(share, (len(data), 1)), "randomised: the arms' shares"
    raise ValueError("a campaign log of unknown assignment: declare it randomised or targeted "
                     "(semantics.campaign_assignment)")


def combine_logs(logs: list[tuple[str, CampaignData]], *, min_propensity: float = MIN_PROPENSITY, seed: int = 0,
                 folds: int = 5) -> tuple[CampaignData, list[dict]]:
    """Stack named campaign logs into one `CampaignData` with every row's probabilities (module docstring).
    Refused: logs with other levels, rates or feature columns than the first."""
    if not logs:
        raise ValueError("no campaign logs to learn from")
    first_name, first = logs[0]
    if len(logs) == 1 and first.assignment != "plan":
        report = [{"log": first_name, "rows": len(first), "assignment": first.assignment,
                   "propensity": "as the single log says"}]
        return replace(first, sources=report), report
    parts, report = [], []
    for name, data in logs:
        if data.levels != first.levels:
            raise ValueError(f"campaign log {name!r} has levels {data.levels}, {first_name!r} has {first.levels}: "
                             "logs learnt together must offer the same levels")
        differ = [lv for lv in data.levels if abs(data.discounts.get(lv, np.nan) - first.discounts[lv]) > 1e-12]
        if differ:
            raise ValueError(f"campaign log {name!r} prices level {differ[0]!r} at {data.discounts.get(differ[0])}, "
                             f"{first_name!r} at {first.discounts[differ[0]]}: a level is one discount rate")
        cols = list(first.features.columns)
        if set(data.features.columns) == set(cols):
            data = replace(data, features=data.features[cols])  # the same features in another order
        else:
            gone = [c for c in cols if c not in data.features.columns]
            extra = [c for c in data.features.columns if c not in cols]
            raise DataValidationError(f"campaign log {name}", (gone or extra)[0],
                                      f"{'missing' if gone else 'a feature column the first log lacks'}: logs learnt "
                                      f"together need the same features ({first_name!r} has {len(cols)})")
        e, source = _probabilities(data, seed, folds)
        report.append({"log": name, "rows": len(data), "assignment": data.assignment, "propensity": source,
                       "outside_support": int((e < min_propensity).any(axis=1).sum()),
                       "min_propensity": float(e.min())})
        parts.append((data, e))
    targeted = any(d.assignment == "targeted" for d, _ in parts)
    for r in report:  # trimmed only on the doubly robust path; with known probabilities every row is used
        r["used"] = r["rows"] - r["outside_support"] if targeted else r["rows"]
    with_returns = [d.returned_revenue is not None for d, _ in parts]
    if any(with_returns) and not all(with_returns):
        raise ValueError("some campaign logs carry returned_revenue and others do not: a return model learns from "
                         "every row, so give it for all of them (0 where nothing came back) or for none")
    combined = CampaignData(
        customer_id=np.concatenate([d.customer_id for d, _ in parts]),
        features=pd.concat([d.features for d, _ in parts], ignore_index=True),
        treatment=np.concatenate([d.treatment for d, _ in parts]),
        conversion=np.concatenate([d.conversion for d, _ in parts]),
        revenue=np.concatenate([d.revenue for d, _ in parts]),
        levels=list(first.levels), propensity=np.concatenate([e for _, e in parts]),
        discounts=dict(first.discounts), assignment="targeted" if targeted else "randomised", sources=report,
        returned_revenue=np.concatenate([d.returned_revenue for d, _ in parts]) if all(with_returns) else None,
    )
    for r in report:
        log.info("campaign log %s: %d rows, %s, propensity %s; %d used", r["log"], r["rows"], r["assignment"],
                 r["propensity"], r["used"])
    return combined, report


def fit_on_logs(model, logs: list[tuple[str, CampaignData]], callbacks: list | None = None):
    """Fit `model` (an UpliftModel, or a peer with `fit(data)`) on the stacked logs; an UpliftModel keeps the
    report (`data.sources`) in its `fit_report["logs"]`."""
    min_p = getattr(getattr(model, "net_cfg", None), "min_propensity", MIN_PROPENSITY)
    data, report = combine_logs(logs, min_propensity=min_p, seed=getattr(model, "seed", 0))
    model.fit(data, callbacks=callbacks) if callbacks is not None else model.fit(data)
    return model, report
