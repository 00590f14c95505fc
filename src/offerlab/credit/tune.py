"""Credit's tuning objective (`offerlab tune credit`): one ordinary training run per trial.

The value is the cross-fitted AUC of the ensemble's inner folds on the training rows (`val_auc`), so the
held-out split the run reports (`eval_auc`, the registry's primary metric) plays no part in the search.
Every trial (and so the best YAML) has `net.select_from: []`: the model's own inner selection among fixed
candidates would otherwise replace the very settings the trial is tuning. Applications are loaded once per
data block and reused by every trial.
"""

from __future__ import annotations

import json
from functools import lru_cache

from pydantic import ValidationError

from offerlab.credit.bench import BenchData, load_bench_data
from offerlab.credit.config import CreditConfig, load_config
from offerlab.credit.train import train

METRIC = ("val_auc", "maximize")
PRUNE_ON = "val_loss"


def _without_selection(cfg: dict) -> dict:
    return {**cfg, "net": {**cfg.get("net", {}), "select_from": []}}


def base_config(path: str) -> dict:
    return _without_selection(load_config(path).model_dump(mode="json"))


@lru_cache(maxsize=2)
def _data(data_json: str) -> BenchData:
    return load_bench_data(CreditConfig.model_validate({"data": json.loads(data_json), "terms": None}))


def objective(cfg: dict, callbacks: list) -> tuple[float, str]:
    try:
        config = CreditConfig.model_validate(_without_selection(cfg))
    except ValidationError as e:
        raise ValueError(f"credit trial config is invalid: {e}") from None
    out = train(config, progress=False, callbacks=callbacks, data=_data(json.dumps(cfg["data"], sort_keys=True)))
    return max(s["inner_auc"] for s in out["model"].selection), out["run_id"]
