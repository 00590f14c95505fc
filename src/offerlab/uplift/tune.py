"""Uplift's tuning objective (`offerlab tune uplift`): one ordinary training run per trial.

The value is the run's `eval_qini` (mean over treatment levels, on the test split), the registry's
primary metric. The Qini needs a fitted ensemble, so pruning watches each epoch's validation conversion
loss: the total validation loss carries `propensity_weight` x the propensity loss, so it would rank trials
by a searched weight rather than by fit.
"""

from __future__ import annotations

from offerlab.config import deep_merge
from offerlab.uplift.config import load_config
from offerlab.uplift.train import train_from_config

METRIC = ("eval_qini", "maximize")
PRUNE_ON = "val_conv_loss"


def base_config(path: str) -> dict:
    return load_config(path).model_dump(mode="json")


def objective(cfg: dict, callbacks: list) -> tuple[float, str]:
    config = load_config(None, deep_merge(cfg, {"trainer": {"enable_progress_bar": False}}))
    out = train_from_config(config, callbacks=callbacks)
    return out["metrics"]["eval_qini"], out["run_id"]
