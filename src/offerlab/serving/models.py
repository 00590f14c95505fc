"""Model loading and request adapters for serving: registry URI -> loaded predictor -> typed answers.

Each family's pyfunc wrapper (`offerlab.<family>.pyfunc`) holds the real predictor; serving unwraps it
once at start-up and calls the predictor directly on a whole batch of requests (one DataFrame, one
forward pass), skipping the pyfunc's per-call validation and frame plumbing. Requests in one batch
may have different as-of instants; every feature is computed per customer at its own instant.

Which model: `OFFERLAB_<FAMILY>_MODEL` (any MLflow model URI, e.g. `models:/offerlab-timing/3`), else
`models:/offerlab-<family>@<OFFERLAB_MODEL_ALIAS or champion>` from the tracking store
(`MLFLOW_TRACKING_URI`, see `offerlab.tracking`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offerlab.registry import CHAMPION, alias_uri
from offerlab.serving.contracts import (
    CategoryProbability,
    CreditAnswer,
    CreditRequest,
    CustomerHistory,
    DiscountAnswer,
    DiscountRequest,
    LevelValue,
    TimingAnswer,
    TimingRequest,
    field_error,
)
from offerlab.serving.fastpath import HistoryArrays, behaviour_features_fast, credit_logit, uplift_matrix

log = logging.getLogger(__name__)
ALIAS_ENV = "OFFERLAB_MODEL_ALIAS"
WINBACK_ENV = "OFFERLAB_WINBACK_THRESHOLD"  # P(no purchase in 90 d) above which a customer is overdue
SAMPLES_ENV = "OFFERLAB_TIMING_SAMPLES"  # Monte Carlo paths per customer for expected purchases
SOURCE_ENV = "OFFERLAB_MODEL_SOURCE"  # registry (default) | bento (models packaged into a built Bento)
EPOCH = dt.datetime(1970, 1, 1)


def model_env(family: str) -> str:
    return f"OFFERLAB_{family.upper()}_MODEL"


def model_uri(family: str) -> str:
    """The MLflow URI serving loads for `family` (env override, else the registry alias)."""
    explicit = os.environ.get(model_env(family))
    if explicit:
        return explicit
    return alias_uri(family, os.environ.get(ALIAS_ENV, CHAMPION))


def _version_of(uri: str) -> str:
    """Registry version behind a `models:/name@alias` or `models:/name/version` URI ('' otherwise)."""
    m = re.fullmatch(r"models:/([^/@]+)(?:@(.+)|/(\d+))", uri)
    if not m:
        return ""
    if m.group(3):
        return m.group(3)
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(m.group(1), m.group(2)).version)


def _bento_model_path(uri: str) -> tuple[str, str]:
    """(local MLflow model folder, label) of the packaged BentoML model `offerlab-<family>` (see package.py)."""
    import bentoml

    name = re.fullmatch(r"models:/([^/@]+).*", uri)
    m = bentoml.models.get(f"{name.group(1) if name else uri}:latest")
    return m.path_of("mlflow_model"), f"{m.info.labels.get('mlflow_uri', uri)} (bento {m.tag.version})"


def load_python_model(uri: str):
    """(the unwrapped python model of an MLflow pyfunc, its registry version or the URI).

    With `OFFERLAB_MODEL_SOURCE=bento` (a built Bento) the model comes from the BentoML model store.
    """
    import mlflow

    from offerlab import tracking

    if os.environ.get(SOURCE_ENV, "registry") == "bento":
        path, label = _bento_model_path(uri)
        return mlflow.pyfunc.load_model(path).unwrap_python_model(), label
    mlflow.set_tracking_uri(tracking.tracking_uri())
    pm = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    return pm, (_version_of(uri) or uri)


def _transactions(reqs: list[CustomerHistory]) -> tuple[pd.DataFrame, list[str]]:
    """One transactions table for a batch; customer ids are request positions (r000000...), sorted like the batch."""
    h = HistoryArrays.of(reqs)
    return h.frame(), h.ids


def _check_categories(reqs: list[CustomerHistory], known: list[str], title: str) -> None:
    if not known:
        return
    vocab = set(known)
    for i, r in enumerate(reqs):
        for j, p in enumerate(r.history):
            if p.category is not None and p.category not in vocab:
                raise field_error(title, ("history", j, "category"),
                                  f"unknown category {p.category!r} (batch item {i}); known: {sorted(vocab)}",
                                  p.category)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def _date(as_of: dt.datetime, days: float) -> dt.date | None:
    return (as_of + dt.timedelta(days=float(days))).date() if np.isfinite(days) and days < 3.6e6 else None


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class TimingAdapter:
    """The timing predictor behind `TimingRequest` -> `TimingAnswer`."""

    predictor: object  # offerlab.timing.predict.TimingPredictor
    version: str
    n_samples: int = 64
    winback_threshold: float = 0.5
    top_k: int = 3

    @classmethod
    def load(cls, uri: str | None = None) -> TimingAdapter:
        pm, version = load_python_model(uri or model_uri("timing"))
        return cls(pm.predictor, version, int(os.environ.get(SAMPLES_ENV, 64)),
                   float(os.environ.get(WINBACK_ENV, 0.5)))

    def validate(self, reqs: list[CustomerHistory]) -> None:
        _check_categories(reqs, self.predictor.categories, "TimingRequest")

    def expected_counts(self, state, horizon: float) -> np.ndarray:
        """The count head's closed form when the model has one (no simulation), else `n_samples` Monte Carlo paths."""
        p = self.predictor
        if getattr(p, "count_head", None) is not None:
            return p.expected_counts(state, horizon, self.n_samples, seed=0)
        return p.simulate_counts(state, horizon, self.n_samples, seed=0)

    def predict(self, reqs: list[TimingRequest]) -> list[TimingAnswer]:
        import torch

        from offerlab.timing.data import as_of_days, build_examples

        self.validate(reqs)
        t0 = time.perf_counter()
        p = self.predictor
        tx, _ = _transactions(reqs)
        as_of = [r.answer_time() for r in reqs]
        latest = max(as_of)
        with torch.inference_mode():
            seqs = p.sequences(tx, latest)
            ex, _ = build_examples(seqs, latest, p.stats, use_calendar=p.use_calendar, age_inputs=p.age_inputs)
            # the open gap of each customer at its own as-of instant (the batch was built at the latest one)
            last = ex.offsets[1:] - 1
            own = np.array([as_of_days(a) for a in as_of])
            ex.target_gap[last] = np.maximum(own - ex.abs_day[last], 0.0).astype(np.float32)
            state = p.encode_examples(ex, np.asarray(seqs.log_amount, dtype=np.float64))
            within = {k: p.prob_within(state, k) for k in (7.0, 30.0, 90.0)}
            qs = p.quantiles(state, (0.1, 0.5, 0.9), iters=24)  # 2^-24 of the log-time range: far below a day
            counts = self.expected_counts(state, 90.0)
            probs = p.category_probs(state)
        ms = _ms(t0)
        out = []
        for i, r in enumerate(reqs):  # assembling answers for a bounded batch
            top: list[CategoryProbability] = []
            if probs is not None:
                order = np.argsort(-probs[i])[: self.top_k]
                top = [CategoryProbability(category=p.categories[j], probability=float(probs[i, j])) for j in order]
            p_none = float(1.0 - within[90.0][i])
            out.append(TimingAnswer(
                customer_id=r.customer_id, p_buy_7d=float(within[7.0][i]), p_buy_30d=float(within[30.0][i]),
                p_buy_90d=float(within[90.0][i]), expected_purchases_90d=float(counts[i]),
                next_date_median=_date(as_of[i], qs[i, 1]), next_date_q10=_date(as_of[i], qs[i, 0]),
                next_date_q90=_date(as_of[i], qs[i, 2]), p_no_purchase_90d=p_none,
                winback=p_none > self.winback_threshold, top_categories=top, model_version=self.version,
                model_ms=ms))
        return out


