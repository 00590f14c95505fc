"""Offerlab's BentoML services: `Timing`, `Discount`, `Credit`, and `Offers`, which composes the three.

Serve everything:      bentoml serve serving.service:Offers     (POST /offers, /offers_batch)
One process, fastest:  bentoml serve serving.service:OffersLocal  (same API; the three models in-process)
Serve one family:      bentoml serve serving.service:Timing     (POST /predict, a list of customers)

Each family service loads its model from the MLflow registry (`offerlab.serving.models.model_uri`) in
a background thread; `/readyz` answers 503 until it is loaded. `predict` is batchable: requests that
arrive together are merged by BentoML's adaptive batcher into one model call, and one request may carry
many customers. `Offers` calls the three concurrently through `bentoml.depends`.

The /offers contract is the loaded models' (`offerlab.serving.openapi`): `Offers` and `OffersLocal` validate every
body with request models built from the champions' needs and serve the spec of exactly those at `/docs.json`.
Extra ASGI routes (a page, say) mount on both with `Offers.mount_asgi_app(app, path=...)` and the same for
`OffersLocal`, after the middleware block at the end of this file; they pass through the middleware untouched
unless their paths are also declared here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bentoml
from bentoml.exceptions import ServiceUnavailable

try:
    import offerlab  # noqa: F401 - installed (pip install -e .)
except ImportError:  # inside a built Bento: the package travels as src/ beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pydantic import ValidationError
from starlette.responses import JSONResponse

from offerlab.monitor import records as decision_records
from offerlab.monitor.decision_log import process_log, utc_now
from offerlab.serving import openapi
from offerlab.serving.app import ApiKeyMiddleware, Coalescer, ContractMiddleware, Overloaded, OverloadMiddleware
from offerlab.serving.basket import winback_offer
from offerlab.serving.contracts import (
    CreditAnswer,
    CreditRequest,
    DiscountAnswer,
    DiscountRequest,
    OffersAnswer,
    OffersRequest,
    TimingAnswer,
    TimingRequest,
    invalid_body,
)
from offerlab.serving.models import CreditAdapter, TimingAdapter, UpliftAdapter, model_uri

log = logging.getLogger("offerlab.serving")
MAX_BATCH = int(os.environ.get("OFFERLAB_MAX_BATCH", 64))
MAX_LATENCY_MS = int(os.environ.get("OFFERLAB_MAX_LATENCY_MS", 1000))
BATCH = {"batchable": True, "max_batch_size": MAX_BATCH, "max_latency_ms": MAX_LATENCY_MS}
SERVICE = {"workers": 1, "traffic": {"timeout": 30}}
# how long a call that reaches a worker still loading its models waits for them before a 503: with several
# workers, /readyz is answered by whichever worker gets it, so a ready answer does not mean every worker is
READY_WAIT_S = float(os.environ.get("OFFERLAB_READY_WAIT_S", 25))


class _ModelService:
    """Loads one family's adapter in the background; answers 503 until it is there."""

    family: str = ""
    loader = None

    def __init__(self) -> None:
        self.adapter = None
        self.error: str | None = None
        self.uri = model_uri(self.family)
        self._loaded = threading.Event()
        threading.Thread(target=self._load, name=f"load-{self.family}", daemon=True).start()

    def _load(self) -> None:
        uri = self.uri
        try:
            import torch

            # one request is small: intra-op threads only contend with the other workers for the cores
            torch.set_num_threads(int(os.environ.get("OFFERLAB_TORCH_THREADS", 1)))
            self.adapter = type(self).loader(uri)
            log.info("%s model loaded: %s (version %s)", self.family, uri, self.adapter.version)
        except Exception as e:  # noqa: BLE001 - reported by readyz and every call, never crashes the worker
            self.error = f"{self.family} model {uri} failed to load: {e}"
            log.error(self.error)
        finally:
            self._loaded.set()

    def __is_ready__(self) -> bool:
        return self.adapter is not None

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until the model is loaded (or failed); True when it is ready. For tests and scripts."""
        self._loaded.wait(timeout)
        return self.adapter is not None

    def _ready_adapter(self):
        if self.adapter is None and not self.wait_ready(READY_WAIT_S):
            raise ServiceUnavailable(self.error or f"the {self.family} model is still loading")
        return self.adapter

    @bentoml.api
    def needs(self) -> dict:
        """What a request must carry for the loaded model, with its URI and version (the /offers contract)."""
        adapter = self._ready_adapter()
        return {**adapter.needs(), "uri": self.uri, "version": str(adapter.version)}


@bentoml.service(name="timing", **SERVICE)
class Timing(_ModelService):
    """When will a customer buy again, and what: purchase probabilities, dates, basket categories."""

    family, loader = "timing", TimingAdapter.load

    @bentoml.api(**BATCH)
    def predict(self, requests: list[TimingRequest], /) -> list[TimingAnswer]:
        return self._ready_adapter().predict(requests)


@bentoml.service(name="discount", **SERVICE)
class Discount(_ModelService):
    """Which discount level, if any, pays for a customer (expected incremental profit per level)."""

    family, loader = "uplift", UpliftAdapter.load

    @bentoml.api(**BATCH)
    def predict(self, requests: list[DiscountRequest], /) -> list[DiscountAnswer]:
        return self._ready_adapter().predict(requests)


@bentoml.service(name="credit", **SERVICE)
class Credit(_ModelService):
    """PD, score, grade, reasons and credit terms for an application."""

    family, loader = "credit", CreditAdapter.load

    @bentoml.api(**BATCH)
    def predict(self, requests: list[CreditRequest], /) -> list[CreditAnswer]:
        return self._ready_adapter().predict(requests)


async def _call_needs(dep) -> dict:
    """A dependency's `needs`: over the wire when served, in a thread when local."""
    if hasattr(dep, "to_async"):
        return await dep.to_async.needs()
    return await asyncio.to_thread(dep.needs)


