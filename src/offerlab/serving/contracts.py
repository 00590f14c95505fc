"""The HTTP contract of the Offerlab services: pydantic requests and answers, and the error bodies.

Everything here can be said in JSON Schema, so the published spec states it exactly: types are strict
(a number is a JSON number, never a numeric string or a boolean), amounts are finite and in range,
timestamps follow one grammar (`INSTANT_PATTERN`: RFC 3339 date-time, years 1900-2099, the zone
optional and read as UTC when absent), histories are at most `OFFERLAB_MAX_HISTORY` purchases.
What needs the loaded models (the attributes the uplift model requires and their levels, the
categories the timing model knows, the application fields of the credit model) is added per model by
`offerlab.serving.openapi`, which builds the request models the service validates with and the spec
from the same needs; the adapters in `offerlab.serving.models` check the same things again for
Python callers and raise `field_error`, so every refusal has one 400 shape (`InvalidRequest`):
``{"error": "1 validation error for ...", "detail": [{"loc": [...], "msg": "...", "type": "..."}]}``.

Rules JSON Schema cannot state are not refusals: purchases may come in any order (sorted here), and
purchases after `as_of` (or after now, without `as_of`) are not known at that instant and are left
out, as in batch scoring and training; the answer says how many purchases it used.

Returns and repayments may come with the history (`returns` linked to purchases by `order_id`, `repayments` of
instalment credit). What cannot be true is refused with the field named: a return of an order not in the history,
a return before its purchase, returns above the amount bought, a repayment paid or due before its credit was
issued. Returns after `as_of` are not known yet and are left out like purchases. For the timing answer a purchase
returned in full is no purchase and a partly returned one counts at its net amount (`net_of_returns`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

MAX_HISTORY_ENV = "OFFERLAB_MAX_HISTORY"
DEFAULT_MAX_HISTORY = 500
CLOCK_SKEW = dt.timedelta(minutes=5)  # a client clock slightly ahead is not "the future"

# a JSON number (an integer is one too), finite; never a numeric string or a boolean
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Amount = Annotated[float, Field(strict=True, ge=0, le=1e9, allow_inf_nan=False, description="amount (0 to 1e9)")]
FEATURE_BOUND = 1e9  # a number a model reads as a feature: |x| <= 1e9, so its float32 encoding stays finite
Feature = Annotated[float, Field(strict=True, ge=-FEATURE_BOUND, le=FEATURE_BOUND, allow_inf_nan=False)]


def _integral(v: object) -> object:
    """JSON Schema's integer: 6 and 6.0 alike (a boolean stays refused by the strict int after this)."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v


def integer(lo: int | None = None, hi: int | None = None) -> object:
    """A strict integer type in [lo, hi] (its schema stated explicitly: pydantic cannot see through the validator)."""
    bounds = {k: v for k, v in (("minimum", lo), ("maximum", hi)) if v is not None}
    return Annotated[int, BeforeValidator(_integral), Field(strict=True, ge=lo, le=hi),
                     WithJsonSchema({"type": "integer", **bounds})]


Integer = integer()

# RFC 3339 date-time with the zone optional (none = UTC), `T` or a space, calendar dates only, years 1900-2099:
# what `parse_instant` reads, stated as a pattern so that a spec reader (or generator) knows it exactly
_D = "[0-9]"
_YEAR = f"(?:19|20){_D}{_D}"
_LEAP = "(?:19(?:0[48]|[2468][048]|[13579][26])|20(?:[02468][048]|[13579][26]))"
_MONTH_DAY = (f"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]{_D}|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]{_D}|30)"
              f"|02-(?:0[1-9]|1{_D}|2[0-8]))")
_TIME = f"(?:[01]{_D}|2[0-3]):[0-5]{_D}:[0-5]{_D}(?:\\.{_D}{{1,9}})?"  # beyond microseconds: truncated
_ZONE = f"(?:Z|[+-](?:[01]{_D}|2[0-3]):[0-5]{_D})?"
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP}-02-29)"
INSTANT_PATTERN = f"^{_DATE}[T ]{_TIME}{_ZONE}$"
DAY_OR_INSTANT_PATTERN = f"^{_DATE}(?:[T ]{_TIME}{_ZONE})?$"  # a date attribute: a day, or an instant
_INSTANT, _DAY_OR_INSTANT = re.compile(INSTANT_PATTERN), re.compile(DAY_OR_INSTANT_PATTERN)
INSTANT_HELP = "date-time YYYY-MM-DDTHH:MM:SS[.fraction, up to 9 digits][Z|+HH:MM|-HH:MM], year 1900-2099; no zone = UTC"
DAY_OR_INSTANT_HELP = "a date YYYY-MM-DD (midnight UTC) or a " + INSTANT_HELP


