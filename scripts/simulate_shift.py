"""Simulated production on the synthetic marketplace: a reference period, then a shifted current period, each
batch-scored with the decision log on; then `monitor drift` and `monitor performance` on the logs.

The shift (what changed between the periods, and nothing else):
- a new cohort: the current customers over-represent the south region (all southern customers of the current
  world kept, the others with probability `keep_other`); region is independent of every purchase and credit
  trait in the generator, so among the logged inputs only `uplift.region` moves;
- a price change of the goods financed: every current application asks for `price_factor` times the amount.
  The truth follows the generator's own law, true logit += 0.45 ln(price_factor) (`offerlab.data.synth`,
  PROCESS["credit"]: 0.45 log(requested / monthly income)), and defaults are drawn again from it, so the
  performance report's credit figures can be set against the true PD's.

Run (needs champions of the three families in the tracking store, e.g. after `offerlab run`):
    python scripts/simulate_shift.py --customers 10000 --out sim_shift
Prints one JSON with the drift report's flagged variables and the performance figures of both periods,
next to the truth's (oracle AUC of the true PD, mean true PD).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

AS_OF = "2024-10-31T23:59:59"
TRUE_LOGIT_PER_LOG_REQUESTED = 0.45  # offerlab.data.synth PROCESS["credit"]
KEY = "simulate-shift-key"


def period(n_customers: int, seed: int, *, shifted: bool, keep_other: float = 0.3, price_factor: float = 2.0):
    """(transactions up to AS_OF, customers, latest applications up to AS_OF with their outcome and true PD,
    purchases after AS_OF) of one synthetic world, shifted or not."""
    from offerlab.data.synth import generate

    s = generate(n_customers, seed=seed)
    cust = s.customers
    rng = np.random.default_rng(seed + 1000)
    if shifted:
        keep = (cust["region"] == "south") | (rng.random(len(cust)) < keep_other)
        cust = cust[keep.to_numpy()]
    ids = set(cust["customer_id"])
    tx = s.transactions[s.transactions["customer_id"].isin(ids)]
    cut = pd.Timestamp(AS_OF)
    before, after = tx[tx["timestamp"] <= cut], tx[tx["timestamp"] > cut]
    apps = s.applications.merge(s.truth_credit[["application_id", "true_pd"]], on="application_id")
    apps = apps[apps["customer_id"].isin(set(before["customer_id"])) & (apps["applied_at"] <= cut)]
    if shifted:
        apps = apps.assign(requested_amount=apps["requested_amount"] * price_factor)
        logit = np.log(apps["true_pd"] / (1 - apps["true_pd"])) + TRUE_LOGIT_PER_LOG_REQUESTED * np.log(price_factor)
        apps = apps.assign(true_pd=1 / (1 + np.exp(-logit)))
        apps = apps.assign(default=(rng.random(len(apps)) < apps["true_pd"]).astype(int))
    side = {}
    for name in ("returns", "repayments"):  # generator version 4: the credit model may read them
        table = getattr(s, name, None)
        if table is not None:
            table = table[table["customer_id"].isin(ids)]
            when = next((c for c in ("returned_at", "issued_at") if c in table), None)  # known by AS_OF
            side[name] = table[pd.to_datetime(table[when]) <= cut] if when else table
    return before, cust, apps, after, side


LOG_SETTINGS = ("OFFERLAB_DECISION_LOG", "OFFERLAB_DECISION_LOG_KEY")


def run(n_customers: int, out: str | Path, seed: int = 11, n_samples: int = 8, keep_other: float = 0.3,
        price_factor: float = 2.0) -> dict:
    """`_run`, with the decision-log settings it sets for its two worlds put back afterwards (a test calls it in
    the suite's process: a later service must not inherit this run's log)."""
    from offerlab.monitor.decision_log import reset_process_log

    saved = {k: os.environ.get(k) for k in LOG_SETTINGS}
    try:
        return _run(n_customers, out, seed, n_samples, keep_other, price_factor)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_process_log()


def _run(n_customers: int, out: str | Path, seed: int, n_samples: int, keep_other: float,
         price_factor: float) -> dict:
    from offerlab.credit.metrics import auc, ece
    from offerlab.monitor import drift, performance
    from offerlab.monitor.decision_log import read_decisions
    from offerlab.serving.score import ScoreInputs, latest_application, run_score

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["OFFERLAB_DECISION_LOG_KEY"] = KEY
    result: dict = {"customers_per_world": n_customers, "as_of": AS_OF, "price_factor": price_factor,
                    "keep_other_regions": keep_other}
    logs = {}
    for name, shifted, s in (("reference", False, seed), ("current", True, seed + 1)):
        tx, cust, apps, after, side = period(n_customers, s, shifted=shifted, keep_other=keep_other,
                                       price_factor=price_factor)
        d = out / name
        d.mkdir(exist_ok=True)
        tx.to_parquet(d / "tx.parquet")
        cust.to_parquet(d / "customers.parquet")
        latest = latest_application(apps)
        latest.drop(columns=["true_pd"]).to_parquet(d / "applications.parquet")
        after[["customer_id", "timestamp"]].to_parquet(d / "purchases_after.parquet")
        latest[["customer_id", "default"]].to_parquet(d / "defaults.parquet")
        shutil.rmtree(d / "decisions", ignore_errors=True)  # this run's records only
        os.environ["OFFERLAB_DECISION_LOG"] = str(d / "decisions")
        inputs = ScoreInputs(transactions=tx, customers=cust, applications=latest.drop(columns=["true_pd"]), **side)
        summary = run_score("offers", None, d / "offers.parquet", inputs=inputs, as_of=AS_OF, n_samples=n_samples,
                            force=True, progress=False)
        logs[name] = read_decisions([str(d / "decisions")])
        outcomes = {"purchases": after[["customer_id", "timestamp"]], "defaults": latest[["customer_id", "default"]]}
        perf = performance.performance_report(logs[name], outcomes, KEY, observed_until="2024-12-31T23:59:59")
        y, p_true = latest["default"].to_numpy(), latest["true_pd"].to_numpy()
        perf["credit"]["truth"] = {"auc_true_pd": auc(y, p_true), "ece_true_pd": ece(y, p_true),
                                   "mean_true_pd": float(p_true.mean())}
        result[name] = {"customers": summary["customers"], "applications": len(latest),
                        "records": summary["decision_log"]["written"], "performance": perf}
    table = drift.drift_table(logs["reference"], logs["current"])
    flagged = table[table["status"] != "stable"]
    result["drift"] = {"variables": len(table), "exit_code": drift.exit_code(table),
                       "flagged": {f"{r.family}.{r.variable}": [round(r.psi, 4), r.kind] for r in flagged.itertuples()},
                       "max_psi_unshifted_features": float(table[(table["kind"] == "feature")
                                                                 & ~table.index.isin(flagged.index)]["psi"].max())}
    (out / "drift_report.md").write_text(drift.markdown(table, drift.refusal_table(logs["reference"], logs["current"]),
                                                       {"reference": "reference", "current": ["current"],
                                                        "n_reference": len(logs["reference"]),
                                                        "n_current": len(logs["current"])}))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--out", default="sim_shift")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    from offerlab.quiet import configure

    configure(False)
    print(json.dumps(run(args.customers, args.out, args.seed), indent=1, default=str))


if __name__ == "__main__":
    main()
