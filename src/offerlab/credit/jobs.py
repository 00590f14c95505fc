"""The credit step of the main job (`offerlab run`): train on the synthetic applications, log, score all."""

from __future__ import annotations

import logging
from pathlib import Path

from offerlab.credit.config import CreditConfig, load_config

log = logging.getLogger(__name__)
# small and fast: 3 ensemble members, few epochs (about a minute for 20,000 customers on 2 cores)
FAST = {"net": {"members": 3, "patience": 4}, "trainer": {"max_epochs": 25, "enable_progress_bar": False},
        "tracking": {"run_name": "main-job", "reason_examples": 20}}


def _config(synth_dir: Path) -> CreditConfig:
    from offerlab.credit.cli import _default_config

    over = {**FAST, "data": {"dataset": "synth", "synth_dir": str(synth_dir)}}
    path = _default_config("synth")
    if path is None:
        return CreditConfig.model_validate({**over, "terms": None})
    return load_config(path, over)


def main_job_step(synth_dir: Path, workdir: Path) -> dict:
    """Train the PD model on `synth_dir`, log it to MLflow, write every application's offer to parquet."""
    import numpy as np

    from offerlab.credit.bench import load_bench_data
    from offerlab.credit.cli import _quiet_lightning
    from offerlab.credit.metrics import auc
    from offerlab.credit.train import train

    _quiet_lightning()
    cfg = _config(Path(synth_dir))
    data = load_bench_data(cfg)
    summary = train(cfg, data=data, progress=False)
    model = summary.pop("model")
    decisions = model.decide(data.applications, features=data.X)
    decisions.insert(1, "customer_id", data.applications["customer_id"].to_numpy())
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "credit_decisions.parquet"
    tmp = out.with_suffix(".parquet.tmp")
    decisions.to_parquet(tmp, index=False)
    tmp.replace(out)
    summary.update({
        "scored_applications": len(decisions),
        "approval_rate_all": round(float((decisions["decision"] == "approve").mean()), 4),
        "auc_true_pd_all": round(auc(data.y, data.true_pd), 4) if data.true_pd is not None else None,
        "auc_oracle_all": round(auc(data.y, data.oracle_pd), 4) if data.oracle_pd is not None else None,
        "mean_pd_all": round(float(np.mean(decisions["pd"])), 4),
        "output": str(out),
    })  # fmt: skip
    return summary
