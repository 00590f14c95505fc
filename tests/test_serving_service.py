"""Serving in-process: answers from registry models, the request contract, API key and readiness.

Models come from `serving_models` (tiny champions in an isolated registry). The HTTP-level checks run
the services' real ASGI apps in-process (starlette TestClient), so they cover BentoML's own input
validation and our middleware without starting a server.
"""

from __future__ import annotations

import copy
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from offerlab.serving.contracts import CreditRequest, OffersRequest, TimingRequest
from serving_models import serving_models  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="module")
def offers(serving_models):  # noqa: F811
    from serving.service import Offers

    svc = Offers()
    for dep in (svc.timing, svc.discount, svc.credit):
        assert dep.wait_ready(120), dep.error
    return svc


@pytest.fixture(scope="module")
def client(offers, serving_models):  # noqa: F811
    from serving.service import Offers
    from starlette.testclient import TestClient

    with TestClient(Offers.to_asgi(), client=("127.0.0.1", 50000)) as c:
        yield c


def test_offers_answer_from_the_registry_champions(offers, serving_models):  # noqa: F811
    import asyncio

    req = OffersRequest.model_validate(serving_models.offers_request(n=50))
    ans = asyncio.run(offers._answer([req]))[0]
    t, d, c = ans.timing, ans.discount, ans.credit
    assert ans.customer_id == "c-test"
    assert {t.model_version, d.model_version, c.model_version} == {"1"}
    assert 0 <= t.p_buy_7d <= t.p_buy_30d <= t.p_buy_90d <= 1
    assert t.p_no_purchase_90d == pytest.approx(1 - t.p_buy_90d)
    assert t.winback == (t.p_no_purchase_90d > 0.5)
    assert len(t.top_categories) == 3 and t.top_categories[0].probability >= t.top_categories[1].probability
    profits = [lv.expected_incremental_profit for lv in d.levels]
    assert [lv.level for lv in d.levels][0] == "control" and profits[0] == 0.0
    best = int(np.argmax(profits))
    assert d.level == (d.levels[best].level if best > 0 else None)
    assert d.expected_incremental_profit == pytest.approx(max(profits))
    assert 0 < c.pd < 1 and c.decision in ("approve", "decline") and len(c.reasons) <= 4
    assert ans.model_ms == pytest.approx(max(t.model_ms, d.model_ms, c.model_ms))


def test_timing_batch_matches_the_predictor_at_each_customers_own_as_of(offers, serving_models):  # noqa: F811
    """Two customers with different as-of instants in one batch get what the predictor says for each alone."""
    history = serving_models.history(n=30)
    early = TimingRequest(customer_id="a", history=history[:20], as_of=dt.datetime(2024, 10, 1))
    late = TimingRequest(customer_id="b", history=history, as_of=dt.datetime(2025, 1, 1))
    answers = offers.timing.predict([early, late])
    predictor = offers.timing.adapter.predictor
    for req, ans in zip((early, late), answers, strict=True):
        tx = pd.DataFrame({"customer_id": "x", "timestamp": [p.timestamp for p in req.history],
                           "amount": [p.amount for p in req.history], "category": [p.category for p in req.history],
                       "order_id": [p.order_id or f"#{j}" for j, p in enumerate(req.history)],
                       "payment_method": [p.payment_method for p in req.history]})
        state = predictor.encode(tx, pd.Timestamp(req.as_of))
        assert ans.p_buy_30d == pytest.approx(float(predictor.prob_within(state, 30.0)[0]), rel=1e-5)
        assert ans.p_buy_7d == pytest.approx(float(predictor.prob_within(state, 7.0)[0]), rel=1e-5)


