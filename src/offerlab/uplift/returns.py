"""Returns in the discount economics: what a level's purchases send back, and what that costs.

A discount that triggers purchases which are sent back is a loss: the refunded revenue loses its margin (the
goods come back to stock, their cost recovered; the discount on them is refunded with them), and each return may
cost a handling fee. How a campaign counts returns is money, so it is declared (`ReturnsPolicy`), never defaulted:
a campaign that logs `returned_revenue` with no `policy.returns` block is refused (`check_returns_declared`).

`ReturnModel` is the per-level return model: among the customers who bought in the campaign window, the share of
their (net) revenue they returned and whether they returned anything, each a gradient-boosted function of the
customer's features and of the level (its discount rate and identity), fitted on the training rows. Expected
returned revenue under level l is E[revenue_l] x share_l(x); the probability of a return is
P(conversion_l) x P(any return | bought, l, x). The policy then prices each level on the kept revenue
(`policy.level_economics` with `returned`), so return-prone customers get fewer or shallower discounts.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from offerlab.uplift.data import CampaignData, FeatureEncoder


class ReturnsPolicy(BaseModel):
    """How the economics count returns: `counted` (true: profit net of expected returns; false: returns ignored,
    e.g. to compare) and `handling_cost` (cost of one returned order, 0 if none; required when counted)."""

    model_config = ConfigDict(extra="forbid")
    counted: bool = Field(description="true: profit is net of expected returns (the refunded revenue loses its margin"
                          " and its discount); false: returns are ignored")
    handling_cost: float | None = Field(None, ge=0, description="cost of handling one returned order (shipping, "
                                        "inspection, goods that cannot be resold); 0 if none")

    @model_validator(mode="after")
    def _handling_declared(self) -> ReturnsPolicy:
        if self.counted and self.handling_cost is None:
            raise ValueError("policy.returns.handling_cost not set: the cost of handling one returned order "
                             "(0 if none) must be declared when returns are counted")
        return self


def check_returns_declared(data: CampaignData, policy) -> None:
    """Refuse a campaign whose returns the policy does not say how to treat, and a policy counting returns that the
    campaign never logged."""
    returns = getattr(policy, "returns", None)
    if data.returned_revenue is not None and returns is None:
        raise ValueError("the campaign logs returned_revenue but the policy does not say how to treat returns: set "
                         "policy.returns.counted (true: profit net of expected returns; false: ignore them) and "
                         "policy.returns.handling_cost (cost per returned order, 0 if none); economics.returns in a "
                         "data spec")
    if returns is not None and returns.counted and data.returned_revenue is None:
        raise ValueError("policy.returns.counted is true but the campaign has no returned_revenue column: no return "
                         "model can be learnt; map the column or set policy.returns.counted: false")


def _design(x: np.ndarray, level: np.ndarray, rates: np.ndarray, n_levels: int) -> np.ndarray:
    """Features, the level's discount rate and a one-hot of the level (the level as a treatment input)."""
    onehot = np.zeros((len(x), n_levels), dtype=np.float32)
    onehot[np.arange(len(x)), level] = 1.0
    return np.concatenate([x, rates[level][:, None].astype(np.float32), onehot], axis=1)


class ReturnModel:
    """Per-level return share and return probability among buyers (see the module docstring)."""

    def __init__(self, seed: int = 0, max_iter: int = 200, learning_rate: float = 0.05):
        self.seed, self.max_iter, self.learning_rate = seed, max_iter, learning_rate
        self.encoder: FeatureEncoder | None = None
        self.levels: list[str] = []
        self.rates = np.zeros(0)
        self.share_model = None
        self.any_model = None
        self.any_constant: float | None = None
        self.report: dict = {}

    def fit(self, data: CampaignData, encoder: FeatureEncoder | None = None) -> ReturnModel:
        """Fit on the buyers of `data`; `encoder` (the uplift model's, fitted on the same rows) is shared so both
        models read one encoded matrix."""
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        if data.returned_revenue is None:
            raise ValueError("the return model needs the campaign's returned_revenue column")
        buy = np.flatnonzero(data.revenue > 0)
        if len(buy) < 50:
            raise ValueError(f"only {len(buy)} buyers with revenue > 0: too few to learn returns from")
        self.levels = list(data.levels)
        self.rates = np.array([float(data.discounts.get(lv, 0.0)) for lv in self.levels])
        self.encoder = encoder or FeatureEncoder.fit(data.features)
        x = _design(self.encoder.transform(data.features.iloc[buy]), data.treatment[buy], self.rates,
                    len(self.levels))
        share = np.clip(data.returned_revenue[buy] / data.revenue[buy], 0.0, 1.0)
        kw = {"max_iter": self.max_iter, "learning_rate": self.learning_rate, "early_stopping": True,
              "random_state": self.seed}
        self.share_model = HistGradientBoostingRegressor(**kw).fit(x, share)
        any_ret = share > 0
        if any_ret.all() or not any_ret.any():
            self.any_model, self.any_constant = None, float(any_ret.mean())
        else:
            self.any_model = HistGradientBoostingClassifier(**kw).fit(x, any_ret)
        self.report = {"buyers": int(len(buy)), "return_rate": float(any_ret.mean()),
                       "returned_share_of_revenue": float(data.returned_revenue[buy].sum() / data.revenue[buy].sum())}
        return self

    def predict(self, features) -> dict[str, np.ndarray]:
        """Per customer and level (n, L): `share` of a buyer's revenue returned, `p_any` that a buyer returns.
        `features`: a raw feature frame, or the matrix its encoder makes."""
        if self.encoder is None:
            raise RuntimeError("the return model is not fitted")
        x = np.asarray(features, dtype=np.float32) if not hasattr(features, "columns") else \
            self.encoder.transform(features)
        n, n_levels = len(x), len(self.levels)
        share, p_any = np.empty((n, n_levels)), np.empty((n, n_levels))
        for lv in range(n_levels):
            xl = _design(x, np.full(n, lv), self.rates, n_levels)
            share[:, lv] = np.clip(self.share_model.predict(xl), 0.0, 1.0) if n else 0.0
            if self.any_model is None:
                p_any[:, lv] = self.any_constant
            else:
                p_any[:, lv] = self.any_model.predict_proba(xl)[:, 1] if n else 0.0
        return {"share": share, "p_any": p_any}

    def add_to(self, pred: dict[str, np.ndarray], features) -> dict[str, np.ndarray]:
        """`pred` (conversion, revenue per level) with `returned` (expected returned revenue) and `p_return`."""
        r = self.predict(features)
        return {**pred, "returned": pred["revenue"] * r["share"], "p_return": pred["conversion"] * r["p_any"]}
