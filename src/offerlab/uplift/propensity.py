"""Who could have received which level: assignment probabilities of a campaign log, estimated from its features.

A randomised log assigns levels independently of the customer, so no classifier predicts the arm from the
features better than chance; a targeted log (the CRM sent deeper discounts to chosen customers) is predictable.
`assignment_check` measures exactly that: the cross-validated AUC (one level against the rest, averaged over
levels) of a gradient-boosted classifier predicting the arm, beside the AUC's standard error under chance.
`cross_fitted_propensity` returns each row's probabilities from a classifier that never saw the row (k folds),
the propensities an inverse-propensity or doubly robust estimate needs; `overlap_mask` marks the customers
whose every level is reachable (common support), the only ones a targeted log can say anything about.
`PropensityModel` is the same classifier fitted on every given row, for rows it never saw (a test split, new
customers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerlab.uplift.data import FeatureEncoder

CHANCE_SE_MULTIPLE = 3.0  # an AUC this many chance standard errors above 0.5 (and at least MIN_LIFT) = targeted
MIN_LIFT = 0.02
MIN_PROPENSITY = 0.02  # below this for any level a customer is outside the common support


def _classifier(seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=40,
                                          l2_regularization=1.0, early_stopping=True, validation_fraction=0.15,
                                          n_iter_no_change=10, random_state=seed)


def cross_fitted_propensity(features: pd.DataFrame, treatment: np.ndarray, n_levels: int, folds: int = 5,
                            seed: int = 0) -> np.ndarray:
    """(n, n_levels) assignment probabilities, row i predicted by a model fitted on the other folds.

    Probabilities are floored at 1e-4 and renormalised (a zero would make an inverse weight infinite; the
    overlap check, not the floor, decides who is usable)."""
    from sklearn.model_selection import StratifiedKFold

    treatment = np.asarray(treatment, dtype=np.int64)
    if len(treatment) != len(features):
        raise ValueError("features and treatment differ in length")
    counts = np.bincount(treatment, minlength=n_levels)
    if (counts < folds).any():
        raise ValueError(f"every level needs at least {folds} customers to estimate propensities; counts {counts.tolist()}")
    from threadpoolctl import threadpool_limits

    x = FeatureEncoder.fit(features).transform(features)
    out = np.zeros((len(treatment), n_levels))
    # one thread below ~50k rows: the boosting's OpenMP start-up costs more than it saves (5-10x on 2 busy cores)
    with threadpool_limits(1 if len(x) < 50_000 else None):
        for k, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, treatment)):
            clf = _classifier(seed + k).fit(x[tr], treatment[tr])
            out[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
    out = np.maximum(out, 1e-4)
    return out / out.sum(axis=1, keepdims=True)


class PropensityModel:
    """The assignment classifier fitted on a log's rows, for other rows (a test split, new customers)."""

    def __init__(self, encoder: FeatureEncoder, classifier, n_levels: int):
        self.encoder, self.classifier, self.n_levels = encoder, classifier, n_levels

    @classmethod
    def fit(cls, features: pd.DataFrame, treatment: np.ndarray, n_levels: int, seed: int = 0,
            encoder: FeatureEncoder | None = None) -> PropensityModel:
        """`encoder`: the caller's (fitted on the same rows), so that matrices it encodes can be passed to predict."""
        encoder = encoder or FeatureEncoder.fit(features)
        clf = _classifier(seed).fit(encoder.transform(features), np.asarray(treatment, dtype=np.int64))
        return cls(encoder, clf, n_levels)

    def predict(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """(n, n_levels) probabilities, floored at 1e-4 and renormalised as in `cross_fitted_propensity`.
        `features`: a raw frame, or a matrix already encoded by `self.encoder`."""
        x = features if isinstance(features, np.ndarray) else self.encoder.transform(features)
        out = np.zeros((len(x), self.n_levels))
        out[:, self.classifier.classes_] = self.classifier.predict_proba(x)
        out = np.maximum(out, 1e-4)
        return out / out.sum(axis=1, keepdims=True)


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def chance_auc_se(n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC under no signal (Mann-Whitney under the null): sqrt((n1 + n0 + 1) / (12 n1 n0))."""
    return float(np.sqrt((n_pos + n_neg + 1) / (12.0 * max(n_pos, 1) * max(n_neg, 1))))


def overlap_mask(propensity: np.ndarray, min_propensity: float = MIN_PROPENSITY) -> np.ndarray:
    """True where every level has probability >= `min_propensity` (the customer could have got any level)."""
    return (np.asarray(propensity) >= min_propensity).all(axis=1)


def assignment_check(features: pd.DataFrame, treatment: np.ndarray, levels: list[str], folds: int = 5,
                     seed: int = 0, min_propensity: float = MIN_PROPENSITY) -> dict:
    """Is the log randomised? Cross-validated arm-prediction AUC per level and overall, the verdict, and overlap.

    Returns {"auc": macro AUC, "auc_by_level": {...}, "chance_se": ..., "threshold": ..., "verdict":
    "randomised" | "targeted", "propensity": (n, L) cross-fitted, "overlap_share": share of customers in the
    common support, "propensity_range": {level: [min, median, max]}}."""
    treatment = np.asarray(treatment, dtype=np.int64)
    prop = cross_fitted_propensity(features, treatment, len(levels), folds, seed)
    by_level, ses = {}, []
    for j, lv in enumerate(levels):
        y = (treatment == j).astype(int)
        by_level[lv] = _auc(prop[:, j], y)
        ses.append(chance_auc_se(int(y.sum()), int(len(y) - y.sum())))
    macro = float(np.mean(list(by_level.values())))
    se = float(np.sqrt(np.mean(np.square(ses)) / len(levels)))  # the macro average of (nearly) independent AUCs
    threshold = 0.5 + max(MIN_LIFT, CHANCE_SE_MULTIPLE * se)
    inside = overlap_mask(prop, min_propensity)
    return {
        "auc": macro, "auc_by_level": by_level, "chance_se": se, "threshold": threshold,
        "verdict": "targeted" if macro > threshold else "randomised",
        "propensity": prop, "overlap_share": float(inside.mean()), "min_propensity": min_propensity,
        "propensity_range": {lv: [float(prop[:, j].min()), float(np.median(prop[:, j])), float(prop[:, j].max())]
                             for j, lv in enumerate(levels)},
    }
