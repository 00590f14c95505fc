"""The HTTP contract of the Offerlab services: pydantic requests and answers, with examples for OpenAPI.

What pydantic can check without a model is checked here (missing fields, negative or non-finite
amounts, timestamps out of order or in the future, histories longer than `OFFERLAB_MAX_HISTORY`);
what needs the model (an unknown category, an attribute level the model never saw) is checked by the
adapters in `offerlab.serving.models`, which raise `field_error` so both give the same 400 shape:
``{"error": "1 validation error for ...", "detail": [{"loc": [...], "msg": ...}]}``.
Timestamps may carry a time zone (converted to UTC) or none (read as UTC).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

MAX_HISTORY_ENV = "OFFERLAB_MAX_HISTORY"
DEFAULT_MAX_HISTORY = 500
CLOCK_SKEW = dt.timedelta(minutes=5)  # a client clock slightly ahead is not "the future"

Finite = Annotated[float, Field(allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False, description="amount (0 to 1e9)")]
EARLIEST = dt.datetime(1900, 1, 1)  # older instants are typos (and overflow nanosecond timestamps)


def max_history() -> int:
    """Longest purchase history a request may carry (env `OFFERLAB_MAX_HISTORY`, default 500)."""
    return int(os.environ.get(MAX_HISTORY_ENV, DEFAULT_MAX_HISTORY))


def utc_naive(ts: dt.datetime) -> dt.datetime:
    """Aware timestamps in UTC without tz; naive ones are taken as UTC already."""
    return ts.astimezone(dt.UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def field_error(title: str, loc: tuple, message: str, value: object = None) -> ValidationError:
    """A pydantic ValidationError for `loc` (served as a 400 naming the field, like pydantic's own)."""
    err = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
    return ValidationError.from_exception_data(title, [err])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------- inputs
class Purchase(_Strict):
    """One purchase of the customer."""

    timestamp: dt.datetime = Field(description="when it was bought (ISO 8601; no zone = UTC)")
    amount: Amount
    category: str | None = Field(None, max_length=64, description="product category, one the model knows")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: dt.datetime) -> dt.datetime:
        v = utc_naive(v)
        if v < EARLIEST:
            raise ValueError(f"timestamp before {EARLIEST.date()}")
        return v


EXAMPLE_HISTORY = [
    {"timestamp": "2024-09-02T10:15:00", "amount": 42.5, "category": "grocery"},
    {"timestamp": "2024-10-01T18:40:00", "amount": 18.9, "category": "household"},
    {"timestamp": "2024-11-03T09:05:00", "amount": 57.0, "category": "grocery"},
]
EXAMPLE_ATTRIBUTES = {"region": "north", "age_band": "35-44", "signup_channel": "app"}
EXAMPLE_APPLICATION = {"requested_amount": 600.0, "income": 42000.0, "term_months": 6, "age": 38,
                       "employment_years": 4.5, "housing": "rent", "purpose": "electronics", "existing_credits": 1}


class CustomerHistory(_Strict):
    """A customer's purchase history up to `as_of` (default: now), oldest first."""

    customer_id: str = Field(min_length=1, max_length=128, description="your id; echoed back, never logged")
    history: list[Purchase] = Field(min_length=1, description="purchases, oldest first")
    as_of: dt.datetime | None = Field(None, description="answer as of this instant (default: now, UTC)")

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "example": {"customer_id": "c-123", "history": EXAMPLE_HISTORY, "as_of": "2024-12-01T00:00:00"}})

    @model_validator(mode="after")
    def _history_in_order(self) -> CustomerHistory:
        limit = max_history()
        if len(self.history) > limit:
            raise field_error(type(self).__name__, ("history",),
                              f"history has {len(self.history)} purchases; the maximum is {limit} "
                              f"(send the most recent {limit})", len(self.history))
        now = now_utc()
        if self.as_of is not None:
            self.as_of = utc_naive(self.as_of)
            if self.as_of > now + CLOCK_SKEW or self.as_of < EARLIEST:
                what = "in the future" if self.as_of > now else f"before {EARLIEST.date()}"
                raise field_error(type(self).__name__, ("as_of",), f"as_of is {what}", str(self.as_of))
        end = self.as_of or now + CLOCK_SKEW
        prev = None
        for i, p in enumerate(self.history):  # bounded by max_history: a request, not a data set
            if p.timestamp > end:
                what = "after as_of" if self.as_of is not None else "in the future"
                raise field_error(type(self).__name__, ("history", i, "timestamp"),
                                  f"purchase timestamp is {what}", str(p.timestamp))
            if prev is not None and p.timestamp < prev:
                raise field_error(type(self).__name__, ("history", i, "timestamp"),
                                  "timestamps out of order: purchases must be sorted oldest first",
                                  str(p.timestamp))
            prev = p.timestamp
        return self

    def answer_time(self) -> dt.datetime:
        """The as-of instant: the request's `as_of`, else now."""
        return self.as_of or now_utc()