async def _call(dep, requests: list) -> list:
    """A dependency's batchable `predict`: over the wire when served, in a thread when local (tests).

    One retry when the link was closed under us: after a few idle seconds the dependency's server drops
    its keep-alive connections, and a call that reuses one gets `ServerDisconnectedError`, or
    `ClientOSError` (connection reset) when the close crosses the request (seen as a stray 503 after a
    pause in traffic; both are `ClientConnectionError`). `predict` has no side effects, so repeating it is safe.
    """
    if hasattr(dep, "to_async"):
        try:
            return await dep.to_async.predict(requests)
        except aiohttp.ClientConnectionError as e:
            log.info("dependency link was closed under us (%s); retrying once", type(e).__name__)
            return await dep.to_async.predict(requests)
    return await asyncio.to_thread(dep.predict, requests)


@dataclass
class _Parts:
    """The three families' requests of a batch of offers requests: timing only where a purchase is on or before
    as_of (the others get `timing: null`), credit only where there is an application."""

    timing_idx: list[int]
    timing: list[TimingRequest]
    discount: list[DiscountRequest]
    credit_idx: list[int]
    credit: list[CreditRequest]

    @classmethod
    def of(cls, requests: list[OffersRequest]) -> _Parts:
        # a customer whose every purchase came back has bought nothing: no timing answer (not a refusal)
        timing_idx = [i for i, r in enumerate(requests) if r.net_of_returns().history]
        credit_idx = [i for i, r in enumerate(requests) if r.application is not None]
        return cls(timing_idx, [requests[i].part(TimingRequest) for i in timing_idx],
                   [r.part(DiscountRequest) for r in requests], credit_idx,
                   [requests[i].part(CreditRequest) for i in credit_idx])  # with its returns and repayments

    def joined(self, requests: list[OffersRequest], timing: list, discount: list, credit: list,
               combine=max) -> list[OffersAnswer]:
        """Answers per customer; `model_ms` combines the parts' compute (max when they ran in parallel, else sum)."""
        t_of = dict(zip(self.timing_idx, timing, strict=True))
        c_of = dict(zip(self.credit_idx, credit, strict=True))
        out = []
        for i, (r, d) in enumerate(zip(requests, discount, strict=True)):
            t, c = t_of.get(i), c_of.get(i)
            ms = combine((t.model_ms if t else 0.0, d.model_ms, c.model_ms if c else 0.0))
            out.append(OffersAnswer(customer_id=r.customer_id, timing=t, discount=d, credit=c,
                                    purchases_used=len(r.history), model_ms=ms, winback_offer=winback_offer(t, d)))
        return out


def _refused(e: ValidationError, service: str = "") -> JSONResponse:
    """A request the models refused (a check the contract's request models left to them): 400 naming the field."""
    body = invalid_body(e)
    decision_records.log_refusal(service, body["detail"])  # counted by field; logged without values
    log.info("request refused by a model: %d field(s) (%s)", len(body["detail"]),
             ", ".join(sorted({d["type"] for d in body["detail"]})))
    return JSONResponse(body, status_code=400)