def parse_instant(v: object, day_allowed: bool = False) -> dt.datetime:
    """A contract timestamp (`INSTANT_PATTERN`; a datetime from Python callers) as a naive UTC datetime;
    `day_allowed`: a date alone too (`DAY_OR_INSTANT_PATTERN`, midnight UTC)."""
    if isinstance(v, dt.datetime):
        return utc_naive(v)
    grammar, help_ = (_DAY_OR_INSTANT, DAY_OR_INSTANT_HELP) if day_allowed else (_INSTANT, INSTANT_HELP)
    if not isinstance(v, str) or not grammar.fullmatch(v):
        raise PydanticCustomError("instant", "must be " + ("" if day_allowed else "a ") + help_)
    return utc_naive(dt.datetime.fromisoformat(v))


Instant = Annotated[dt.datetime, PlainValidator(parse_instant),
                    WithJsonSchema({"type": "string", "pattern": INSTANT_PATTERN, "description": INSTANT_HELP})]


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
    model_config = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------------------------- inputs
MAX_ITEMS_PER_PURCHASE = 200


class PurchaseItem(_Strict):
    """One line of a purchase: what was bought, how many."""

    item_id: str = Field(min_length=1, max_length=128, description="your item (product) id")
    item_name: str | None = Field(None, max_length=256, description="a name a person reads (echoed in the basket)")
    quantity: integer(1, 100_000) = Field(description="units bought (two packs last longer than one)")
    amount: Amount | None = Field(None, description="what the line cost (the basket's expected value uses it)")


class Purchase(_Strict):
    """One purchase of the customer."""

    timestamp: Instant = Field(description="when it was bought (" + INSTANT_HELP + ")")
    amount: Amount
    order_id: str | None = Field(None, min_length=1, max_length=128, description=(
        "your order id (optional; needed to link returns to this purchase)"))
    payment_method: str | None = Field(None, min_length=1, max_length=32, description=(
        "how it was paid (e.g. card, instalments, bnpl, invoice); the credit model reads the mix where trained "
        "with it"))
    category: str | None = Field(None, max_length=64, description="product category, one the model knows")
    items: list[PurchaseItem] | None = Field(None, max_length=MAX_ITEMS_PER_PURCHASE, description=(
        "the purchase's lines (optional): with them the timing answer carries the replenishment basket, where "
        "the timing model was trained with items; items it does not know are left out of the basket"))


RETURN_CENT = 0.005  # returns adding up to the amount bought within half a cent return it in full
MAX_EVENTS = 500


class Return(_Strict):
    """Something the customer sent back of one purchase of the history."""

    order_id: str = Field(min_length=1, max_length=128, description="the purchase's `order_id`")
    returned_at: Instant = Field(description="when it came back (" + INSTANT_HELP + "); on or after the purchase")
    amount: Amount = Field(description="amount refunded (all returns of a purchase add up to at most its amount)")
    item_id: str | None = Field(None, min_length=1, max_length=128, description="the line's item, if one line")
    quantity: integer(1, 100_000) | None = Field(None, description="units of that item sent back (omit: the line)")


class Repayment(_Strict):
    """One instalment of a credit the customer took (buy now pay later, instalments)."""

    credit_id: str = Field(min_length=1, max_length=128, description="the credit or order it repays")
    issued_at: Instant = Field(description="when the credit started (" + INSTANT_HELP + ")")
    due_date: Instant = Field(description="when the instalment was due; on or after issued_at")
    paid_at: Instant | None = Field(None, description="when it was paid (on or after issued_at); null: unpaid")
    amount_due: Amount
    amount_paid: Amount


EXAMPLE_HISTORY = [
    {"timestamp": "2024-09-02T10:15:00", "amount": 42.5, "category": "grocery"},
    {"timestamp": "2024-10-01T18:40:00", "amount": 18.9, "category": "household"},
    {"timestamp": "2024-11-03T09:05:00", "amount": 57.0, "category": "grocery"},
]
EXAMPLE_ATTRIBUTES = {"region": "north", "age_band": "35-44", "signup_channel": "app"}
EXAMPLE_APPLICATION = {"requested_amount": 600.0, "income": 42000.0, "term_months": 6, "age": 38,
                       "employment_years": 4.5, "housing": "rent", "purpose": "electronics", "existing_credits": 1}