# ------------------------------------------------------------------------------------ history features
def _behaviour(reqs: list[CustomerHistory], windows: tuple[float, ...], categories: list[str] | None,
               shape_stats: bool = False) -> dict[str, np.ndarray]:
    """Behaviour features of each request's history at its own as-of instant (one row per request).

    The library's numbers through the serving fast path (`offerlab.serving.fastpath`: no pandas plumbing).
    """
    h = HistoryArrays.of(reqs)
    bf = behaviour_features_fast(h, windows, categories, inclusive=True)
    if shape_stats:
        from offerlab.credit.data import history_shape_statistics

        # the credit model saw purchases strictly before applied_at; an as-of instant includes its own purchases
        apps = pd.DataFrame({"customer_id": h.ids, "applied_at": (h.as_of + 1000).view("datetime64[ns]")})
        shape = history_shape_statistics(apps, h.frame())
        bf.update({c.removeprefix("beh_"): shape[c].to_numpy() for c in shape.columns})
    return bf


def _windows(columns: list[str], prefix: str = "") -> tuple[float, ...]:
    found = sorted({float(m.group(1)) for c in columns if (m := re.fullmatch(rf"{prefix}count_([\d.]+)d", c))})
    return tuple(found) or (30.0, 90.0, 365.0)


def _categories(columns: list[str], prefix: str = "") -> list[str] | None:
    cats = [c.removeprefix(f"{prefix}cat_share_") for c in columns if c.startswith(f"{prefix}cat_share_")]
    return cats or None