def _log_decisions(service: str, requests: list, answers: list, started, t0: float, parts=None) -> None:
    """Queue the answers on the decision log (`offerlab.monitor`): never waits, never raises."""
    adapters = {p.family: p.adapter for p in parts} if parts else None
    decision_records.log_answers(f"service:{service}", requests, answers, started,
                                 (time.perf_counter() - t0) * 1000.0 / max(len(answers), 1), adapters)


def _with_model_ms(answer: OffersAnswer, ctx: bentoml.Context) -> OffersAnswer:
    ctx.response.headers["x-model-ms"] = f"{answer.model_ms:.3f}"
    return answer


@bentoml.service(name="offers", workers=1, traffic={"timeout": 30})
class Offers:
    """One call per customer: next-purchase reminder and basket, best discount, and credit terms.

    The three parts are separate services (`bentoml.depends`), each with its own adaptive batcher and
    its own processes: they scale apart, at the price of three extra HTTP hops per call (see
    `OffersLocal` for the one-process variant).
    """

    timing = bentoml.depends(Timing)
    discount = bentoml.depends(Discount)
    credit = bentoml.depends(Credit)

    def __init__(self) -> None:
        openapi.register("offers", openapi.CachedContract(self._needs, title="Offerlab offers (Offers)"))
        process_log()  # a decision-log setting that cannot be used stops the start, naming the variable

    def __is_ready__(self) -> bool:
        # served: BentoML's /readyz also polls each dependency's own /readyz; in-process: ask the local instances
        deps = (self.timing, self.discount, self.credit)
        return all(d.__is_ready__() for d in deps if isinstance(d, _ModelService))

    async def _needs(self) -> dict | None:
        """The three families' needs, from the dependencies (over the wire when served), once they are loaded."""
        deps = {"timing": self.timing, "uplift": self.discount, "credit": self.credit}
        deadline = time.monotonic() + READY_WAIT_S
        while True:
            try:
                got = await asyncio.gather(*(_call_needs(d) for d in deps.values()))
                return dict(zip(deps, got, strict=True))
            except Exception as e:  # noqa: BLE001 - a dependency still loading (503) or not up yet: poll again
                if time.monotonic() > deadline:
                    log.warning("the dependencies' needs are not available (%s)", type(e).__name__)
                    return None
                await asyncio.sleep(0.5)

    async def _answer(self, requests: list[OffersRequest]) -> list[OffersAnswer]:
        parts = _Parts.of(requests)
        jobs = [_call(self.discount, parts.discount)]
        if parts.timing:
            jobs.append(_call(self.timing, parts.timing))
        if parts.credit:
            jobs.append(_call(self.credit, parts.credit))
        try:
            results = await asyncio.gather(*jobs)
        except (TimeoutError, ServiceUnavailable, aiohttp.ClientError, OSError) as e:  # a part shed load or its link broke
            log.warning("a dependency could not answer (%s): 503", type(e).__name__)
            raise Overloaded() from e
        discount, rest = results[0], list(results[1:])
        timing = rest.pop(0) if parts.timing else []
        credit = rest.pop(0) if parts.credit else []
        return parts.joined(requests, timing, discount, credit)

    @bentoml.api
    async def offers(self, request: OffersRequest, /, ctx: bentoml.Context) -> OffersAnswer:
        """All three offers for one customer; header `x-model-ms` = model compute time."""
        t0, started = time.perf_counter(), utc_now()
        try:
            answer = (await self._answer([request]))[0]
        except ValidationError as e:
            return _refused(e, "offers")
        _log_decisions("offers", [request], [answer], started, t0)
        return _with_model_ms(answer, ctx)

    @bentoml.api
    async def offers_batch(self, requests: list[OffersRequest], /) -> list[OffersAnswer]:
        """All three offers for many customers in one request (each part goes through the batchers)."""
        t0, started = time.perf_counter(), utc_now()
        try:
            answers = await self._answer(requests) if requests else []
        except ValidationError as e:
            return _refused(e, "offers")
        _log_decisions("offers", requests, answers, started, t0)
        return answers


def _workers() -> int | str:
    """`OFFERLAB_OFFERS_WORKERS` (default: one per CPU; measured: 2 workers on 2 cores ~1.4x one worker's peak)."""
    raw = os.environ.get("OFFERLAB_OFFERS_WORKERS", "cpu_count")
    return raw if raw == "cpu_count" else int(raw)


