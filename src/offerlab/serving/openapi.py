"""The /offers contract of the loaded models: the request models the service validates with, and its OpenAPI spec.

Why: applications are written against the published spec (`/docs.json`), often through a generated client, so the
spec must say exactly what the service accepts. The static contract (`offerlab.serving.contracts`) cannot know
what the models need; the champions can. Each family adapter states its needs (`needs()` in
`offerlab.serving.models`, read from the trained model itself: the uplift encoder's attributes and their levels,
the credit model's application fields and levels, the timing model's category vocabulary), and `build_contract`
turns them into pydantic request models (the static ones with those fields made required, typed and enumerated)
and an OpenAPI 3.1 document generated from the same models. The service validates every body with these models
before BentoML sees it (`offerlab.serving.app.ContractMiddleware`), so what the spec declares is what is
enforced; promoting a champion with other features changes both, and the spec names the model versions.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic.json_schema import models_json_schema

from offerlab.serving.contracts import (
    APPLICATION_FIELDS,
    DAY_OR_INSTANT_HELP,
    DAY_OR_INSTANT_PATTERN,
    EXAMPLE_APPLICATION,
    EXAMPLE_ATTRIBUTES,
    EXAMPLE_HISTORY,
    Application,
    AttributeValue,
    ErrorMessage,
    Feature,
    InvalidRequest,
    OffersAnswer,
    OffersRequest,
    Purchase,
    TooLarge,
    invalid_body,
    max_history,
    parse_instant,
)

FAMILIES = ("timing", "uplift", "credit")
REF = "#/components/schemas/{model}"
EXAMPLE_AS_OF = "2024-12-01T00:00:00"  # after the example history
DayOrInstant = Annotated[object, PlainValidator(lambda v: parse_instant(v, day_allowed=True)),
                         WithJsonSchema({"type": "string", "pattern": DAY_OR_INSTANT_PATTERN,
                                         "description": DAY_OR_INSTANT_HELP})]


class _Attributes(BaseModel):
    """Static customer attributes: the ones the uplift model reads, typed; others are accepted and not used."""

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, AttributeValue] = Field(init=False)


def _enum(levels: list[str]) -> object:
    return Literal[tuple(levels)]


def _purchase_model(categories: list[str] | None) -> type[Purchase]:
    if not categories:
        return Purchase
    return create_model("Purchase", __base__=Purchase, category=(
        _enum(categories) | None, Field(None, description="product category: one the timing model knows")))


def _attributes_model(attributes: dict[str, dict]) -> tuple[type[BaseModel], bool]:
    """(the attributes model, whether the object is required: some attribute is)."""
    fields: dict[str, tuple] = {}
    for i, (name, need) in enumerate(attributes.items()):  # aliases: an attribute name need not be an identifier
        if need["kind"] == "category":
            fields[f"a{i}"] = (_enum(need["levels"]), Field(alias=name, description="required by the uplift model"))
        elif need["kind"] == "date":
            fields[f"a{i}"] = (DayOrInstant, Field(None, alias=name, description=(
                f"date of it; the uplift model reads `{need['for']}` = days from it to as_of (if that is not given)")))
        else:
            fields[f"a{i}"] = (Feature, Field(None, alias=name, description="read by the uplift model; "
                                              "optional (missing = its training mean)"))
    model = create_model("Attributes", __base__=_Attributes, **fields)
    return model, any(n["kind"] == "category" for n in attributes.values())


def _application_model(needed: dict[str, dict]) -> type[Application]:
    fields: dict[str, tuple] = {}
    for i, (name, need) in enumerate(needed.items()):
        what = "required by the credit model" if need.get("required") else "read by the credit terms if given"
        if need["kind"] == "category":
            kind = _enum(need["levels"])
        elif name in APPLICATION_FIELDS:
            kind, what = APPLICATION_FIELDS[name][0], f"{APPLICATION_FIELDS[name][1]}; {what}"
        else:
            kind = Feature
        key = name if name in APPLICATION_FIELDS else f"x{i}"
        default = ... if need.get("required") else None
        fields[key] = (kind if need.get("required") else kind | None, Field(default, alias=name, description=what))
    return create_model("Application", __base__=Application, **fields)


def request_model(needs: dict[str, dict]) -> type[OffersRequest]:
    """The `OffersRequest` of these models' needs (`{"timing": {...}, "uplift": {...}, "credit": {...}}`)."""
    purchase = _purchase_model(needs["timing"].get("categories"))
    attributes, attributes_required = _attributes_model(needs["uplift"].get("attributes", {}))
    application = _application_model(needs["credit"].get("application", {}))
    return create_model(
        "OffersRequest", __base__=OffersRequest,
        history=(list[purchase], Field(max_length=max_history(), description=(
            OffersRequest.model_fields["history"].description))),
        attributes=(attributes, Field(... if attributes_required else None, description=(
            "static customer attributes: those the uplift model reads, typed and (categorical ones) required; "
            "others are accepted and not used"))),
        application=(application | None, Field(None, description="credit application; omit for no credit answer")),
    )