# ------------------------------------------------------------------------------------------- discount
@dataclass
class UpliftAdapter:
    """The uplift model and campaign policy behind `DiscountRequest` -> `DiscountAnswer`."""

    model: object  # offerlab.uplift.model.UpliftModel
    policy: object  # offerlab.uplift.policy.PolicyConfig
    version: str

    @classmethod
    def load(cls, uri: str | None = None, policy_path: str | None = None) -> UpliftAdapter:
        pm, version = load_python_model(uri or model_uri("uplift"))
        policy = pm.policy
        path = policy_path or os.environ.get("OFFERLAB_POLICY")
        if path:
            from offerlab.config import read_yaml
            from offerlab.uplift.policy import PolicyConfig

            policy = PolicyConfig(**read_yaml(path).get("policy", {}))
        return cls(pm.model, policy, version)

    def columns(self, reqs: list[DiscountRequest]) -> dict[str, np.ndarray]:
        """The model's raw feature columns (history features + attributes) as numpy arrays, checked."""
        enc = self.model.encoder
        cols = enc.raw_columns
        h = HistoryArrays.of(reqs)
        X = behaviour_features_fast(h, _windows(cols), _categories(cols))
        for name in cols:
            if name in X:
                continue
            values = [r.attributes.get(name) for r in reqs]
            if name in enc.categorical:
                known = set(enc.categorical[name])
                for i, v in enumerate(values):
                    if v is None:
                        raise field_error("DiscountRequest", ("attributes", name),
                                          f"attribute required by the uplift model (batch item {i})")
                    if str(v) not in known:
                        raise field_error("DiscountRequest", ("attributes", name),
                                          f"unknown value {v!r}; known: {sorted(known)}", v)
                X[name] = np.array([str(v) for v in values], dtype=object)
            else:
                X[name] = np.array([_number(v, r, name) for v, r in zip(values, reqs, strict=True)], dtype=np.float64)
        return {c: X[c] for c in cols}

    def features(self, reqs: list[DiscountRequest]) -> pd.DataFrame:
        """The uplift model's raw feature frame of a batch (what `UpliftModel.predict_levels` takes)."""
        return pd.DataFrame(self.columns(reqs))

    def predict(self, reqs: list[DiscountRequest]) -> list[DiscountAnswer]:
        from offerlab.uplift.policy import level_economics

        t0 = time.perf_counter()
        pred = self.model.predict_levels(uplift_matrix(self.model.encoder, self.columns(reqs)))
        levels = list(self.model.levels)
        d = self.policy.discount_rates(levels, self.model.discounts)
        profit, spend = level_economics(pred["revenue"], d, self.policy.margin, self.policy.contact_cost)
        choice = np.argmax(profit, axis=1)  # one customer at a time: no campaign budget applies
        ms = _ms(t0)
        return [DiscountAnswer(
            customer_id=r.customer_id, level=levels[choice[i]] if choice[i] > 0 else None,
            expected_incremental_profit=float(profit[i, choice[i]]),
            levels=[LevelValue(level=lv, expected_incremental_profit=float(profit[i, j]),
                               expected_spend=float(spend[i, j]), p_conversion=float(pred["conversion"][i, j]))
                    for j, lv in enumerate(levels)],
            model_version=self.version, model_ms=ms) for i, r in enumerate(reqs)]