MAX_CURVE_DAYS = 365
CurveDays = Annotated[int | None, Field(ge=1, le=MAX_CURVE_DAYS, description=(
    "also answer `timing.p_buy_curve`: P(a purchase within d days) for every d = 1..curve_days (omit: no curve)"))]


class TimingRequest(CustomerHistory):
    """When will this customer buy again, and what?"""

    curve_days: CurveDays = None


class DiscountRequest(CustomerHistory):
    """Which discount, if any, pays for this customer?"""

    attributes: dict[str, str | Finite] = Field(
        default_factory=dict, description="static customer attributes the uplift model uses (e.g. region)")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": 
        {"customer_id": "c-123", "history": EXAMPLE_HISTORY, "attributes": EXAMPLE_ATTRIBUTES,
         "as_of": "2024-12-01T00:00:00"}})


class Application(BaseModel):
    """A credit application; fields the model was trained on (others allowed for models trained elsewhere)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": EXAMPLE_APPLICATION})
    requested_amount: Amount | None = Field(None, description="amount asked for / basket value")
    income: Amount | None = Field(None, description="annual income")
    term_months: int | None = Field(None, ge=1, le=120)
    age: int | None = Field(None, ge=18, le=120)
    employment_years: Annotated[float, Field(ge=0, le=80, allow_inf_nan=False)] | None = None
    housing: str | None = Field(None, max_length=64)
    purpose: str | None = Field(None, max_length=64)
    existing_credits: int | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _extra_values(self) -> Application:
        for k, v in (self.model_extra or {}).items():
            ok = isinstance(v, str | int | float | None) and not isinstance(v, bool)
            if not ok or (isinstance(v, float) and v != v or v in (float("inf"), float("-inf"))):
                raise field_error("Application", (k,), "must be a finite number, a string or null", v)
        return self

    def fields(self) -> dict[str, object]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class CreditRequest(CustomerHistory):
    """Will this customer repay, and on what terms? The history feeds purchase-behaviour features."""

    application: Application
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": 
        {"customer_id": "c-123", "history": EXAMPLE_HISTORY, "application": EXAMPLE_APPLICATION,
         "as_of": "2024-12-01T00:00:00"}})


class OffersRequest(DiscountRequest):
    """Everything for one customer: reminder and basket, discount, and (with an application) credit terms."""

    application: Application | None = Field(None, description="credit application; omit for no credit answer")
    curve_days: CurveDays = None
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": 
        {"customer_id": "c-123", "history": EXAMPLE_HISTORY, "attributes": EXAMPLE_ATTRIBUTES,
         "application": EXAMPLE_APPLICATION, "as_of": "2024-12-01T00:00:00"}})

    def part(self, cls: type[CustomerHistory]) -> CustomerHistory:
        """The sub-request for one family (no re-validation: this request was checked already)."""
        return cls.model_construct(**{k: getattr(self, k) for k in cls.model_fields})


# -------------------------------------------------------------------------------------------- answers
class CategoryProbability(BaseModel):
    category: str
    probability: float


class TimingAnswer(BaseModel):
    customer_id: str
    p_buy_7d: float = Field(description="P(a purchase within 7 days of as_of)")
    p_buy_30d: float
    p_buy_90d: float
    expected_purchases_90d: float = Field(description="expected purchases in the next 90 days (the model's count head; Monte Carlo if it has none)")
    next_date_median: dt.date | None = Field(description="median date of the next purchase (null: maybe never)")
    next_date_q10: dt.date | None
    next_date_q90: dt.date | None
    p_no_purchase_90d: float
    winback: bool = Field(description="overdue: P(no purchase in 90 days) above the win-back threshold")
    top_categories: list[CategoryProbability] = Field(description="most likely categories of the next basket")
    p_buy_curve: list[float] | None = Field(None, description="P(a purchase within d days of as_of) for "
                                            "d = 1, 2, ..., curve_days of the request; null when not asked")
    model_version: str
    model_ms: float = Field(description="model compute time of the batch this answer came from (ms)")

    model_config = ConfigDict(json_schema_extra={"example": {
        "customer_id": "c-123", "p_buy_7d": 0.21, "p_buy_30d": 0.62, "p_buy_90d": 0.88,
        "expected_purchases_90d": 2.7, "next_date_median": "2024-12-19", "next_date_q10": "2024-12-04",
        "next_date_q90": "2025-02-10", "p_no_purchase_90d": 0.12, "winback": False,
        "top_categories": [{"category": "grocery", "probability": 0.55}], "model_version": "3", "model_ms": 1.8}})


class LevelValue(BaseModel):
    level: str
    expected_incremental_profit: float
    expected_spend: float
    p_conversion: float


class DiscountAnswer(BaseModel):
    customer_id: str
    level: str | None = Field(description="discount level to offer; null = offer none")
    expected_incremental_profit: float = Field(description="of the chosen level, vs no offer (0 for none)")
    levels: list[LevelValue] = Field(description="every level, control first")
    price_of_spend: float | None = Field(None, description="price of spend used: the level maximises expected "
                                         "incremental profit - price x expected spend (0 = plain argmax)")
    greedy_level: str | None = Field(None, description="the level the policy picks before exploration "
                                     "(null = none; equals `level` unless exploration drew another)")
    assignment_probability: float | None = Field(None, ge=0, le=1, description="probability of giving `level` "
                                                 "to this customer (1 without exploration; log it with the offer)")
    model_version: str
    model_ms: float

    model_config = ConfigDict(json_schema_extra={"example": {
        "customer_id": "c-123", "level": "discount_05", "expected_incremental_profit": 0.84,
        "levels": [{"level": "control", "expected_incremental_profit": 0.0, "expected_spend": 0.0,
                    "p_conversion": 0.12}], "price_of_spend": 0.0, "greedy_level": "discount_05",
        "assignment_probability": 1.0, "model_version": "2", "model_ms": 0.9}})


class CreditAnswer(BaseModel):
    customer_id: str
    pd: float = Field(description="calibrated probability of default")
    score: float
    grade: str
    decision: str = Field(description="approve | decline")
    decline_reason: str
    reasons: list[str] = Field(max_length=4, description="what raised the risk most, in words (at most 4)")
    limit: float
    annual_rate: float | None
    term_options: list[int] = Field(description="instalment terms offered (months)")
    insurance_offered: bool
    insurance_monthly_premium: float
    covers_request: bool | None = None
    model_version: str
    model_ms: float

    model_config = ConfigDict(json_schema_extra={"example": {
        "customer_id": "c-123", "pd": 0.04, "score": 702.5, "grade": "B", "decision": "approve",
        "decline_reason": "", "reasons": ["Income: low"], "limit": 1500.0, "annual_rate": 0.126,
        "term_options": [3, 6, 12], "insurance_offered": True, "insurance_monthly_premium": 6.0,
        "covers_request": True, "model_version": "1", "model_ms": 2.5}})


class OffersAnswer(BaseModel):
    customer_id: str
    timing: TimingAnswer
    discount: DiscountAnswer
    credit: CreditAnswer | None = Field(description="null when the request had no application")
    model_ms: float = Field(description="longest model compute among the parts (they run in parallel)")


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="family -> loaded model URI and version")