@bentoml.service(name="offers-local", workers=_workers(), traffic={"timeout": 30})
class OffersLocal:
    """`Offers` with the three models in this process: the low-latency single-box deployment.

    Same API and answers as `Offers`. Why: on a small machine the three HTTP hops of `Offers` (plus
    three more processes sharing the cores) cost more than the models themselves. Concurrent calls
    are merged as they arrive (`Coalescer`: while one batch computes, the next one gathers, so there is
    no waiting when idle) and the three adapters run on the batch in one worker thread.
    """

    def __init__(self) -> None:
        self.parts = (Timing.inner(), Discount.inner(), Credit.inner())
        self.batcher = Coalescer(self._compute, MAX_BATCH)
        self._warm = threading.Event()
        self.contract = openapi.CachedContract(self._needs, title="Offerlab offers (OffersLocal)")
        openapi.register("offers-local", self.contract)
        process_log()  # a decision-log setting that cannot be used stops the start, naming the variable
        threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()

    async def _needs(self) -> dict | None:
        if not await asyncio.to_thread(self.wait_ready, READY_WAIT_S):
            return None
        return {p.family: p.needs() for p in self.parts}

    def _warm_up(self) -> None:
        """One made-up call through every model once they are loaded, before `/readyz` says ready.

        Why: the first call pays one-off costs (lazy imports, first torch kernels); without this, the
        first requests after a start waited ~0.4 s. Then the loaded objects are moved out of the garbage
        collector's sight (`gc.freeze`), so its full collections stop walking the models and libraries.
        """
        try:
            if all(p.wait_ready(600.0) for p in self.parts):
                needs = {p.family: p.needs() for p in self.parts}
                self._compute([OffersRequest.model_validate(openapi.example_request(needs))])  # the spec's example
        except Exception as e:  # noqa: BLE001 - never keeps the service from being ready
            log.info("warm-up call skipped (%s)", type(e).__name__)
        finally:
            gc.collect()
            gc.freeze()
            self._warm.set()

    def __is_ready__(self) -> bool:
        return self._warm.is_set() and all(p.__is_ready__() for p in self.parts)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        return self._warm.wait(timeout) and all(p.wait_ready(timeout) for p in self.parts)

    def _compute(self, requests: list[OffersRequest]) -> list[OffersAnswer]:
        timing, discount, credit = self.parts
        parts = _Parts.of(requests)
        return parts.joined(requests, timing.predict(parts.timing) if parts.timing else [],
                            discount.predict(parts.discount), credit.predict(parts.credit) if parts.credit else [],
                            combine=sum)  # one thread: the parts add up

    async def _until_ready(self) -> None:
        """Hold a call that reached this worker before its models (up to `READY_WAIT_S`), then 503.

        Why: `OffersLocal` runs several worker processes on one port, and `/readyz` is answered by
        whichever worker the connection lands on, so "ready" can come from one while another is still
        loading; a call routed to the late one would otherwise fail though the service said ready.
        """
        if not self.__is_ready__() and not await asyncio.to_thread(self.wait_ready, READY_WAIT_S):
            raise Overloaded()

    @bentoml.api
    async def offers(self, request: OffersRequest, /, ctx: bentoml.Context) -> OffersAnswer:
        """All three offers for one customer; header `x-model-ms` = model compute time."""
        await self._until_ready()
        t0, started = time.perf_counter(), utc_now()
        try:
            answer = await self.batcher.submit(request)
        except ValidationError as e:
            return _refused(e, "offers-local")
        _log_decisions("offers-local", [request], [answer], started, t0, self.parts)
        return _with_model_ms(answer, ctx)

    @bentoml.api
    async def offers_batch(self, requests: list[OffersRequest], /) -> list[OffersAnswer]:
        """All three offers for many customers in one request (one model call per family)."""
        await self._until_ready()
        t0, started = time.perf_counter(), utc_now()
        try:
            answers = await asyncio.to_thread(self._compute, requests) if requests else []
        except ValidationError as e:
            return _refused(e, "offers-local")
        _log_decisions("offers-local", requests, answers, started, t0, self.parts)
        return answers


for _svc in (Timing, Discount, Credit, Offers, OffersLocal):
    _svc.add_asgi_middleware(OverloadMiddleware)  # the first added is the outermost (Starlette order)
    _svc.add_asgi_middleware(ApiKeyMiddleware)
    _svc.add_asgi_middleware(ContractMiddleware, service=_svc.name, apis=tuple(_svc.apis))

from offerlab.serving.ui import mount_ui  # noqa: E402 - the page mounts on the services defined above

for _svc in (Offers, OffersLocal):
    mount_ui(_svc)  # GET /ui/: one customer's offers with pictures; the page asks the public /offers