class CustomerHistory(_Strict):
    """A customer's purchase history as known at `as_of` (default: now)."""

    customer_id: str = Field(min_length=1, max_length=128, description="your id; echoed back, never logged")
    history: list[Purchase] = Field(description=(
        "purchases, in any order (the service sorts them by time); those after `as_of` are not known at "
        "that instant and are left out (the answer's `purchases_used` counts the rest); none (a customer "
        "who has not bought yet): no timing answer"))
    as_of: Instant | None = Field(None, description="answer as of this instant (default: now); " + INSTANT_HELP)
    returns: list[Return] = Field(default_factory=list, max_length=MAX_EVENTS, description=(
        "what came back of the history's purchases (each names its purchase's order_id); a purchase returned in "
        "full is no purchase for the timing answer, a partly returned one counts at its net amount"))
    repayments: list[Repayment] = Field(default_factory=list, max_length=MAX_EVENTS, description=(
        "instalments of the customer's credits, paid or not (the credit model reads them where trained with them)"))
    _left_out: int = PrivateAttr(0)

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "example": {"customer_id": "c-123", "history": EXAMPLE_HISTORY, "as_of": "2024-12-01T00:00:00"}})

    @model_validator(mode="after")
    def _known_history(self) -> CustomerHistory:
        """At most `max_history()` purchases; sorted by time; those after the as-of instant left out."""
        limit = max_history()
        if len(self.history) > limit:
            raise field_error(type(self).__name__, ("history",),
                              f"history has {len(self.history)} purchases; the maximum is {limit} "
                              f"(send the most recent {limit})", len(self.history))
        self._check_returns()
        self._check_repayments()
        stamps = [p.timestamp for p in self.history]  # bounded by max_history: a request, not a data set
        if any(b < a for a, b in zip(stamps, stamps[1:], strict=False)):
            self.history = sorted(self.history, key=lambda p: p.timestamp)  # stable: same-instant order kept
        end = self.as_of if self.as_of is not None else now_utc() + CLOCK_SKEW
        if self.history and self.history[-1].timestamp > end:
            known = [p for p in self.history if p.timestamp <= end]
            self._left_out = len(self.history) - len(known)
            self.history = known
        if any(r.returned_at > end for r in self.returns):
            self.returns = [r for r in self.returns if r.returned_at <= end]
        return self

    def _check_returns(self) -> None:
        """Each return names a purchase of the history, comes on or after it, and a purchase's returns add up to
        at most its amount (bounded by the request's size)."""
        if not self.returns:
            return
        title = type(self).__name__
        bought: dict[str, Purchase] = {}
        for j, p in enumerate(self.history):
            if p.order_id is not None:
                if p.order_id in bought:
                    raise field_error(title, ("history", j, "order_id"), "order_id appears twice in the history: "
                                      "one purchase per order", p.order_id)
                bought[p.order_id] = p
        back: dict[str, float] = {}
        for i, r in enumerate(self.returns):
            p = bought.get(r.order_id)
            if p is None:
                raise field_error(title, ("returns", i, "order_id"), "no purchase of the history has this order_id",
                                  r.order_id)
            if utc_naive(r.returned_at) < utc_naive(p.timestamp):
                raise field_error(title, ("returns", i, "returned_at"), "a return before its purchase "
                                  f"({p.timestamp.isoformat()})", r.returned_at.isoformat())
            back[r.order_id] = back.get(r.order_id, 0.0) + r.amount
            if back[r.order_id] > p.amount + RETURN_CENT:
                raise field_error(title, ("returns", i, "amount"), f"the returns of this order add up to "
                                  f"{back[r.order_id]:g}, above its amount {p.amount:g}", r.amount)

    def _check_repayments(self) -> None:
        title = type(self).__name__
        for i, r in enumerate(self.repayments):
            if utc_naive(r.due_date) < utc_naive(r.issued_at):
                raise field_error(title, ("repayments", i, "due_date"), "due before the credit was issued",
                                  r.due_date.isoformat())
            if r.paid_at is not None and utc_naive(r.paid_at) < utc_naive(r.issued_at):
                raise field_error(title, ("repayments", i, "paid_at"), "paid before the credit was issued",
                                  r.paid_at.isoformat())

    def net_of_returns(self) -> CustomerHistory:
        """This request with its purchases net of its returns (known by `as_of`): a purchase returned in full left
        out, a partly returned one at its net amount, returned item quantities off its lines (the timing answer's
        history; `offerlab.timing.returns` does the same on tables)."""
        if not self.returns:
            return self
        back: dict[str, float] = {}
        units: dict[tuple[str, str], float] = {}
        for r in self.returns:
            back[r.order_id] = back.get(r.order_id, 0.0) + r.amount
            if r.item_id is not None:
                key = (r.order_id, r.item_id)
                units[key] = units.get(key, 0.0) + (r.quantity if r.quantity is not None else float("inf"))
        kept = []
        for p in self.history:
            got = back.get(p.order_id) if p.order_id is not None else None
            if got is None:
                kept.append(p)
                continue
            if got >= p.amount - RETURN_CENT:
                continue
            items = p.items
            if items:
                items = []
                for it in p.items:
                    left = it.quantity - units.get((p.order_id, it.item_id), 0.0)
                    if left > 0:
                        share = left / it.quantity
                        items.append(it.model_copy(update={"quantity": int(left), "amount": None if it.amount is None
                                                            else it.amount * share}))
            kept.append(p.model_copy(update={"amount": p.amount - got, "items": items}))
        out = self.model_copy(update={"history": kept})
        out._left_out = self._left_out
        return out

    def answer_time(self) -> dt.datetime:
        """The as-of instant: the request's `as_of`, else now."""
        return self.as_of or now_utc()

    @property
    def purchases_left_out(self) -> int:
        """Purchases of the request after its as-of instant (not used)."""
        return self._left_out


