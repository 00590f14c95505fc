"""The uplift family's job config: data, network, trainer and policy blocks, validated before any work.

A YAML may name a `base:` YAML (relative to itself) whose keys it overrides, so one experiment is one
small overlay file (configs/uplift/hillstrom.yaml overrides configs/uplift/default.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offerlab.config import deep_merge, read_yaml
from offerlab.uplift.model import NetConfig, TrainerConfig
from offerlab.uplift.policy import PolicyConfig


class DataConfig(BaseModel):
    """Where the campaign comes from and how it is split."""

    model_config = ConfigDict(extra="forbid")
    dataset: Literal["hillstrom", "synth", "mapped", "spec"] = "hillstrom"
    outcome: Literal["visit", "conversion", "spend"] = Field(
        "visit", description="Hillstrom outcome; for other campaigns conversion/spend pick the metric outcome")
    data_path: str | None = None
    mapping: str | None = None
    spec: str | None = Field(None, description="a data spec YAML (dataset 'spec'): files, semantics, economics")
    spec_set: dict = Field(default_factory=dict, description="dotted-key overrides of the data spec (--data-set)")
    synth_dir: str | None = None
    campaign_logs: list[str] = Field(
        default_factory=list, description="past campaign logs (`offerlab campaign evaluate --log-out`) learnt from "
        "beside the configured campaign, each weighted by the probabilities it was assigned by (--campaign-log)")
    customers: int = Field(20_000, ge=100)
    synth_seed: int = 0
    test_size: float = Field(0.3, gt=0, lt=1)
    split_seed: int = 0
    validation_size: float | None = Field(
        None, gt=0, lt=1, description="share of the training rows held out for `val_qini` (what tuning selects on;"
        " the test split stays untouched for evaluation and promotion)")

    @property
    def metric_outcome(self) -> str:
        """Which outcome the uplift metrics rank on: the binary one, or revenue for `spend`."""
        return "revenue" if self.outcome == "spend" else "conversion"


class UpliftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "uplift"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    policy: PolicyConfig = Field(description="the campaign economics (margin, contact cost; no defaults: money)")
    budget_shares: list[float] = Field(default_factory=lambda: [0.1, 0.3, 1.0],
                                       description="budgets as shares of the unconstrained spend (profit curve)")
    register_model: bool = False


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> UpliftConfig:
    """Validate a config (a YAML path, or defaults) with overrides; errors name the bad key."""
    raw = read_yaml(path) if path else {}
    raw = deep_merge(raw, overrides or {})
    try:
        return UpliftConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"invalid uplift config {path or '(defaults)'}: key '{key}': {first['msg']}") from None
