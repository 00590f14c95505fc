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
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic_core import PydanticCustomError

from offerlab.registry import CHAMPION, alias_uri
from offerlab.serving.contracts import (
    FEATURE_BOUND,
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
    parse_instant,
)
from offerlab.serving.fastpath import behaviour_cached, credit_logit, histories, uplift_matrix

log = logging.getLogger(__name__)
ALIAS_ENV = "OFFERLAB_MODEL_ALIAS"
WINBACK_ENV = "OFFERLAB_WINBACK_THRESHOLD"  # P(no purchase in 90 d) above which a customer is overdue
SAMPLES_ENV = "OFFERLAB_TIMING_SAMPLES"  # Monte Carlo paths per customer for expected purchases
SOURCE_ENV = "OFFERLAB_MODEL_SOURCE"  # registry (default) | bento (models packaged into a built Bento)
PRICE_ENV = "OFFERLAB_PRICE_OF_SPEND"  # discount: price of spend (default: the model's stored price, else 0)
EXPLORE_ENV = "OFFERLAB_EXPLORE"  # discount: share of answers with a uniformly drawn level (default 0 = off)
EXPLORE_SEED_ENV = "OFFERLAB_EXPLORE_SEED"  # discount: seed of the exploration draws (default: fresh entropy)
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


LAST_DATE = dt.datetime(9999, 12, 31)


def _date(as_of: dt.datetime, days: float) -> dt.date | None:
    """as_of + days as a date; None for never (infinite) and for dates past the calendar's end (9999-12-31)."""
    if not np.isfinite(days) or days > (LAST_DATE - as_of).days:
        return None
    return (as_of + dt.timedelta(days=float(days))).date()


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class TimingAdapter:
    """The timing predictor behind `TimingRequest` -> `TimingAnswer`."""

    predictor: object  # offerlab.timing.predict.TimingPredictor
    version: str
    n_samples: int = 64
    winback_threshold: float = 0.5
    top_k: int = 3
    basket: object = None  # offerlab.timing.basket.BasketModel, when the model was trained with items
    returns: str | None = None  # "keep": trained with returned orders as purchases; else a history is read net

    @classmethod
    def load(cls, uri: str | None = None) -> TimingAdapter:
        pm, version = load_python_model(uri or model_uri("timing"))
        return cls(pm.predictor, version, int(os.environ.get(SAMPLES_ENV, 64)),
                   float(os.environ.get(WINBACK_ENV, 0.5)), basket=getattr(pm, "basket", None),
                   returns=getattr(pm, "returns", None))

    def known(self, r: CustomerHistory) -> CustomerHistory:
        """The history as training read it: net of its returns, unless the model kept returned orders."""
        return r if self.returns == "keep" else r.net_of_returns()

    def validate(self, reqs: list[CustomerHistory]) -> None:
        _check_categories(reqs, self.predictor.categories, "TimingRequest")
        empty = [i for i, r in enumerate(reqs) if not r.history]
        if empty:
            raise field_error("TimingRequest", ("history",), "no purchase on or before as_of (a purchase returned "
                              "in full does not count): the timing model answers from a purchase history (batch "
                              f"item {empty[0]})")

    def needs(self) -> dict:
        """What a request must carry for this model: the purchase categories it knows (None: any)."""
        return {"categories": list(self.predictor.categories) or None}

    def predict(self, reqs: list[TimingRequest]) -> list[TimingAnswer]:
        """One batch: histories -> GRU states -> every answer from one set of mixture parameters per member.

        See `offerlab.serving.timing_fast` (the library's answers, with far fewer, larger operations).
        """
        import torch

        from offerlab.serving.timing_fast import MixtureAnswers, timing_state
        from offerlab.timing.counts import TPP_HORIZONS

        reqs = [self.known(r) for r in reqs]  # net: a purchase returned in full is no purchase event
        self.validate(reqs)
        t0 = time.perf_counter()
        p = self.predictor
        as_of = [r.answer_time() for r in reqs]
        state = timing_state(p, histories(reqs))
        mix = MixtureAnswers(p, state)
        mix.precompute((7.0, 30.0, 90.0, *TPP_HORIZONS))  # the answers' horizons and the count head's
        within = {k: mix.prob_within(state, k) for k in (7.0, 30.0, 90.0)}
        qs = mix.quantiles((0.1, 0.5, 0.9))
        counts = mix.expected_counts(90.0, self.n_samples)
        asked = [getattr(r, "curve_days", None) or 0 for r in reqs]  # P(buy within d days), d = 1..curve_days
        days = np.arange(1.0, max(asked) + 1)
        curve = mix.cond_cdf(np.broadcast_to(days, (len(reqs), len(days)))) if len(days) else None
        with torch.inference_mode():
            probs = p.category_probs(state)
        if self.basket is not None:
            from offerlab.serving.basket import basket_answers

            overdue = (1.0 - within[90.0]) > self.winback_threshold
            baskets = basket_answers(self.basket, reqs, np.where(overdue, within[30.0], np.nan))
        else:
            baskets = [None] * len(reqs)
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
                winback=p_none > self.winback_threshold, top_categories=top,
                p_buy_curve=curve[i, : asked[i]].tolist() if asked[i] else None, basket=baskets[i],
                model_version=self.version,
                model_ms=ms))
        return out


