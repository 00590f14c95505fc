"""Credit job configuration: one validated object built from `configs/credit/<name>.yaml`.

A config may name a `base:` YAML (relative to itself) that it overlays key by key, and a `terms:`
YAML (the decision policy: score scale, grades, terms, reasons) with optional `decision:` overrides.
Everything is validated before any work starts; a bad key is named in the error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offerlab.config import deep_merge, read_yaml
from offerlab.credit.decision import DecisionConfig
from offerlab.credit.model import NetConfig, TrainerConfig


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Literal["german", "synth", "mapped", "spec"] = "german"
    data_path: str | None = Field(None, description="folder of public files, or your file with `mapping`")
    mapping: str | None = Field(None, description="column-mapping YAML for your own applications file")
    spec: str | None = Field(None, description="a data spec YAML (dataset 'spec'): applications and transactions")
    spec_set: dict = Field(default_factory=dict, description="dotted-key overrides of the data spec (--data-set)")
    synth_dir: str | None = Field(None, description="synthetic data folder (else generated from customers/seed)")
    customers: int = Field(20_000, ge=100)
    seed: int = 0
    payments: bool = Field(True, description="return, payment-mix and repayment features (ret_*, rep_*) where the "
                           "data have returns, payment_method or repayments; false: purchase history only")


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folds: int = Field(5, ge=2)
    fold_seed: int = 0
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share for the training run's report")
    peers: list[Literal["lightgbm", "woe_logistic", "optbinning", "logistic"]] = Field(
        default_factory=lambda: ["lightgbm", "woe_logistic", "optbinning", "logistic"]
    )


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_name: str | None = None
    reason_examples: int = Field(20, ge=0, description="rows in the reason-code example table")
    log_model: bool = True


class CreditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: DataConfig = Field(default_factory=DataConfig)
    net: NetConfig = Field(default_factory=NetConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    seed: int = 0
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    terms: str | None = Field("terms.yaml", description="decision policy YAML, relative to this config")
    decision: dict = Field(default_factory=dict, description="overrides of the terms YAML, same keys")
    source: str | None = Field(None, description="the YAML this was read from (set by load_config)")

    def decision_config(self) -> DecisionConfig:
        base: dict = {}
        if self.terms:
            path = Path(self.terms)
            if not path.is_absolute() and self.source:
                path = Path(self.source).parent / path
            if not path.is_file():
                raise ValueError(f"terms config not found: {path}")
            base = yaml.safe_load(path.read_text()) or {}
        try:
            return DecisionConfig.model_validate(deep_merge(base, self.decision))
        except ValidationError as e:
            raise ValueError(f"decision policy is invalid: {e}") from None


def _terms_relative_to_file(path: Path, raw: dict) -> None:
    if isinstance(raw.get("terms"), str) and not Path(raw["terms"]).is_absolute():
        raw["terms"] = str(path.resolve().parent / raw["terms"])  # relative to the file that names it


def load_config(path: str | Path, overrides: dict | None = None) -> CreditConfig:
    """Read, overlay on its base, apply overrides and validate a credit config YAML."""
    path = Path(path)
    raw = deep_merge(read_yaml(path, on_file=_terms_relative_to_file), overrides or {})
    raw["source"] = str(path)
    try:
        cfg = CreditConfig.model_validate(raw)
    except ValidationError as e:
        raise ValueError(f"credit config {path} is invalid: {e}") from None
    cfg.decision_config()  # validate the policy now, not after training
    return cfg
