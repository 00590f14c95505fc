"""Uplift's tuning objective (`offerlab tune uplift`): one ordinary training run per trial.

The value is the run's `val_qini`: the mean Qini over treatment levels on a validation share of the training
rows (`data.validation_size`, 0.2 unless the config sets one), so the test split that `offerlab promote`
compares on (`eval_qini`) never steers the search. The Qini needs a fitted ensemble, so pruning watches each epoch's validation conversion
loss: the total validation loss carries `propensity_weight` x the propensity loss, so it would rank trials
by a searched weight rather than by fit.
"""

from __future__ import annotations

from offerlab.config import deep_merge
from offerlab.uplift.config import load_config
from offerlab.uplift.train import train_from_config

METRIC = ("val_qini", "maximize")
VALIDATION_SIZE = 0.2
PRUNE_ON = "val_conv_loss"


def base_config(path: str) -> dict:
    return load_config(path).model_dump(mode="json")


def objective(cfg: dict, callbacks: list) -> tuple[float, str]:
    overrides = {"trainer": {"enable_progress_bar": False}}
    if not (cfg.get("data") or {}).get("validation_size"):
        overrides["data"] = {"validation_size": VALIDATION_SIZE}
    config = load_config(None, deep_merge(cfg, overrides))
    out = train_from_config(config, callbacks=callbacks)
    return out["metrics"]["val_qini"], out["run_id"]
