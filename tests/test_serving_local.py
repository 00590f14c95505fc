"""`OffersLocal` (the three models in one process) answers like `Offers`; its coalescer batches and isolates errors."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from offerlab.serving.app import Coalescer, Overloaded
from offerlab.serving.contracts import OffersRequest
from serving_models import serving_models  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_coalescer_merges_concurrent_calls_and_isolates_a_bad_one():
    batches: list[list[int]] = []
    gate = threading.Event()

    def fn(items: list[int]) -> list[int]:
        batches.append(list(items))
        gate.wait(5)  # the first call holds the worker until everyone has queued
        if -1 in items:
            raise ValueError("bad item -1")
        return [10 * i for i in items]

    async def main():
        c = Coalescer(fn, max_batch=4, max_queue=6)
        first = asyncio.ensure_future(c.submit(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(c.submit(i)) for i in (1, 2, -1, 4, 5, 6)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):  # 6 waiting = max_queue
            await c.submit(7)
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    out = asyncio.run(main())
    assert out[0] == 0 and out[1:3] == [10, 20] and out[4:] == [40, 50, 60]
    assert isinstance(out[3], ValueError) and "bad item -1" in str(out[3])
    # one alone (idle: no waiting), then the queued ones in batches of <= 4; the failed batch retried one by one
    assert batches[0] == [0] and batches[1] == [1, 2, -1, 4] and [1] in batches[2:] and batches[-1] == [5, 6]


@pytest.fixture(scope="module")
def local(serving_models):  # noqa: F811
    from serving.service import OffersLocal

    svc = OffersLocal()
    assert svc.wait_ready(120)
    return svc


def test_local_offers_equal_the_composed_offers(local, serving_models):  # noqa: F811
    from serving.service import Offers

    composed = Offers()
    for dep in (composed.timing, composed.discount, composed.credit):
        assert dep.wait_ready(120)
    reqs = [OffersRequest.model_validate(serving_models.offers_request(n=k)) for k in (1, 50)]
    reqs[0].application = None  # no application: no credit part

    async def both():
        return await asyncio.gather(*(local.batcher.submit(r) for r in reqs)), await composed._answer(reqs)

    got, want = asyncio.run(both())
    drop = {"model_ms": True, "timing": {"model_ms"}, "discount": {"model_ms"}, "credit": {"model_ms"}}
    assert [a.model_dump(exclude=drop) for a in got] == [a.model_dump(exclude=drop) for a in want]
    assert got[0].credit is None and got[1].credit is not None


def test_local_bad_request_fails_alone_naming_the_field(local, serving_models):  # noqa: F811
    """Served, the ValidationError is a 400 naming the field (tests/test_serving_http.py covers it over HTTP)."""
    from pydantic import ValidationError

    body = serving_models.offers_request(n=50)
    good = OffersRequest.model_validate(body)
    bad = OffersRequest.model_validate({**body, "history": [{**body["history"][0], "category": "no-such-category"}]})

    async def together():
        return await asyncio.gather(*(local.batcher.submit(r) for r in (good, bad, good)), return_exceptions=True)

    out = asyncio.run(together())
    assert out[0].credit is not None and out[2].customer_id == "c-test"
    assert isinstance(out[1], ValidationError) and "category" in str(out[1])


def test_empty_batch_is_an_empty_answer(local):
    assert asyncio.run(local.offers_batch([])) == []


def test_a_call_reaching_a_worker_still_loading_waits_for_its_models(serving_models, monkeypatch):  # noqa: F811
    """Several workers share a port, so /readyz may come from a ready one while this one still loads:
    its calls are held until the models are there (CI once saw a 503 here), and past the wait a 503."""
    import serving.service as service
    from serving.service import OffersLocal, Timing

    gate = threading.Event()
    load = Timing.inner.loader

    def slow_load(uri):
        gate.wait(30)
        return load(uri)

    monkeypatch.setattr(Timing.inner, "loader", staticmethod(slow_load))
    svc = OffersLocal()
    req = OffersRequest.model_validate(serving_models.offers_request(n=5))

    async def call_while_loading():
        monkeypatch.setattr(service, "READY_WAIT_S", 0.2)
        with pytest.raises(Overloaded):  # the wait is bounded: a clear 503 (OverloadMiddleware), not a hang
            await svc.offers_batch([req])
        monkeypatch.setattr(service, "READY_WAIT_S", 60.0)
        pending = asyncio.ensure_future(svc.offers_batch([req]))
        await asyncio.sleep(0.3)
        assert not pending.done() and not svc.__is_ready__()
        gate.set()
        return await pending

    (answer,) = asyncio.run(call_while_loading())
    assert answer.customer_id == "c-test" and answer.credit is not None and svc.__is_ready__()