# ------------------------------------------------------------------------------------ history features
def _behaviour(reqs: list[CustomerHistory], windows: tuple[float, ...], categories: list[str] | None,
               shape_stats: bool = False) -> dict[str, np.ndarray]:
    """Behaviour features of each request's history at its own as-of instant (one row per request).

    The library's numbers through the serving fast path (`offerlab.serving.fastpath`: no pandas plumbing).
    """
    h = histories(reqs)
    bf = behaviour_cached(h, windows, categories)
    if shape_stats:
        from offerlab.credit.data import shape_arrays

        # the credit model saw purchases strictly before applied_at; an as-of instant includes its own purchases
        shape = shape_arrays(h.codes, h.ts, h.amount, np.arange(len(reqs)), h.as_of + 1000)
        bf.update({c.removeprefix("beh_"): v for c, v in shape.items()})
    return bf


def _windows(columns: list[str], prefix: str = "") -> tuple[float, ...]:
    found = sorted({float(m.group(1)) for c in columns if (m := re.fullmatch(rf"{prefix}count_([\d.]+)d", c))})
    return tuple(found) or (30.0, 90.0, 365.0)


def _categories(columns: list[str], prefix: str = "") -> list[str] | None:
    cats = [c.removeprefix(f"{prefix}cat_share_") for c in columns if c.startswith(f"{prefix}cat_share_")]
    return cats or None


# ------------------------------------------------------------------------------------------- discount
def _env(name: str) -> str | None:
    raw = os.environ.get(name)
    return None if raw is None or not raw.strip() else raw.strip()


def env_price_of_spend() -> float | None:
    """`OFFERLAB_PRICE_OF_SPEND`: a finite number >= 0, or None when unset (refused otherwise, naming it)."""
    raw = _env(PRICE_ENV)
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{PRICE_ENV}={raw!r}: must be a finite number >= 0 (the price of one unit of expected "
                         "spend in profit; unset = the model's stored price, else 0)")
    return v


def env_explore() -> tuple[float, int | None]:
    """(`OFFERLAB_EXPLORE` share in [0, 1), default 0; `OFFERLAB_EXPLORE_SEED` int or None), refused naming the
    variable when not of that form."""
    raw = _env(EXPLORE_ENV)
    eps = 0.0
    if raw is not None:
        try:
            eps = float(raw)
        except ValueError:
            eps = float("nan")
        if not (0.0 <= eps < 1.0):
            raise ValueError(f"{EXPLORE_ENV}={raw!r}: must be a share in [0, 1) (the probability that an answer's "
                             "level is drawn uniformly over all levels, none included; 0 = off)")
    seed_raw = _env(EXPLORE_SEED_ENV)
    seed = None
    if seed_raw is not None:
        try:
            seed = int(seed_raw)
        except ValueError:
            raise ValueError(f"{EXPLORE_SEED_ENV}={seed_raw!r}: must be an integer (the seed of the exploration "
                             "draws; unset = fresh entropy)") from None
        if seed < 0:
            raise ValueError(f"{EXPLORE_SEED_ENV}={seed_raw!r}: must be an integer >= 0")
    return eps, seed