def _number(v: object, req: DiscountRequest, name: str) -> float:
    """A numeric attribute; `<x>_days` may be given as a date `<x>` (days before as_of); missing = NaN."""
    if v is None and name.endswith("_days") and name.removesuffix("_days") in req.attributes:
        raw = req.attributes[name.removesuffix("_days")]
        try:
            when = pd.Timestamp(raw)
        except (ValueError, TypeError):
            raise field_error("DiscountRequest", ("attributes", name.removesuffix("_days")),
                              "must be a date", raw) from None
        return (pd.Timestamp(req.answer_time()) - when.tz_localize(None)) / pd.Timedelta(days=1)
    if v is None:
        return float("nan")
    if isinstance(v, str):
        raise field_error("DiscountRequest", ("attributes", name), "must be a number", v)
    return float(v)


# --------------------------------------------------------------------------------------------- credit
@dataclass
class CreditAdapter:
    """The credit model (PD, score, grade, reasons, terms) behind `CreditRequest` -> `CreditAnswer`."""

    model: object  # offerlab.credit.model.CreditModel
    version: str

    @classmethod
    def load(cls, uri: str | None = None) -> CreditAdapter:
        pm, version = load_python_model(uri or model_uri("credit"))
        return cls(pm.model, version)

    def applications(self, reqs: list[CreditRequest]) -> pd.DataFrame:
        enc = self.model.encoder
        rows = [r.application.fields() for r in reqs]
        apps = pd.DataFrame(rows, index=pd.RangeIndex(len(reqs)))
        for c in self.model.feature_columns:
            if c.startswith("beh_"):
                continue
            if c not in apps.columns or apps[c].isna().any():
                i = int(np.flatnonzero(apps[c].isna())[0]) if c in apps.columns else 0
                raise field_error("CreditRequest", ("application", c),
                                  f"field required by the credit model (batch item {i})")
            if c in enc.categorical:
                known = set(enc.vocab[c])
                bad = ~apps[c].astype(str).isin(known)
                if bad.any():
                    v = apps[c][bad].iloc[0]
                    raise field_error("CreditRequest", ("application", c),
                                      f"unknown value {v!r}; known: {sorted(known)}", v)
            elif apps[c].dtype == object:
                raise field_error("CreditRequest", ("application", c), "must be a number", apps[c].iloc[0])
        return apps

    def columns(self, reqs: list[CreditRequest], apps: pd.DataFrame) -> dict[str, np.ndarray]:
        """The model's feature columns (application fields, then `beh_*` history features) as numpy arrays."""
        cols = self.model.feature_columns
        beh = [c for c in cols if c.startswith("beh_")]
        X = {c: apps[c].to_numpy(dtype=np.float64 if pd.api.types.is_numeric_dtype(apps[c]) else object)
             for c in cols if c in apps.columns}
        if beh:
            b = _behaviour(reqs, _windows(beh, "beh_"), _categories(beh, "beh_"), shape_stats=True)
            X.update({"beh_" + c: np.asarray(v, dtype=np.float64) for c, v in b.items()})
        n = len(reqs)
        return {c: X[c] if c in X else np.full(n, np.nan) for c in cols}

    def features(self, reqs: list[CreditRequest], apps: pd.DataFrame) -> pd.DataFrame:
        """The credit model's feature frame of a batch (what `CreditModel.predict_pd` takes)."""
        return pd.DataFrame(self.columns(reqs, apps))

    def decide(self, apps: pd.DataFrame, X: dict[str, np.ndarray]) -> pd.DataFrame:
        """`offerlab.credit.decision.decide` on feature columns, with the occlusion reasons in one model call
        instead of one per feature group: the applicants and every occluded copy of them are scored as one
        stacked batch (numpy columns, no frame: see `offerlab.serving.fastpath.credit_logit`)."""
        from offerlab.credit.decision import DecisionConfig
        from offerlab.credit.explain import group_statements, reason_groups, top_reasons
        from offerlab.credit.scorecard import pd_to_grade, pd_to_score
        from offerlab.credit.terms import credit_terms

        model = self.model
        config = model.decision or DecisionConfig()
        r = config.reasons
        groups = reason_groups(list(model.encoder.categorical + model.encoder.numeric), r.groups)
        n, names = len(apps), list(groups)
        block = {c: g + 1 for g, cols in enumerate(groups.values()) for c in cols}  # column -> occluded block
        stacked = {}
        for c, values in X.items():  # a loop over feature columns, each one vectorised over all copies
            col = np.tile(values, len(names) + 1)
            if c in block:
                col[block[c] * n:(block[c] + 1) * n] = model.encoder.reference[c]
            stacked[c] = col
        logit = credit_logit(model, stacked).reshape(len(names) + 1, n)  # = model.predict_logit, no frame
        pd_ = 1.0 / (1.0 + np.exp(-logit[0]))  # every calibrator's PD is the sigmoid of its calibrated logit
        attr = pd.DataFrame((logit[0][None, :] - logit[1:]).T, columns=names)
        out = pd.DataFrame({"pd": pd_, "score": np.round(pd_to_score(pd_, config.score), 1),
                            "grade": pd_to_grade(pd_, config.grades)})
        # statements only for the groups that can make anyone's top reasons (the rest are never shown)
        k = min(r.max_reasons, len(names))
        top = np.unique(np.argsort(-attr.to_numpy(), axis=1, kind="stable")[:, :k])
        shown = {names[g]: groups[names[g]] for g in top}
        first = pd.DataFrame({cols[0]: X[cols[0]] for cols in shown.values()})  # what a statement describes
        statements = group_statements(first, shown, model.encoder.reference, r.labels)
        reasons = top_reasons(attr[list(shown)], statements, r.max_reasons, r.min_effect)
        return pd.concat([out, reasons, credit_terms(pd_, config.terms, apps)], axis=1)

    def predict(self, reqs: list[CreditRequest]) -> list[CreditAnswer]:
        apps = self.applications(reqs)
        t0 = time.perf_counter()
        out = self.decide(apps, self.columns(reqs, apps))
        ms = _ms(t0)
        reason_cols = [c for c in out.columns if re.fullmatch(r"reason_\d", c)]
        answers = []
        for i, r in enumerate(reqs):
            row = out.iloc[i]
            rate = float(row["annual_rate"])
            answers.append(CreditAnswer(
                customer_id=r.customer_id, pd=float(row["pd"]), score=float(row["score"]), grade=str(row["grade"]),
                decision=str(row["decision"]), decline_reason=str(row["decline_reason"]),
                reasons=[str(row[c]) for c in reason_cols if row[c]][:4], limit=float(row["limit"]),
                annual_rate=rate if np.isfinite(rate) else None,
                term_options=[int(t) for t in str(row["term_options"]).split(",") if t],
                insurance_offered=bool(row["insurance_offered"]),
                insurance_monthly_premium=float(row["insurance_monthly_premium"]),
                covers_request=bool(row["covers_request"]) if "covers_request" in out.columns else None,
                model_version=self.version, model_ms=ms))
        return answers
