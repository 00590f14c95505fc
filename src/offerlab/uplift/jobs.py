"""Main-job step for the uplift family: train on the synthetic campaign, log to MLflow, score everyone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

FAST_NET = {"hidden": [64, 32], "ensemble": 2, "batch_size": 4096, "lr": 0.01, "patience": 3}
FAST_TRAINER = {"max_epochs": 25, "enable_progress_bar": False}


def main_job_step(synth_dir: Path, workdir: Path) -> dict:
    """Fit the uplift model on the synthetic campaign (70/30 split), log the run, and write
    `recommendations.parquet` with the chosen level per campaign customer (a 30%-of-spend budget column too)."""
    from offerlab.uplift.config import load_config
    from offerlab.uplift.train import train_from_config

    t0 = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    meta = json.loads((Path(synth_dir) / "meta.json").read_text())
    policy = {"margin": meta["margin"], "contact_cost": meta["contact_cost"]}  # the generator's own economics
    if "return_handling_cost" in meta:  # a campaign with returns (generator version 4): counted, as it charges them
        policy["returns"] = {"counted": True, "handling_cost": meta["return_handling_cost"]}
    cfg = load_config(None, {"name": "uplift-main-job", "data": {"dataset": "synth", "synth_dir": str(synth_dir),
                                                                   "outcome": "conversion"},
                             "net": FAST_NET, "trainer": FAST_TRAINER, "policy": policy})
    summary = train_from_config(cfg, out_dir=workdir / "model")
    out = _score_all(cfg, workdir / "model" / "uplift_model.pt", workdir / "recommendations.parquet")
    m = summary["metrics"]
    return {
        "run_id": summary["run_id"],
        "eval_qini": m.get("eval_qini"),
        "policy_value": m.get("eval_policy_value"),
        "oracle_share": {k.removeprefix("oracle_share_budget_"): v for k, v in m.items()
                         if k.startswith("oracle_share_budget_")},
        "output": str(out["path"]),
        "customers_scored": out["rows"],
        "share_treated": out["share_treated"],
        "seconds_total": round(time.perf_counter() - t0, 1),
    }


def _score_all(cfg, model_path: Path, out_path: Path) -> dict:
    from offerlab.uplift.bench import load_campaign
    from offerlab.uplift.model import UpliftModel
    from offerlab.uplift.policy import choose_levels
    from offerlab.uplift.returns import check_returns_declared

    data, _, _ = load_campaign(cfg)
    check_returns_declared(data, cfg.policy)
    model = UpliftModel.load(model_path)
    rec = model.recommend(data.features, cfg.policy, customer_id=data.customer_id)
    pred = model.predict_levels(data.features)
    profit, spend = cfg.policy.level_matrices(pred, model.levels, model.discounts)
    budget = 0.3 * spend[np.arange(len(spend)), rec["level"].map({lv: i for i, lv in enumerate(model.levels)})].sum()
    choice, _ = choose_levels(profit, spend, budget)
    rec["level_budget_30pct"] = pd.Series(np.asarray(model.levels, dtype=object)[choice])
    tmp = out_path.with_suffix(".tmp.parquet")
    rec.to_parquet(tmp, index=False)
    tmp.replace(out_path)
    return {"path": out_path, "rows": len(rec), "share_treated": float(rec["treat"].mean())}
