"""Points scale and risk grades from the PD.

PDO scaling: score = offset + factor * ln(good:bad odds), with factor = pdo / ln 2 and offset chosen
so that `base_odds` (e.g. 50:1) scores `base_score` (e.g. 600); every `pdo` points double the odds.
Grades are PD bands from the config (upper PD bound per grade, best first).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class ScoreScale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_score: float = 600.0
    base_odds: float = Field(50.0, gt=0, description="good:bad odds that score base_score")
    pdo: float = Field(20.0, gt=0, description="points to double the odds")
    min_score: float = 300.0
    max_score: float = 900.0

    @property
    def factor(self) -> float:
        return self.pdo / np.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * np.log(self.base_odds)


class Grade(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    max_pd: float = Field(gt=0, le=1)


class GradeBands(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bands: list[Grade] = Field(
        default_factory=lambda: [
            Grade(name=n, max_pd=p)
            for n, p in [("A", 0.02), ("B", 0.05), ("C", 0.10), ("D", 0.20), ("E", 0.35), ("F", 1.0)]
        ]
    )

    @model_validator(mode="after")
    def _ordered(self) -> GradeBands:
        bounds = [b.max_pd for b in self.bands]
        if not bounds or bounds != sorted(bounds) or len(set(bounds)) != len(bounds) or bounds[-1] < 1.0:
            raise ValueError("grade bands must have strictly increasing max_pd and the last must be 1.0")
        return self


def pd_to_score(pd_: np.ndarray, scale: ScoreScale | None = None) -> np.ndarray:
    """Points on the PDO scale (higher = safer), clipped to [min_score, max_score]."""
    s = scale or ScoreScale()
    p = np.clip(np.asarray(pd_, dtype=float), 1e-9, 1 - 1e-9)
    score = s.offset + s.factor * np.log((1 - p) / p)
    return np.clip(score, s.min_score, s.max_score)


def score_to_pd(score: np.ndarray, scale: ScoreScale | None = None) -> np.ndarray:
    s = scale or ScoreScale()
    odds = np.exp((np.asarray(score, dtype=float) - s.offset) / s.factor)
    return 1.0 / (1.0 + odds)


def pd_to_grade(pd_: np.ndarray, bands: GradeBands | None = None) -> np.ndarray:
    """Grade name per PD: the first band whose max_pd is at or above the PD."""
    b = bands or GradeBands()
    bounds = np.array([g.max_pd for g in b.bands])
    names = np.array([g.name for g in b.bands], dtype=object)
    idx = np.searchsorted(bounds, np.asarray(pd_, dtype=float), side="left")
    return names[np.minimum(idx, len(names) - 1)]