MAX_CURVE_DAYS = 365
CurveDays = Annotated[integer(1, MAX_CURVE_DAYS) | None, Field(description=(
    "also answer `timing.p_buy_curve`: P(a purchase within d days) for every d = 1..curve_days (omit: no curve)"))]


class TimingRequest(CustomerHistory):
    """When will this customer buy again, and what?"""

    curve_days: CurveDays = None


AttributeValue = Annotated[str, Field(strict=True)] | Finite


class DiscountRequest(CustomerHistory):
    """Which discount, if any, pays for this customer?"""

    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict, description="static customer attributes the uplift model uses (e.g. region)")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": 
        {"customer_id": "c-123", "history": EXAMPLE_HISTORY, "attributes": EXAMPLE_ATTRIBUTES,
         "as_of": "2024-12-01T00:00:00"}})


# the contract's own type and range of each named application field; a credit model's needs make the ones it
# reads required (and a categorical one an enum of its levels), see offerlab.serving.openapi
Level = Annotated[str, Field(strict=True, max_length=64)]
TermMonths, Age, ExistingCredits = integer(1, 120), integer(18, 120), integer(0, 100)
Years = Annotated[float, Field(strict=True, ge=0, le=80, allow_inf_nan=False)]
APPLICATION_FIELDS: dict[str, tuple[object, str]] = {
    "requested_amount": (Amount, "amount asked for / basket value"),
    "income": (Amount, "annual income"),
    "term_months": (TermMonths, "instalment term asked for (months)"),
    "age": (Age, "applicant's age (years)"),
    "employment_years": (Years, "years in employment"),
    "housing": (Level, "housing situation"),
    "purpose": (Level, "what the credit is for"),
    "existing_credits": (ExistingCredits, "credits already running"),
}
ExtraValue = Annotated[str, Field(strict=True)] | Finite | None


class Application(BaseModel):
    """A credit application; fields the model was trained on (others allowed for models trained elsewhere)."""

    model_config = ConfigDict(extra="allow", strict=True, json_schema_extra={"example": EXAMPLE_APPLICATION})
    __pydantic_extra__: dict[str, ExtraValue] = Field(init=False)
    requested_amount: Amount | None = Field(None, description="amount asked for / basket value")
    income: Amount | None = Field(None, description="annual income")
    term_months: TermMonths | None = None
    age: Age | None = None
    employment_years: Years | None = None
    housing: Level | None = None
    purpose: Level | None = None
    existing_credits: ExistingCredits | None = None

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


