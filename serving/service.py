"""Offerlab's BentoML services: `Timing`, `Discount`, `Credit`, and `Offers`, which composes the three.

Serve everything:      bentoml serve serving.service:Offers     (POST /offers, /offers_batch)
One process, fastest:  bentoml serve serving.service:OffersLocal  (same API; the three models in-process)
Serve one family:      bentoml serve serving.service:Timing     (POST /predict, a list of customers)

Each family service loads its model from the MLflow registry (`offerlab.serving.models.model_uri`) in
a background thread; `/readyz` answers 503 until it is loaded. `predict` is batchable: requests that
arrive together are merged by BentoML's adaptive batcher into one model call, and one request may carry
many customers. `Offers` calls the three concurrently through `bentoml.depends`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
from pathlib import Path

import aiohttp
import bentoml
from bentoml.exceptions import ServiceUnavailable

try:
    import offerlab  # noqa: F401 - installed (pip install -e .)
except ImportError:  # inside a built Bento: the package travels as src/ beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from offerlab.serving.app import ApiKeyMiddleware, Coalescer, JsonBodyMiddleware, Overloaded, OverloadMiddleware
from offerlab.serving.contracts import (
    EXAMPLE_APPLICATION,
    EXAMPLE_ATTRIBUTES,
    EXAMPLE_HISTORY,
    CreditAnswer,
    CreditRequest,
    DiscountAnswer,
    DiscountRequest,
    OffersAnswer,
    OffersRequest,
    TimingAnswer,
    TimingRequest,
)
from offerlab.serving.models import CreditAdapter, TimingAdapter, UpliftAdapter, model_uri

log = logging.getLogger("offerlab.serving")
EXAMPLE_AS_OF = "2024-12-01T00:00:00"  # after the contract's example history
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
        self._loaded = threading.Event()
        threading.Thread(target=self._load, name=f"load-{self.family}", daemon=True).start()

    def _load(self) -> None:
        uri = model_uri(self.family)
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


def _parts(requests: list[OffersRequest]) -> tuple[list, list, list[int], list[CreditRequest]]:
    """The three families' requests of a batch of offers requests (credit only where there is an application)."""
    credit_idx = [i for i, r in enumerate(requests) if r.application is not None]
    credit_reqs = [CreditRequest.model_construct(
        customer_id=requests[i].customer_id, history=requests[i].history, as_of=requests[i].as_of,
        application=requests[i].application) for i in credit_idx]
    return ([r.part(TimingRequest) for r in requests], [r.part(DiscountRequest) for r in requests],
            credit_idx, credit_reqs)


def _joined(requests: list[OffersRequest], timing: list, discount: list, credit_idx: list[int],
            credit: list, combine=max) -> list[OffersAnswer]:
    """Answers per customer; `model_ms` combines the parts' compute (max when they ran in parallel, else sum)."""
    by_index = dict(zip(credit_idx, credit, strict=True))
    out = []
    for i, (r, t, d) in enumerate(zip(requests, timing, discount, strict=True)):
        c = by_index.get(i)
        ms = combine((t.model_ms, d.model_ms, c.model_ms if c else 0.0))
        out.append(OffersAnswer(customer_id=r.customer_id, timing=t, discount=d, credit=c, model_ms=ms))
    return out


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

    def __is_ready__(self) -> bool:
        # served: BentoML's /readyz also polls each dependency's own /readyz; in-process: ask the local instances
        deps = (self.timing, self.discount, self.credit)
        return all(d.__is_ready__() for d in deps if isinstance(d, _ModelService))

    async def _answer(self, requests: list[OffersRequest]) -> list[OffersAnswer]:
        timing, discount, credit_idx, credit_reqs = _parts(requests)
        jobs = [_call(self.timing, timing), _call(self.discount, discount)]
        if credit_reqs:
            jobs.append(_call(self.credit, credit_reqs))
        try:
            results = await asyncio.gather(*jobs)
        except (TimeoutError, ServiceUnavailable, aiohttp.ClientError, OSError) as e:  # a part shed load or its link broke
            log.warning("a dependency could not answer (%s): 503", type(e).__name__)
            raise Overloaded() from e
        return _joined(requests, results[0], results[1], credit_idx, results[2] if credit_reqs else [])

    @bentoml.api
    async def offers(self, request: OffersRequest, /, ctx: bentoml.Context) -> OffersAnswer:
        """All three offers for one customer; header `x-model-ms` = model compute time."""
        return _with_model_ms((await self._answer([request]))[0], ctx)

    @bentoml.api
    async def offers_batch(self, requests: list[OffersRequest], /) -> list[OffersAnswer]:
        """All three offers for many customers in one request (each part goes through the batchers)."""
        return await self._answer(requests) if requests else []


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
        threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        """One made-up call through every model once they are loaded, before `/readyz` says ready.

        Why: the first call pays one-off costs (lazy imports, first torch kernels); without this, the
        first requests after a start waited ~0.4 s. Then the loaded objects are moved out of the garbage
        collector's sight (`gc.freeze`), so its full collections stop walking the models and libraries.
        """
        try:
            if all(p.wait_ready(600.0) for p in self.parts):
                history = [{**p, "category": None} for p in EXAMPLE_HISTORY]
                self._compute([OffersRequest(customer_id="warm-up", history=history, as_of=EXAMPLE_AS_OF,
                                             attributes=EXAMPLE_ATTRIBUTES, application=EXAMPLE_APPLICATION)])
        except Exception as e:  # noqa: BLE001 - a model trained on other fields may refuse the example: still ready
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
        t, d, credit_idx, c = _parts(requests)
        return _joined(requests, timing.predict(t), discount.predict(d), credit_idx,
                       credit.predict(c) if c else [], combine=sum)  # one thread: the parts add up

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
        return _with_model_ms(await self.batcher.submit(request), ctx)

    @bentoml.api
    async def offers_batch(self, requests: list[OffersRequest], /) -> list[OffersAnswer]:
        """All three offers for many customers in one request (one model call per family)."""
        await self._until_ready()
        return await asyncio.to_thread(self._compute, requests) if requests else []


for _svc in (Timing, Discount, Credit, Offers, OffersLocal):
    _svc.add_asgi_middleware(OverloadMiddleware)  # the first added is the outermost (Starlette order)
    _svc.add_asgi_middleware(ApiKeyMiddleware)
    _svc.add_asgi_middleware(JsonBodyMiddleware)

from offerlab.serving.ui import mount_ui  # noqa: E402 - the page mounts on the services defined above

for _svc in (Offers, OffersLocal):
    mount_ui(_svc)  # GET /ui/: one customer's offers with pictures; the page asks the public /offers
