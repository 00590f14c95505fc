"""Peers in the same interface as `UpliftModel`: S-, T- and X-learners with gradient boosting (CausalML).

Each fits, per outcome (conversion, and revenue when it differs), CausalML's multi-treatment
meta-learner with LightGBM base learners, plus a LightGBM model of the control outcome, so that
`predict_levels` returns expected outcomes under every level (control + each level's uplift) exactly
like ours, and the bench scores everyone with the same metrics and the same policy code.
On a targeted log (no known design) the X-learner, the one that takes propensities, gets each row's estimated
ones (cross-fitted on the training rows, a classifier fitted on them for new rows) instead of the arm shares.
CausalML and LightGBM come with the `bench` extra.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.uplift.data import CampaignData, FeatureEncoder

DEFAULT_GBM = {"n_estimators": 100, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 100,
               "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8}
KINDS = ("s_learner", "t_learner", "x_learner")


class MetaLearner:
    """CausalML S/T/X learner with LightGBM; `fit(data)`, `predict_levels(features)`, `uplift(features)`."""

    def __init__(self, kind: str = "t_learner", gbm: dict | None = None, seed: int = 0, n_jobs: int = 1):
        if kind not in KINDS:
            raise ValueError(f"unknown meta-learner {kind!r}; expected one of {KINDS}")
        self.kind, self.seed, self.n_jobs = kind, seed, n_jobs
        self.gbm = {**DEFAULT_GBM, **(gbm or {})}
        self.name = f"{kind}_gbm"
        self.encoder: FeatureEncoder | None = None
        self.levels: list[str] = []
        self.discounts: dict[str, float] = {}
        self.models: dict[str, tuple] = {}
        self.pair_propensity: dict[str, float] = {}
        self.known_propensity: np.ndarray | None = None
        self.propensity_model = None  # a targeted log's assignment classifier (rows the fit never saw)

    def _lgbm(self, classifier: bool):
        from lightgbm import LGBMClassifier, LGBMRegressor

        cls = LGBMClassifier if classifier else LGBMRegressor
        return cls(**self.gbm, random_state=self.seed, n_jobs=self.n_jobs, verbose=-1)

    def _learner(self, classifier: bool):
        from causalml.inference import meta

        ctl = self.levels[0]
        if self.kind == "s_learner":
            cls = meta.BaseSClassifier if classifier else meta.BaseSRegressor
            return cls(learner=self._lgbm(classifier), control_name=ctl)
        if self.kind == "t_learner":
            cls = meta.BaseTClassifier if classifier else meta.BaseTRegressor
            return cls(learner=self._lgbm(classifier), control_name=ctl)
        cls = meta.BaseXClassifier if classifier else meta.BaseXRegressor
        if classifier:
            return cls(outcome_learner=self._lgbm(True), effect_learner=self._lgbm(False), control_name=ctl)
        return cls(learner=self._lgbm(False), control_name=ctl)

    def _p(self, n: int, e: np.ndarray | None = None) -> dict[str, np.ndarray] | None:
        """The X-learner's per-level propensity vs control: from per-row probabilities `e` (n, L) where given."""
        if self.kind != "x_learner":
            return None
        if e is not None:
            return {lv: e[:, i] / (e[:, i] + e[:, 0]) for i, lv in enumerate(self.levels) if i > 0}
        return {lv: np.full(n, self.pair_propensity[lv]) for lv in self.levels[1:]}

    def fit(self, data: CampaignData, propensity: np.ndarray | None = None) -> MetaLearner:
        """`propensity`: per-row training propensities (n, L) of a targeted log, if already estimated."""
        from offerlab.uplift.propensity import PropensityModel, cross_fitted_propensity

        self.levels, self.discounts = list(data.levels), dict(data.discounts)
        self.encoder = FeatureEncoder.fit(data.features)
        x = self.encoder.transform(data.features)
        t = data.treatment_names.astype(str)
        e = data.propensity[0] if data.propensity is not None else np.bincount(data.treatment, minlength=len(
            self.levels)) / len(data)
        self.known_propensity = np.asarray(e, dtype=float)
        self.pair_propensity = {lv: float(e[i] / (e[i] + e[0])) for i, lv in enumerate(self.levels) if i > 0}
        e_rows, self.propensity_model = None, None
        if data.assignment == "targeted" and data.propensity is None:
            e_rows = propensity if propensity is not None else cross_fitted_propensity(
                data.features, data.treatment, len(self.levels), seed=self.seed)
            self.propensity_model = PropensityModel.fit(data.features, data.treatment, len(self.levels), self.seed,
                                                        encoder=self.encoder)
        ctl = data.treatment == 0
        outcomes = {"conversion": (data.conversion, True)}
        if not np.array_equal(data.revenue, data.conversion):
            outcomes["revenue"] = (data.revenue, False)
        self.models = {}
        for name, (y, classifier) in outcomes.items():
            learner = self._learner(classifier)
            learner.fit(X=x, treatment=t, y=y, p=self._p(len(x), e_rows))
            base = self._lgbm(classifier).fit(x[ctl], y[ctl])
            self.models[name] = (learner, base, classifier)
        return self

    def _levels_for(self, name: str, x: np.ndarray) -> np.ndarray:
        learner, base, classifier = self.models[name]
        mu0 = base.predict_proba(x)[:, 1] if classifier else base.predict(x)
        if self.kind == "x_learner":
            e = self.propensity_model.predict(x) if self.propensity_model is not None else None
            tau = np.asarray(learner.predict(x, p=self._p(len(x), e)))
        else:
            tau = np.asarray(learner.predict(x))
        tau = pd.DataFrame(tau.reshape(len(x), -1), columns=list(learner.t_groups))[self.levels[1:]].to_numpy()
        return np.concatenate([mu0[:, None], mu0[:, None] + tau], axis=1)

    def predict_levels(self, features: pd.DataFrame | np.ndarray) -> dict[str, np.ndarray]:
        x = features if isinstance(features, np.ndarray) else self.encoder.transform(features)
        conv = self._levels_for("conversion", x)
        return {"conversion": conv, "revenue": self._levels_for("revenue", x) if "revenue" in self.models else conv}

    def predict_propensity(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        if self.propensity_model is not None:
            return self.propensity_model.predict(features)
        return np.tile(self.known_propensity, (len(features), 1))

    def uplift(self, features: pd.DataFrame | np.ndarray, outcome: str = "conversion") -> pd.DataFrame:
        pred = self.predict_levels(features)[outcome]
        return pd.DataFrame(pred[:, 1:] - pred[:, :1], columns=self.levels[1:])


class FeatureOracle:
    """A reference, not a peer: LightGBM fitted to the generator's noise-free expected outcomes per level
    (conversion probability, expected revenue) on the training rows, from the same features as every model.

    It approximates E[truth | observable features], the most any learner could get from these features with
    unlimited outcome data; the gap between it and the oracle (which knows the latent traits) is information
    that no table carries, not estimation error. Only for synthetic data with ground truth.
    """

    name = "feature_oracle"

    def __init__(self, seed: int = 0, n_jobs: int = 1):
        self.seed, self.n_jobs = seed, n_jobs
        self.gbm = {**DEFAULT_GBM, "n_estimators": 300, "num_leaves": 31, "min_child_samples": 50}
        self.encoder: FeatureEncoder | None = None
        self.levels: list[str] = []
        self.models: dict[str, list] = {}
        self.known_propensity: np.ndarray | None = None

    def fit(self, data: CampaignData, truth: pd.DataFrame) -> FeatureOracle:
        from lightgbm import LGBMRegressor

        self.levels = list(data.levels)
        self.encoder = FeatureEncoder.fit(data.features)
        x = self.encoder.transform(data.features)
        self.known_propensity = np.bincount(data.treatment, minlength=len(self.levels)) / len(data)
        self.models = {
            q: [LGBMRegressor(**self.gbm, random_state=self.seed, n_jobs=self.n_jobs, verbose=-1)
                .fit(x, truth[f"{q}_{lv}"].to_numpy()) for lv in self.levels]
            for q in ("p_conv", "exp_revenue")
        }
        return self

    def predict_levels(self, features: pd.DataFrame | np.ndarray) -> dict[str, np.ndarray]:
        x = features if isinstance(features, np.ndarray) else self.encoder.transform(features)
        conv, rev = (np.stack([m.predict(x) for m in self.models[q]], axis=1) for q in ("p_conv", "exp_revenue"))
        return {"conversion": np.clip(conv, 0.0, 1.0), "revenue": np.clip(rev, 0.0, None)}

    def predict_propensity(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        return np.tile(self.known_propensity, (len(features), 1))