class BasketItem(BaseModel):
    item_id: str
    item_name: str | None = None
    quantity: int = Field(description="units to put in the basket (the customer's last quantity of the item)")
    p_30d: float = Field(description="P(the customer buys the item within 30 days of as_of)")
    due_date: dt.date | None = Field(description="the first day P(bought by then) reaches 0.5 (null: not "
                                     "within 60 days)")
    expected_value: float | None = Field(description="p_30d x quantity x the last unit price (null without amounts)")


class Basket(BaseModel):
    reminder_date: dt.date = Field(description="the first day by which half the basket's expected value is due")
    value: float | None = Field(description="sum of the items' expected values (null without line amounts)")
    items: list[BasketItem] = Field(description="at most 10, by p_30d; only items with p_30d >= the model's min_p")


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
    basket: Basket | None = Field(None, description="the prepared replenishment basket and its reminder day; "
                                  "null when the history carries no items, the model has no basket part, or "
                                  "nothing is likely within 30 days")
    model_version: str
    model_ms: float = Field(description="model compute time of the batch this answer came from (ms)")

    model_config = ConfigDict(json_schema_extra={"example": {
        "customer_id": "c-123", "p_buy_7d": 0.21, "p_buy_30d": 0.62, "p_buy_90d": 0.88,
        "expected_purchases_90d": 2.7, "next_date_median": "2024-12-19", "next_date_q10": "2024-12-04",
        "next_date_q90": "2025-02-10", "p_no_purchase_90d": 0.12, "winback": False,
        "top_categories": [{"category": "grocery", "probability": 0.55}], "model_version": "3", "model_ms": 1.8}})


class LevelValue(BaseModel):
    level: str
    discount_rate: float | None = Field(None, description="the level's discount rate (the policy's economics)")
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


class WinbackOffer(BaseModel):
    level: str | None = Field(description="the discount policy's level for this customer (null: no discount pays)")
    discount_rate: float | None
    basket_value: float | None = Field(description="the prepared basket's expected value")
    discount_amount: float | None = Field(description="discount_rate x basket_value: what the offer gives away")
    expected_incremental_profit: float = Field(description="of the level, from the discount answer")
    reason: str = Field(description="why, in words")


class OffersAnswer(BaseModel):
    customer_id: str
    timing: TimingAnswer | None = Field(description="null when no purchase of the request is on or before as_of "
                                        "(the timing model answers from a purchase history)")
    discount: DiscountAnswer
    credit: CreditAnswer | None = Field(description="null when the request had no application")
    purchases_used: int = Field(description="purchases of the request on or before as_of, which the answers used "
                                "(later ones are not known at as_of and are left out)")
    winback_offer: WinbackOffer | None = Field(None, description="an overdue customer (timing.winback) with a "
                                               "prepared basket: the discount policy's level priced on it")
    model_ms: float = Field(description="model compute of the parts: the longest when they run in parallel "
                            "(`Offers`), their sum in one process (`OffersLocal`)")


# --------------------------------------------------------------------------------------------- errors
class ErrorItem(BaseModel):
    """One refused field: where (`loc`, from the body's root) and why."""

    model_config = ConfigDict(extra="forbid")
    loc: list[str | int] = Field(description="path of the field in the body, e.g. [\"history\", 0, \"amount\"]")
    msg: str
    type: str = Field(description="kind of error (pydantic's error type, or json_invalid)")


class InvalidRequest(BaseModel):
    """400: the body is not valid JSON or breaks the contract; every refused field is named."""

    model_config = ConfigDict(extra="forbid")
    error: str
    detail: list[ErrorItem]


class ErrorMessage(BaseModel):
    """An error answer with one message (401, 405, 415, 500, 503)."""

    model_config = ConfigDict(extra="forbid")
    error: str


class TooLarge(BaseModel):
    """413: the body is over the size limit, which is named."""

    model_config = ConfigDict(extra="forbid")
    error: str
    limit_bytes: int = Field(description="the limit (`OFFERLAB_MAX_BODY_BYTES`)")


def invalid_body(e: ValidationError) -> dict:
    """The 400 body (`InvalidRequest`) of a validation error: fields and messages, never the values sent."""
    detail = [{"loc": list(d["loc"]), "msg": d["msg"], "type": d["type"]}
              for d in e.errors(include_url=False, include_context=False, include_input=False)]
    n = len(detail)
    return {"error": f"{n} validation error{'s' if n != 1 else ''} for {e.title}", "detail": detail}