def explore_levels(greedy: np.ndarray, n_levels: int, eps: float, rng: np.random.Generator | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(level given, its assignment probability) per customer: with probability `eps` a level drawn uniformly
    over all `n_levels` (none included), else the greedy one; P(level) = eps / L + (1 - eps) 1[level = greedy]."""
    greedy = np.asarray(greedy)
    given = greedy
    if eps > 0:
        explore = rng.random(len(greedy)) < eps
        drawn = rng.integers(0, n_levels, len(greedy))
        given = np.where(explore, drawn, greedy)
    prob = eps / n_levels + (1.0 - eps) * (given == greedy)
    return given, prob


# a feature further than this many training standard deviations from the training mean is read at this distance:
# the synthetic training sets reach ~8; far beyond it the revenue head's exp overflows (a 1e9-day attribute gave
# inf - inf = NaN profits), and no model answer out there means anything anyway (the credit encoder clips at 5)
UPLIFT_Z_CLIP = 10.0


@dataclass
class UpliftAdapter:
    """The uplift model and campaign policy behind `DiscountRequest` -> `DiscountAnswer`.

    The level is argmax(profit - price x spend) per customer (`policy.choose_at_price`: the budgeted whole-file
    allocation one customer at a time), with the price from `OFFERLAB_PRICE_OF_SPEND`, else the model's stored
    `price_of_spend` (training with a budget stores it), else 0 (plain argmax). With `OFFERLAB_EXPLORE` = eps > 0
    a share eps of answers get a level drawn uniformly over all levels; every answer carries the probability of
    the level it gives (`assignment_probability`) and the greedy level, for off-policy evaluation later."""

    model: object  # offerlab.uplift.model.UpliftModel
    policy: object  # offerlab.uplift.policy.PolicyConfig
    version: str
    price_of_spend: float = 0.0
    explore: float = 0.0
    rng: np.random.Generator | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, uri: str | None = None, policy_path: str | None = None) -> UpliftAdapter:
        from offerlab.uplift.pyfunc import stored_price

        env_price = env_price_of_spend()  # bad settings refused before the model is loaded
        eps, seed = env_explore()
        pm, version = load_python_model(uri or model_uri("uplift"))
        policy = pm.policy
        path = policy_path or os.environ.get("OFFERLAB_POLICY")
        if path:
            from offerlab.config import read_yaml
            from offerlab.uplift.policy import PolicyConfig

            policy = PolicyConfig(**read_yaml(path).get("policy", {}))
        if env_price is not None:
            price, source = env_price, PRICE_ENV
        elif path and getattr(policy, "price_of_spend", None) is not None:
            price, source = stored_price(policy), "OFFERLAB_POLICY"
        else:
            price = stored_price(pm.policy)
            source = "the model" if price > 0 else "none (plain argmax)"
        log.info("discount choice: price of spend from %s%s", source,
                 f", exploration share {eps:g}" if eps > 0 else "")
        return cls(pm.model, policy, version, price, eps, np.random.default_rng(seed) if eps > 0 else None)

    def needs(self) -> dict:
        """The attributes this model reads (the columns its history features do not give): a categorical one is
        required with its training levels; a number is optional (missing = the training mean), and `<x>_days`
        may come as a date `<x>` instead."""
        enc = self.model.encoder
        cols = enc.raw_columns
        probe = CustomerHistory.model_construct(customer_id="probe", history=[], as_of=dt.datetime(2000, 1, 1))
        from_history = set(behaviour_cached(histories([probe]), _windows(cols), _categories(cols)))
        attributes: dict[str, dict] = {}
        for name in cols:
            if name in from_history:
                continue
            if name in enc.categorical:
                attributes[name] = {"kind": "category", "levels": [str(v) for v in enc.categorical[name]]}
            else:
                attributes[name] = {"kind": "number"}
                if name.endswith("_days"):
                    attributes[name.removesuffix("_days")] = {"kind": "date", "for": name}
        return {"attributes": attributes}

    def columns(self, reqs: list[DiscountRequest]) -> dict[str, np.ndarray]:
        """The model's raw feature columns (history features + attributes) as numpy arrays, checked."""
        enc = self.model.encoder
        cols = enc.raw_columns
        X = behaviour_cached(histories(reqs), _windows(cols), _categories(cols))
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

    def choose(self, profit: np.ndarray, spend: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(level given, greedy level, assignment probability) per customer (see the class doc)."""
        from offerlab.uplift.policy import choose_at_price

        greedy = choose_at_price(profit, spend, self.price_of_spend)  # price 0: argmax of profit
        if self.explore <= 0:
            return greedy, greedy, np.ones(len(greedy))
        with self._lock:  # a numpy Generator is not thread-safe; batches may come from several threads
            given, prob = explore_levels(greedy, profit.shape[1], self.explore, self.rng)
        return given, greedy, prob

    def predict(self, reqs: list[DiscountRequest]) -> list[DiscountAnswer]:
        t0 = time.perf_counter()
        x = uplift_matrix(self.model.encoder, self.columns(reqs))
        k = len(self.model.encoder.numeric)  # numbers first, then one-hot levels
        np.clip(x[:, :k], -UPLIFT_Z_CLIP, UPLIFT_Z_CLIP, out=x[:, :k])
        pred = self.model.predict_levels(x)
        levels = list(self.model.levels)
        profit, spend = self.policy.level_matrices(pred, levels, self.model.discounts)
        rates = self.policy.discount_rates(levels, self.model.discounts)
        choice, greedy, prob = self.choose(profit, spend)
        ms = _ms(t0)
        price = float(self.price_of_spend)
        return [DiscountAnswer(
            customer_id=r.customer_id, level=levels[choice[i]] if choice[i] > 0 else None,
            expected_incremental_profit=float(profit[i, choice[i]]),
            levels=[LevelValue(level=lv, discount_rate=float(rates[j]), expected_incremental_profit=float(profit[i, j]),
                               expected_spend=float(spend[i, j]), p_conversion=float(pred["conversion"][i, j]))
                    for j, lv in enumerate(levels)],
            price_of_spend=price, greedy_level=levels[greedy[i]] if greedy[i] > 0 else None,
            assignment_probability=float(prob[i]),
            model_version=self.version, model_ms=ms) for i, r in enumerate(reqs)]


def _number(v: object, req: DiscountRequest, name: str) -> float:
    """A numeric attribute; `<x>_days` may be given as a date `<x>` (days before as_of); missing = NaN."""
    if v is None and name.endswith("_days") and name.removesuffix("_days") in req.attributes:
        raw = req.attributes[name.removesuffix("_days")]
        try:
            when = parse_instant(raw, day_allowed=True)
        except PydanticCustomError as e:
            raise field_error("DiscountRequest", ("attributes", name.removesuffix("_days")), e.message(), raw) from None
        return (req.answer_time() - when) / dt.timedelta(days=1)
    if v is None:
        return float("nan")
    if isinstance(v, str):
        raise field_error("DiscountRequest", ("attributes", name), "must be a number", v)
    if not abs(v) <= FEATURE_BOUND:
        raise field_error("DiscountRequest", ("attributes", name), f"must be within +-{FEATURE_BOUND:g}", v)
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

    def needs(self) -> dict:
        """The application fields this model reads, all required (categorical ones with their training levels and
        the most common as `typical`, numbers with their training median), and those its terms read if given."""
        enc = self.model.encoder
        fields: dict[str, dict] = {}
        for c in self.model.feature_columns:
            if c.startswith(HISTORY_PREFIXES):
                continue
            if c in enc.categorical:
                fields[c] = {"kind": "category", "levels": [str(v) for v in enc.vocab[c]], "required": True,
                             "typical": str(enc.reference[c])}
            else:
                fields[c] = {"kind": "number", "required": True, "typical": float(enc.reference[c])}
        terms = (self.model.decision or _default_decision()).terms
        for c in (terms.income_column, terms.amount_column):
            if c and c not in fields:
                fields[c] = {"kind": "number", "required": False}
        return {"application": fields}

    def applications(self, reqs: list[CreditRequest]) -> dict[str, np.ndarray]:
        """The application fields the model and the terms read, as numpy columns, checked (4xx naming the field)."""
        enc = self.model.encoder
        rows = [r.application.fields() for r in reqs]
        apps: dict[str, np.ndarray] = {}
        for c in self.model.feature_columns:
            if c.startswith(HISTORY_PREFIXES):
                continue
            values = [row.get(c) for row in rows]
            absent = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and np.isnan(v))]
            if absent:
                raise field_error("CreditRequest", ("application", c),
                                  f"field required by the credit model (batch item {absent[0]})")
            if c in enc.categorical:
                known = set(enc.vocab[c])
                bad = [v for v in values if str(v) not in known]
                if bad:
                    raise field_error("CreditRequest", ("application", c),
                                      f"unknown value {bad[0]!r}; known: {sorted(known)}", bad[0])
                apps[c] = np.array(values, dtype=object)
            else:
                bad = [v for v in values if isinstance(v, str | bytes) or not isinstance(v, int | float)]
                if bad:
                    raise field_error("CreditRequest", ("application", c), "must be a number", bad[0])
                big = [v for v in values if not abs(v) <= FEATURE_BOUND]
                if big:
                    raise field_error("CreditRequest", ("application", c), f"must be within +-{FEATURE_BOUND:g}", big[0])
                apps[c] = np.array(values, dtype=np.float64)
        terms = (self.model.decision or _default_decision()).terms
        for c in (terms.income_column, terms.amount_column):  # what the limit rules read, NaN where not given
            if c and c not in apps and any(c in row for row in rows):
                apps[c] = np.array([_float_or_nan(row.get(c)) for row in rows], dtype=np.float64)
        return apps

    def columns(self, reqs: list[CreditRequest], apps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's feature columns (application fields, then `beh_*` history features) as numpy arrays."""
        cols = self.model.feature_columns
        beh = [c for c in cols if c.startswith("beh_")]
        X = {c: apps[c] for c in cols if c in apps}
        if beh:
            b = _behaviour(reqs, _windows(beh, "beh_"), _categories(beh, "beh_"), shape_stats=True)
            X.update({"beh_" + c: np.asarray(v, dtype=np.float64) for c, v in b.items()})
        X.update(returns_repayment_columns(reqs, cols))
        n = len(reqs)
        return {c: X[c] if c in X else np.full(n, np.nan) for c in cols}

    def features(self, reqs: list[CreditRequest], apps: dict[str, np.ndarray]) -> pd.DataFrame:
        """The credit model's feature frame of a batch (what `CreditModel.predict_pd` takes)."""
        return pd.DataFrame(self.columns(reqs, apps))

    def decide(self, apps: dict[str, np.ndarray], X: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`offerlab.credit.decision.decide` on numpy columns (same numbers), as a dict of arrays.

        The occlusion reasons take one model call instead of one per feature group: the applicants and
        every occluded copy of them are scored as one stacked batch (see `offerlab.serving.fastpath.credit_logit`).
        """
        from offerlab.credit.explain import reason_groups, statement_arrays, top_reason_arrays
        from offerlab.credit.scorecard import pd_to_grade, pd_to_score
        from offerlab.credit.terms import terms_arrays

        model = self.model
        config = model.decision or _default_decision()
        r = config.reasons
        groups = reason_groups(list(model.encoder.categorical + model.encoder.numeric), r.groups)
        n, names = len(next(iter(X.values()))), list(groups)
        block = {c: g + 1 for g, cols in enumerate(groups.values()) for c in cols}  # column -> occluded block
        stacked = {}
        for c, values in X.items():  # a loop over feature columns, each one vectorised over all copies
            col = np.tile(values, len(names) + 1)
            if c in block:
                col[block[c] * n:(block[c] + 1) * n] = model.encoder.reference[c]
            stacked[c] = col
        logit = credit_logit(model, stacked).reshape(len(names) + 1, n)  # = model.predict_logit, no frame
        pd_ = 1.0 / (1.0 + np.exp(-logit[0]))  # every calibrator's PD is the sigmoid of its calibrated logit
        attr = (logit[0][None, :] - logit[1:]).T  # (applicants, groups)
        # statements only for the groups that can make anyone's top reasons (the rest are never shown)
        k = min(r.max_reasons, len(names))
        top = np.unique(np.argsort(-attr, axis=1, kind="stable")[:, :k])
        shown = {names[g]: groups[names[g]] for g in top}
        statements = statement_arrays(X, shown, model.encoder.reference, r.labels)
        st = np.stack([statements[names[g]] for g in top], axis=1)
        out = {"pd": pd_, "score": np.round(pd_to_score(pd_, config.score), 1),
               "grade": pd_to_grade(pd_, config.grades)}
        out.update(top_reason_arrays(attr[:, top], st, r.max_reasons, r.min_effect))
        t = config.terms
        out.update(terms_arrays(pd_, t, apps.get(t.income_column or ""), apps.get(t.amount_column or "")))
        return out

    def predict(self, reqs: list[CreditRequest]) -> list[CreditAnswer]:
        apps = self.applications(reqs)
        t0 = time.perf_counter()
        out = self.decide(apps, self.columns(reqs, apps))
        ms = _ms(t0)
        reasons = [out[c] for c in sorted(out) if re.fullmatch(r"reason_\d", c)]
        covers = out.get("covers_request")
        answers = []
        for i, r in enumerate(reqs):  # assembling answers for a bounded batch
            rate = float(out["annual_rate"][i])
            answers.append(CreditAnswer(
                customer_id=r.customer_id, pd=float(out["pd"][i]), score=float(out["score"][i]),
                grade=str(out["grade"][i]), decision=str(out["decision"][i]),
                decline_reason=str(out["decline_reason"][i]),
                reasons=[str(c[i]) for c in reasons if c[i]][:4], limit=float(out["limit"][i]),
                annual_rate=rate if np.isfinite(rate) else None,
                term_options=[int(t) for t in str(out["term_options"][i]).split(",") if t],
                insurance_offered=bool(out["insurance_offered"][i]),
                insurance_monthly_premium=float(out["insurance_monthly_premium"][i]),
                covers_request=bool(covers[i]) if covers is not None else None,
                model_version=self.version, model_ms=ms))
        return answers


HISTORY_PREFIXES = ("beh_", "ret_", "rep_")  # credit features built from the request's history, not its application


def request_tables(reqs: list[CustomerHistory]) -> dict[str, pd.DataFrame]:
    """A batch's histories as the canonical tables (customer ids r000000, ...; an order without an id gets its
    position): transactions (with order_id, payment_method), returns and repayments."""
    ids = [f"r{i:06d}" for i in range(len(reqs))]
    tx = pd.DataFrame([(ids[i], p.timestamp, p.amount, p.order_id or f"#{j}", p.payment_method)
                       for i, r in enumerate(reqs) for j, p in enumerate(r.history)],
                      columns=["customer_id", "timestamp", "amount", "order_id", "payment_method"])
    ret = pd.DataFrame([(ids[i], x.order_id, x.returned_at, x.amount) for i, r in enumerate(reqs) for x in r.returns],
                       columns=["customer_id", "order_id", "returned_at", "amount"])
    rep = pd.DataFrame([(ids[i], x.credit_id, x.issued_at, x.due_date, x.paid_at, x.amount_due, x.amount_paid)
                        for i, r in enumerate(reqs) for x in r.repayments],
                       columns=["customer_id", "credit_id", "issued_at", "due_date", "paid_at", "amount_due",
                                "amount_paid"])
    for frame, cols in ((tx, ["timestamp"]), (ret, ["returned_at"]), (rep, ["issued_at", "due_date", "paid_at"])):
        for c in cols:
            frame[c] = pd.to_datetime(frame[c])
    anchors = pd.DataFrame({"customer_id": ids, "as_of": pd.to_datetime([r.answer_time() for r in reqs])})
    return {"transactions": tx, "returns": ret, "repayments": rep, "anchors": anchors}


def returns_repayment_columns(reqs: list[CustomerHistory], cols: list[str]) -> dict[str, np.ndarray]:
    """The credit model's `ret_*` (return rates, payment-method mix) and `rep_*` (repayment record) columns from
    the requests' histories, returns and repayments, strictly before each as-of instant (as at training, where
    nothing at or after applied_at counts): `offerlab.data.returns`' own builders."""
    ret = [c for c in cols if c.startswith("ret_")]
    rep = [c for c in cols if c.startswith("rep_")]
    if not (ret or rep) or not reqs:
        return {}
    from offerlab.data.returns import repayment_features_at, return_features_at

    t = request_tables(reqs)
    out: dict[str, np.ndarray] = {}
    if ret:
        methods = [c.removeprefix("ret_pay_share_") for c in ret if c.startswith("ret_pay_share_")]
        f = return_features_at(t["transactions"], t["returns"], t["anchors"], methods=methods or None,
                               inclusive=False).add_prefix("ret_")
        out.update({c: f[c].to_numpy(dtype=np.float64) for c in ret if c in f.columns})
    if rep:
        f = repayment_features_at(t["repayments"], t["anchors"], inclusive=False).add_prefix("rep_")
        out.update({c: f[c].to_numpy(dtype=np.float64) for c in rep if c in f.columns})
    return out


def _default_decision():
    from offerlab.credit.decision import DecisionConfig

    return DecisionConfig()


def _float_or_nan(v: object) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")