def example_request(needs: dict[str, dict]) -> dict:
    """A request valid for these models: the contract's example with the models' own levels and fields."""
    cats = needs["timing"].get("categories")
    history = [{**p, "category": p["category"] if not cats or p["category"] in cats else cats[j % len(cats)]}
               for j, p in enumerate(EXAMPLE_HISTORY)]
    attributes = {}
    for name, need in needs["uplift"].get("attributes", {}).items():
        if need["kind"] == "category":
            given = EXAMPLE_ATTRIBUTES.get(name)
            attributes[name] = given if given in need["levels"] else need["levels"][0]
    application = {}
    for name, need in needs["credit"].get("application", {}).items():
        given = EXAMPLE_APPLICATION.get(name)
        if need["kind"] == "category":
            application[name] = given if given in need["levels"] else need.get("typical", need["levels"][0])
        elif given is not None or need.get("required"):
            application[name] = given if given is not None else need.get("typical", 0.0)
    return {"customer_id": "c-123", "history": history, "attributes": attributes, "application": application,
            "as_of": EXAMPLE_AS_OF}


def _models(needs: dict[str, dict]) -> dict:
    return {f: {k: needs[f][k] for k in ("uri", "version") if k in needs[f]} for f in FAMILIES}


def _error(description: str, model: type[BaseModel], headers: dict | None = None) -> dict:
    out = {"description": description,
           "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}
    if headers:
        out["headers"] = headers
    return out


def _text(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def build_spec(needs: dict[str, dict], request: type[OffersRequest], example: dict, *, title: str,
               api_key: bool, max_body: int) -> dict:
    """The OpenAPI 3.1 document of /offers, /offers_batch and the health endpoints for these models."""
    _, top = models_json_schema([(request, "validation"), (OffersAnswer, "serialization"),
                                 (InvalidRequest, "serialization"), (ErrorMessage, "serialization"),
                                 (TooLarge, "serialization")], ref_template=REF)
    schemas = top["$defs"]
    for schema in schemas.values():  # the static models' own examples need not fit these models
        schema.pop("example", None)
    req_ref = {"$ref": REF.format(model=request.__name__)}
    ans_ref = {"$ref": REF.format(model=OffersAnswer.__name__)}
    errors = {
        "400": _error("the body is not valid JSON, or a field breaks the contract (each refused field named)",
                      InvalidRequest),
        "413": _error(f"the body is over {max_body} bytes (`OFFERLAB_MAX_BODY_BYTES`)", TooLarge),
        "415": _error("the body is not `application/json`", ErrorMessage),
        "500": _error("an unexpected error (see the server log)", ErrorMessage),
        "503": _error("overloaded, or the models are not loaded yet (see /readyz): retry after the pause given",
                      ErrorMessage, {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}),
    }
    security = {}
    if api_key:
        errors["401"] = _error("the API key is missing or wrong", ErrorMessage, {"WWW-Authenticate": {
            "description": "how to authenticate", "schema": {"type": "string"}}})
        security = {"security": [{"ApiKey": []}, {"Bearer": []}]}
    model_ms = {"x-model-ms": {"description": "model compute time of this answer (ms)", "required": True,
                               "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"}}}

    def operation(op_id: str, summary: str, body: dict, answer: dict, body_example: object,
                  headers: dict | None = None) -> dict:
        ok = {"description": "the offers", "content": {"application/json": {"schema": answer}}}
        if headers:
            ok["headers"] = headers
        return {"post": {
            "operationId": op_id, "summary": summary, "tags": ["offers"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body,
                                                                                "example": body_example}}},
            "responses": {"200": ok, **errors}, **security}}

    models = _models(needs)
    versions = ", ".join(f"{f} {m.get('version') or '?'}" for f, m in models.items())
    health = {
        "/readyz": {"get": {"operationId": "readyz", "summary": "200 once the models are loaded, 503 before",
                            "tags": ["health"], "responses": {"200": _text("ready"), "503": _text("not ready yet")}}},
        "/livez": {"get": {"operationId": "livez", "summary": "200 while the process lives", "tags": ["health"],
                           "responses": {"200": _text("alive")}}},
        "/healthz": {"get": {"operationId": "healthz", "summary": "200 while the process lives", "tags": ["health"],
                             "responses": {"200": _text("alive")}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics", "tags": ["health"],
                             "responses": {"200": _text("metrics in the Prometheus text format")}}},
    }
    spec = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": versions,
            "description": (
                "Offers for one customer (`/offers`) or many (`/offers_batch`): next-purchase timing, the discount "
                f"to give, credit terms. This spec describes the loaded models ({versions}): the attributes, "
                "categories and application fields they need, with their levels. Every error body is declared; "
                "a method a path does not list answers 405 with `Allow`."),
            "x-offerlab-models": models,
        },
        "paths": {
            "/offers": operation("offers", "all three offers for one customer", req_ref, ans_ref, example, model_ms),
            "/offers_batch": operation("offers_batch", "the offers for many customers in one request",
                                       {"type": "array", "items": req_ref}, {"type": "array", "items": ans_ref},
                                       [example]),
            **health,
        },
        "components": {"schemas": schemas},
    }
    if api_key:
        spec["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "Bearer": {"type": "http", "scheme": "bearer"}}
    return spec


@dataclass
class Contract:
    """The loaded models' contract: validators of the request bodies, the example, and the spec."""

    needs: dict[str, dict]
    request: type[OffersRequest]
    example: dict
    adapters: dict[str, TypeAdapter]
    title: str = "Offerlab offers"
    _specs: dict = field(default_factory=dict, repr=False)

    def spec(self, api_key: bool = False, max_body: int = 16 << 20) -> dict:
        """The OpenAPI document (`api_key`: calls need the key, so 401 and the security schemes are declared)."""
        key = (api_key, max_body)
        if key not in self._specs:
            spec = build_spec(self.needs, self.request, self.example, title=self.title, api_key=api_key,
                              max_body=max_body)
            self._specs[key] = (spec, json.dumps(spec).encode())
        return self._specs[key][0]

    def spec_json(self, api_key: bool = False, max_body: int = 16 << 20) -> bytes:
        self.spec(api_key, max_body)
        return self._specs[(api_key, max_body)][1]

    def refusal(self, api: str, body: bytes) -> dict | None:
        """The 400 body (`InvalidRequest`) for a body `api` refuses, else None (also None for other APIs)."""
        adapter = self.adapters.get(api)
        if adapter is None:
            return None
        try:
            adapter.validate_json(body)
        except ValidationError as e:
            return invalid_body(e)
        return None


def build_contract(needs: dict[str, dict], *, title: str = "Offerlab offers") -> Contract:
    """The contract of these models' needs (each family's adapter `needs()`, plus its `uri` and `version`)."""
    needs = {f: dict(needs.get(f) or {}) for f in FAMILIES}
    request = request_model(needs)
    example = example_request(needs)
    request.model_validate(example)  # the example must be one the models take (raises if not: a bug here)
    adapters = {"offers": TypeAdapter(request), "offers_batch": TypeAdapter(list[request])}
    return Contract(needs, request, copy.deepcopy(example), adapters, title)


# ------------------------------------------------------------------------------------------- per service
ContractSource = Callable[[], Awaitable["Contract | None"]]
_SOURCES: dict[str, ContractSource] = {}
_LOCK = threading.Lock()


def register(service: str, source: ContractSource) -> None:
    """`source()` gives `service`'s contract once its models are loaded (None if they cannot be)."""
    with _LOCK:
        _SOURCES[service] = source


async def contract_of(service: str) -> Contract | None:
    """The contract of `service` in this process (None: no contract for it, or its models are not loaded)."""
    source = _SOURCES.get(service)
    if source is None:
        return None
    return await source()


def has_contract(service: str) -> bool:
    return service in _SOURCES


class CachedContract:
    """A contract built once, when `needs()` first returns every family's needs (None while they are loading).

    Two first calls at once may both build it; the same needs give the same contract, so either one serves."""

    def __init__(self, needs: Callable[[], Awaitable[dict | None]], **options) -> None:
        self.needs, self.options = needs, options
        self.contract: Contract | None = None

    async def __call__(self) -> Contract | None:
        if self.contract is None:
            needs = await self.needs()
            if needs is not None:
                self.contract = build_contract(needs, **self.options)
        return self.contract
