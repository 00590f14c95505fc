"""From applications to offers: PD -> score, grade, reasons and terms, under one validated config.

`DecisionConfig` is the content of `configs/credit/terms.yaml` (score scale, grade bands, terms
policy, reason-code settings); `decide` is what the checkout calls, through `CreditModel.decide`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from offerlab.config import load_yaml_model
from offerlab.credit.explain import MAX_REASONS, explain
from offerlab.credit.scorecard import GradeBands, ScoreScale, pd_to_grade, pd_to_score
from offerlab.credit.terms import TermsPolicy, credit_terms


class ReasonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_reasons: int = Field(MAX_REASONS, ge=1, le=MAX_REASONS)
    min_effect: float = Field(0.02, ge=0, description="smallest log-odds contribution worth a reason")
    groups: dict[str, list[str]] = Field(default_factory=dict, description="features explained together")
    labels: dict[str, str] = Field(default_factory=dict, description="feature or group -> words")


class DecisionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    score: ScoreScale = Field(default_factory=ScoreScale)
    grades: GradeBands = Field(default_factory=GradeBands)
    terms: TermsPolicy = Field(default_factory=TermsPolicy)
    reasons: ReasonConfig = Field(default_factory=ReasonConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DecisionConfig:
        return load_yaml_model(path, cls, "terms config")


def decide(model, applications: pd.DataFrame, X: pd.DataFrame, config: DecisionConfig) -> pd.DataFrame:
    """PD, score, grade, up to four reasons and the credit terms per application (index preserved)."""
    pd_ = model.predict_pd(X)
    out = pd.DataFrame(index=applications.index)
    if "application_id" in applications.columns:
        out["application_id"] = applications["application_id"].to_numpy()
    out["pd"] = pd_
    out["score"] = np.round(pd_to_score(pd_, config.score), 1)
    out["grade"] = pd_to_grade(pd_, config.grades)
    r = config.reasons
    reasons = explain(model, X, groups=r.groups, labels=r.labels, k=r.max_reasons, min_effect=r.min_effect)
    terms = credit_terms(pd_, config.terms, applications, X)
    return pd.concat([out, reasons, terms], axis=1)
