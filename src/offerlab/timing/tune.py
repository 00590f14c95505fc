"""Timing's tuning objective (`offerlab tune timing`): one ordinary training run per trial.

The value is the validation NLL per purchase on the last `training.validation_days` of the calibration
period (mean of the ensemble members' best epochs): the holdout stays unseen by the search, and each
trial run still logs the holdout `eval_nll` the registry promotes on.
"""

from __future__ import annotations

import numpy as np

from offerlab.timing.train import load_config, train_and_log

METRIC = ("val_loss", "minimize")
PRUNE_ON = "val_loss"


def base_config(path: str) -> dict:
    return load_config(path).model_dump(mode="json")


def objective(cfg: dict, callbacks: list) -> tuple[float, str]:
    config = load_config(None, cfg)
    if config.training.validation_days <= 0:
        raise ValueError("tuning timing needs training.validation_days > 0: the search scores that window")
    summary, model, _ = train_and_log(config, progress=False, callbacks=callbacks)
    return float(np.mean(model.fit_info["val_loss"])), summary["run_id"]