def test_credit_matches_the_library_decision(offers, serving_models):  # noqa: F811
    """The adapter's features and PD equal CreditModel.decide on the same application and purchases."""
    body = serving_models.offers_request(n=40)
    req = CreditRequest.model_validate({k: body[k] for k in ("customer_id", "history", "as_of", "application")})
    ans = offers.credit.predict([req])[0]
    model = offers.credit.adapter.model
    tx = pd.DataFrame({"customer_id": "x", "timestamp": [p.timestamp for p in req.history],
                       "amount": [p.amount for p in req.history], "category": [p.category for p in req.history],
                       "order_id": [p.order_id or f"#{j}" for j, p in enumerate(req.history)],
                       "payment_method": [p.payment_method for p in req.history]})
    app = pd.DataFrame([{**req.application.fields(), "customer_id": "x",
                         "applied_at": pd.Timestamp(req.as_of) + pd.Timedelta(microseconds=1)}])
    ref = model.decide(app, tx)
    assert ans.pd == pytest.approx(float(ref["pd"].iloc[0]), rel=1e-6)
    assert ans.grade == ref["grade"].iloc[0] and ans.limit == float(ref["limit"].iloc[0])


def _mutate(body: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(body)
    node = out
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


BAD_INPUT = [
    ("missing field", ("customer_id",), KeyError, "customer_id"),
    ("negative amount", ("history", 0, "amount"), -5.0, "history.0.amount"),
    ("NaN amount", ("history", 1, "amount"), float("nan"), "history.1.amount"),
    ("no such day", ("history", 2, "timestamp"), "2023-02-29T00:00:00", "history.2.timestamp"),
    ("after 2099", ("as_of",), "2999-01-01T00:00:00", "as_of"),
    ("before 1900", ("history", 0, "timestamp"), "0001-01-01T00:00:00", "history.0.timestamp"),
    ("absurd amount", ("history", 0, "amount"), 1e300, "history.0.amount"),
    ("amount as a string", ("history", 0, "amount"), "12.5", "history.0.amount"),
    ("timestamp as a number", ("history", 0, "timestamp"), 1700000000, "history.0.timestamp"),
    ("negative income", ("application", "income"), -1.0, "application.income"),
    ("unknown field", ("favourite_colour",), "blue", "favourite_colour"),
]


@pytest.mark.parametrize(("case", "path", "value", "field"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_a_400_naming_the_field(client, serving_models, case, path, value, field):  # noqa: F811
    body = _mutate(serving_models.offers_request(n=10), path, value)
    import json

    r = client.post("/offers", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    locs = [".".join(str(p) for p in d["loc"]) for d in r.json()["detail"]]
    assert any(loc.startswith(field) for loc in locs), (case, locs)


def test_history_longer_than_the_maximum_is_refused(serving_models, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OFFERLAB_MAX_HISTORY", "5")
    with pytest.raises(ValidationError, match="maximum is 5") as e:
        OffersRequest.model_validate(serving_models.offers_request(n=10))
    assert e.value.errors()[0]["loc"] == ("history",)


@pytest.mark.parametrize(("path", "value", "field"), [
    (("history", 0, "category"), "spaceships", "history.0.category"),
    (("attributes", "region"), "atlantis", "attributes.region"),
    (("application", "housing"), "castle", "application.housing"),
    (("application", "age"), KeyError, "application.age"),
    (("attributes", "region"), KeyError, "attributes.region"),
])
def test_model_level_checks_are_400s_naming_the_field(client, serving_models, path, value, field):  # noqa: F811
    body = _mutate(serving_models.offers_request(n=10), path, value)
    r = client.post("/offers", json=body)
    assert r.status_code == 400, r.text
    locs = [".".join(str(p) for p in d["loc"]) for d in r.json()["detail"]]
    assert field in locs


def test_offers_over_http_in_process_with_header(client, serving_models):  # noqa: F811
    r = client.post("/offers", json=serving_models.offers_request(n=50))
    assert r.status_code == 200, r.text
    assert float(r.headers["x-model-ms"]) == pytest.approx(r.json()["model_ms"], abs=1e-3)
    r = client.post("/offers_batch", json=[serving_models.offers_request(n=5), serving_models.offers_request(n=8)])
    assert r.status_code == 200 and len(r.json()) == 2


def test_api_key_required_when_configured(client, serving_models, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OFFERLAB_API_KEY", "s3cret")
    body = serving_models.offers_request(n=5)
    assert client.post("/offers", json=body).status_code == 401
    assert client.post("/offers", json=body, headers={"x-api-key": "wrong"}).status_code == 401
    assert client.post("/offers", json=body, headers={"x-api-key": "s3cret"}).status_code == 200
    assert client.post("/offers", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/readyz").status_code == 200  # probes stay open


def test_readyz_false_until_the_model_is_loaded(serving_models, client, monkeypatch, tmp_path):  # noqa: F811
    """A service whose model cannot load stays not-ready and answers 503 (ServiceUnavailable), never a 500."""
    from bentoml.exceptions import ServiceUnavailable
    from serving.service import Timing

    assert client.get("/readyz").status_code == 200  # loaded champions
    missing = tmp_path / "no-such-model"
    monkeypatch.setenv("OFFERLAB_TIMING_MODEL", str(missing))
    svc = Timing()
    assert not svc.__is_ready__()  # not before the background load has finished...
    assert not svc.wait_ready(120)  # ...nor after it failed
    assert f"{missing} failed to load" in svc.error
    with pytest.raises(ServiceUnavailable, match="failed to load"):
        svc.predict([TimingRequest(customer_id="a", history=serving_models.history(n=3))])


def _asgi_call(app, path: str = "/offers", client=("127.0.0.1", 1), headers=()) -> tuple[int, dict, bytes]:
    import asyncio

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "client": client, "headers": list(headers), "method": "POST"}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_batcher_overload_is_a_clear_503_not_a_500():
    """A request the batcher cancelled, a handler's `Overloaded` and BentoML's own 503 all become one clear 503."""
    import asyncio

    from offerlab.serving.app import Overloaded, OverloadMiddleware

    async def cancelled(scope, receive, send):  # what awaiting a future the batcher cancelled raises
        raise asyncio.CancelledError

    async def overloaded(scope, receive, send):
        raise Overloaded

    async def bento_503(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error": "An unexpected error has occurred"}'})

    for app in (cancelled, overloaded, bento_503):
        status, headers, body = _asgi_call(OverloadMiddleware(app))
        assert status == 503 and headers[b"retry-after"] == b"1"
        assert b"batch queue is full" in body and b"unexpected" not in body


def test_api_key_middleware_exempts_only_unix_socket_peers(monkeypatch):
    from offerlab.serving.app import ApiKeyMiddleware

    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    monkeypatch.setenv("OFFERLAB_API_KEY", "k")
    app = ApiKeyMiddleware(ok)
    assert _asgi_call(app)[0] == 401
    assert _asgi_call(app, headers=[(b"authorization", b"Bearer k")])[0] == 200
    assert _asgi_call(app, client=None)[0] == 200  # a dependency call from `bentoml serve` over its Unix socket
    assert _asgi_call(app, path="/readyz")[0] == 200


@pytest.mark.parametrize("error", ["ServerDisconnectedError", "ClientOSError"])
def test_a_dependency_link_closed_under_a_call_is_retried_once(error):
    """The dependency's server drops idle keep-alive links; the call that reuses one fails with a connection
    error (disconnected, or reset when the close crosses the request) and is repeated once; twice: raised."""
    import asyncio

    import aiohttp
    from serving.service import _call

    class Dep:
        def __init__(self, failures: int):
            self.failures, self.calls = failures, 0
            self.to_async = self

        async def predict(self, requests):
            self.calls += 1
            if self.calls <= self.failures:
                raise getattr(aiohttp, error)()
            return [r * 2 for r in requests]

    once = Dep(failures=1)
    assert asyncio.run(_call(once, [1, 2])) == [2, 4] and once.calls == 2
    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(_call(Dep(failures=2), [1]))
