"""The same model through either door: the built-in route (Python API on the synthetic marketplace) beside the
CLI route (the same marketplace exported as a stranger's files, every bench run by `offerlab ... --data SPEC`),
and the CLI route on the same files without amounts (a date-only order log).

    python scripts/bench_either_door.py --customers 20000 --out experiments/results/either_door.json

Reports timing count RMSE (ours and Pareto/NBD), uplift true profit as a share of the observable oracle's at
10/30/100% budgets (from each route's out-of-sample predictions joined to the truth by customer id) and Qini,
credit AUC and ECE (ours and LightGBM). Each route uses the same family configs (configs/<family>/synth.yaml).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BUDGETS = (0.1, 0.3, 1.0)


def cli(*args) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "offerlab.cli", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"offerlab {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def observable_shares(pred_file: Path, synth, policy) -> dict:
    """Per budget share: true profit of ours / the observable oracle's, averaged over the split seeds, from the
    bench's out-of-sample predictions (customer_id, seed, per-level revenue) joined to the truth."""
    from offerlab.data.synth import campaign_truth_observable
    from offerlab.uplift.policy import choose_levels, level_economics

    levels = list(synth.meta["levels"])
    d = np.array([synth.meta["discounts"][lv] for lv in levels])
    truth = synth.truth_campaign.set_index("customer_id")
    observable = campaign_truth_observable(synth).set_index("customer_id")
    preds = pd.read_parquet(pred_file)
    preds = preds[preds["model"] == "offerlab"]
    names = [c.removeprefix("revenue_") for c in preds.columns if c.startswith("revenue_")]
    by_level = dict(zip(levels, names, strict=True)) if names != levels else {lv: lv for lv in levels}
    out: dict[str, list[float]] = {f"{b:g}": [] for b in BUDGETS}
    for _, p in preds.groupby("seed"):
        ids = p["customer_id"].astype(str).to_numpy()
        rev = p[[f"revenue_{by_level[lv]}" for lv in levels]].to_numpy()
        t_rev = np.stack([truth.loc[ids, f"exp_revenue_{lv}"].to_numpy() for lv in levels], axis=1)
        o_rev = np.stack([observable.loc[ids, f"exp_revenue_{lv}"].to_numpy() for lv in levels], axis=1)
        t_profit, t_spend = level_economics(t_rev, d, policy["margin"], policy["contact_cost"])
        e_profit, e_spend = level_economics(rev, d, policy["margin"], policy["contact_cost"])
        o_profit, o_spend = level_economics(o_rev, d, policy["margin"], policy["contact_cost"])
        _, full = choose_levels(t_profit, t_spend)
        rows = np.arange(len(ids))
        for b in BUDGETS:
            m_choice, _ = choose_levels(e_profit, e_spend, b * full)
            o_choice, _ = choose_levels(o_profit, o_spend, b * full)
            out[f"{b:g}"].append(float(t_profit[rows, m_choice].sum() / t_profit[rows, o_choice].sum()))
    return {b: round(float(np.mean(v)), 4) for b, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--uplift-seeds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "experiments/results/either_door.json"))
    args = ap.parse_args()

    from offerlab.credit.bench import run_bench as credit_bench
    from offerlab.credit.config import load_config as credit_config
    from offerlab.data.stranger import write_stranger_files
    from offerlab.data.synth import load_synth, synth_to_dir
    from offerlab.timing.bench import run_bench as timing_bench
    from offerlab.uplift.bench import run_bench as uplift_bench
    from offerlab.uplift.config import load_config as uplift_config

    cfg = {f: ROOT / "configs" / f / "synth.yaml" for f in ("timing", "uplift", "credit")}
    with tempfile.TemporaryDirectory(prefix="either-door-") as tmp:
        tmp = Path(tmp)
        synth_dir = tmp / "synth"
        synth_to_dir(args.customers, args.seed, synth_dir)
        synth = load_synth(synth_dir)
        specs = {"cli": write_stranger_files(synth, tmp / "stranger"),
                 "cli_no_amounts": write_stranger_files(synth, tmp / "stranger_dates", amounts=False)}
        policy = {"margin": synth.meta["margin"], "contact_cost": synth.meta["contact_cost"]}
        routes: dict[str, dict] = {r: {} for r in ("built_in", *specs)}
        seconds: dict[str, dict] = {r: {} for r in routes}

        t0 = time.perf_counter()
        t = timing_bench("synth", tmp / "t_built.json", synth_dir=str(synth_dir), config=cfg["timing"],
                         models=("offerlab", "pareto_nbd"))
        seconds["built_in"]["timing"] = time.perf_counter() - t0
        routes["built_in"]["timing"] = {m: t["models"][m]["count_rmse"] for m in ("offerlab", "pareto_nbd")}
        t0 = time.perf_counter()
        ucfg = uplift_config(cfg["uplift"], {"data": {"dataset": "synth", "synth_dir": str(synth_dir)}})
        u = uplift_bench(ucfg, tmp / "u_built.json", seeds=args.uplift_seeds, models=("offerlab",),
                         feature_oracle=False, predictions=tmp / "u_built.parquet")
        seconds["built_in"]["uplift"] = time.perf_counter() - t0
        routes["built_in"]["uplift"] = {"observable_oracle_share": observable_shares(tmp / "u_built.parquet", synth,
                                                                                     policy),
                                        "qini_mean": round(float(np.mean([v["mean"] for v in
                                                                          u["models"]["offerlab"]["qini"].values()])), 4)}
        t0 = time.perf_counter()
        c = credit_bench(credit_config(cfg["credit"], {"data": {"dataset": "synth", "synth_dir": str(synth_dir)},
                                                       "evaluation": {"peers": ["lightgbm"]}}))
        seconds["built_in"]["credit"] = time.perf_counter() - t0
        routes["built_in"]["credit"] = {m: {k: round(c["models"][m][k], 4) for k in ("auc", "ece")}
                                        for m in ("offerlab", "lightgbm")}

        for route, spec in specs.items():
            seconds[route]["timing"] = cli("bench", "timing", "--data", spec, "--config", cfg["timing"], "--models",
                                           "offerlab,pareto_nbd", "--out", tmp / f"t_{route}.json")
            t = json.loads((tmp / f"t_{route}.json").read_text())
            routes[route]["timing"] = {m: t["models"][m]["count_rmse"] for m in ("offerlab", "pareto_nbd")}
            seconds[route]["uplift"] = cli("bench", "uplift", "--data", spec, "--config", cfg["uplift"], "--seeds",
                                           args.uplift_seeds, "--models", "offerlab", "--predictions",
                                           tmp / f"u_{route}.parquet", "--out", tmp / f"u_{route}.json")
            u = json.loads((tmp / f"u_{route}.json").read_text())
            routes[route]["uplift"] = {"observable_oracle_share": observable_shares(tmp / f"u_{route}.parquet", synth,
                                                                                    policy),
                                       "qini_mean": round(float(np.mean([v["mean"] for v in
                                                                         u["models"]["offerlab"]["qini"].values()])), 4)}
            ccfg = tmp / "credit_lgbm.yaml"
            ccfg.write_text(f"base: {cfg['credit']}\nevaluation: {{peers: [lightgbm]}}\n")
            seconds[route]["credit"] = cli("bench", "credit", "--data", spec, "--config", ccfg, "--out",
                                           tmp / f"c_{route}.json")
            c = json.loads((tmp / f"c_{route}.json").read_text())
            routes[route]["credit"] = {m: {k: round(c["models"][m][k], 4) for k in ("auc", "ece")}
                                       for m in ("offerlab", "lightgbm")}
    report = {"task": "either_door", "customers": args.customers, "seed": args.seed,
              "uplift_split_seeds": args.uplift_seeds,
              "protocol": "built_in = the Python API on the synthetic marketplace; cli = the same marketplace as a "
                          "stranger's files (other column and level names, gross revenue, Y/N and bad/good labels, UTC "
                          "offsets) benched with `offerlab bench <family> --data spec.yaml`; cli_no_amounts = the same "
                          "without the order log's amounts. Same family configs (configs/<family>/synth.yaml).",
              "routes": routes, "seconds": {r: {f: round(s, 1) for f, s in v.items()} for r, v in seconds.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
