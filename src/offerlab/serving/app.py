"""ASGI pieces every Offerlab service wears: API-key check, the contract's HTTP side, a clear 503 under load.

- `ApiKeyMiddleware`: when `OFFERLAB_API_KEY` is set, a request must carry it as `x-api-key: KEY` or
  `Authorization: Bearer KEY`, else 401. Health and docs paths stay open (probes, the OpenAPI page),
  and so do calls over a Unix socket: that is how `bentoml serve` connects a service to the services it
  `depends` on, and only local processes can reach it.
- `OverloadMiddleware`: BentoML's adaptive batcher drops requests it cannot serve within
  `max_latency_ms` by cancelling them, which surfaced as a bare 500; here it becomes a 503 with
  `Retry-After` and a message saying what happened.
- `ContractMiddleware`: methods (405), content types (415), body size (413), JSON (400) and, where the service
  has one, the loaded models' contract (400) and its spec at `/docs.json`.

Every 400 is counted by refused field on `/metrics` (`offerlab_refusals_total`, see `offerlab.monitor.metrics`)
and, with a decision log configured, recorded there with its fields only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os

log = logging.getLogger(__name__)
API_KEY_ENV = "OFFERLAB_API_KEY"
OPEN_PATHS = ("/readyz", "/livez", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json", "/",
              "/ui", "/ui/")  # the offers page (static, no data; its calls carry the key the user types)


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key a request carries in `x-api-key` or `Authorization: Bearer ...`, if any."""
    h = {k.decode().lower(): v.decode() for k, v in headers}
    if "x-api-key" in h:
        return h["x-api-key"]
    auth = h.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


class ApiKeyMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        key = os.environ.get(API_KEY_ENV)
        if (scope["type"] != "http" or not key or scope.get("client") is None
                or scope.get("path", "/") in OPEN_PATHS or scope.get("path", "").startswith("/docs")):
            return await self.app(scope, receive, send)
        given = presented_key(scope.get("headers", []))
        if given is None or not hmac.compare_digest(given.encode(), key.encode()):
            return await _send_json(send, 401, {"error": "missing or wrong API key: send it as 'x-api-key: KEY' "
                                                         "or 'Authorization: Bearer KEY'"},
                                    [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


MAX_BODY_ENV = "OFFERLAB_MAX_BODY_BYTES"
DEFAULT_MAX_BODY = 16 << 20  # 16 MiB: a batch of ~250 customers with the longest histories
HEALTH_PATHS = ("/readyz", "/livez", "/healthz", "/metrics")
SPEC_PATH = "/docs.json"


def max_body_bytes() -> int:
    """Largest request body accepted (env `OFFERLAB_MAX_BODY_BYTES`, default 16 MiB)."""
    return int(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY))


class ContractMiddleware:
    """The HTTP side of the contract, before BentoML sees a request (whose own decoder answered some of these
    with a bare 500, and logs every refused body with the values in it):

    - a method a declared path does not list: 405 with `Allow` (BentoML's routes are POST-only or GET-only);
    - a POST to an API whose body is not `application/json` (or whose content type is malformed): 415;
    - a body over `OFFERLAB_MAX_BODY_BYTES`: 413 naming the limit; a body that is not JSON: 400;
    - with a contract for the service (`offerlab.serving.openapi`: the loaded models' request models), a body
      that breaks it: 400 naming every refused field (`InvalidRequest`), logged as a count and the error
      kinds only, never a value; and `GET /docs.json` answers that contract's spec (503 until the models load).

    A valid body is replayed unchanged. `apis` are the service's API names (`POST /<name>`).
    """

    def __init__(self, app, service: str = "", apis: tuple[str, ...] = ()):
        self.app, self.service = app, service
        self.routes: dict[str, tuple[str, ...]] = {f"/{a}": ("POST",) for a in apis}
        self.routes.update({p: ("GET", "HEAD") for p in HEALTH_PATHS})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from offerlab.serving import openapi

        path, method = scope.get("path", "/"), scope.get("method", "GET")
        if path == SPEC_PATH and method in ("GET", "HEAD") and openapi.has_contract(self.service):
            return await self._spec(send, await openapi.contract_of(self.service))
        allowed = self.routes.get(path)
        if allowed is None:
            return await self.app(scope, receive, send)
        if method not in allowed:
            declared = ", ".join(m for m in allowed if m != "HEAD")
            return await _send_json(send, 405, {"error": f"method {method} is not allowed on {path}; use {declared}"},
                                    [(b"allow", ", ".join(allowed).encode())])
        if method != "POST" or scope.get("client") is None:  # no client: `bentoml serve`'s own dependency calls
            return await self.app(scope, receive, send)   # over its Unix socket (pickled bodies)
        headers = dict(scope.get("headers", []))
        ctype = headers.get(b"content-type", b"application/json").decode("latin-1")
        if not _is_json(ctype):
            return await _send_json(send, 415, {"error": f"unsupported content type {ctype[:80]!r}: send the body "
                                                         "as application/json"})
        limit = max_body_bytes()
        declared_length = headers.get(b"content-length", b"")
        if declared_length.isdigit() and int(declared_length) > limit:
            return await _too_large(send, limit)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _too_large(send, limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = await self._refusal(path, body)
        if refusal is not None:
            return await _send_json(send, *refusal)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refusal(self, path: str, body: bytes) -> tuple[int, dict] | None:
        """(status, answer) for a body the service refuses before it reaches BentoML, else None."""
        from offerlab.monitor.records import log_refusal
        from offerlab.serving import openapi

        try:
            json.loads(body)
        except ValueError as e:
            log_refusal(self.service, [{"loc": ["body"]}])  # Prometheus, by field; the decision log, no values
            return 400, {"error": "request body is not valid JSON",
                         "detail": [{"loc": ["body"], "msg": str(e)[:200], "type": "json_invalid"}]}
        if not openapi.has_contract(self.service):
            return None
        contract = await openapi.contract_of(self.service)
        if contract is None:
            return 503, {"error": UNAVAILABLE}
        refused = contract.refusal(path.lstrip("/"), body)
        if refused is None:
            return None
        log_refusal(self.service, refused["detail"])
        kinds = sorted({d["type"] for d in refused["detail"]})
        log.info("%s refused: %d field(s) break the contract (%s)", path, len(refused["detail"]), ", ".join(kinds))
        return 400, refused

    async def _spec(self, send, contract) -> None:
        if contract is None:
            return await _send_json(send, 503, {"error": "the spec describes the loaded models, which are not "
                                                         "loaded yet (see /readyz); retry shortly"},
                                    [(b"retry-after", b"1")])
        payload = contract.spec_json(api_key=bool(os.environ.get(API_KEY_ENV)), max_body=max_body_bytes())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _is_json(ctype: str) -> bool:
    """`application/json`, with parameters or none (an absent header counts as JSON)."""
    media = ctype.split(";")[0].strip().lower()
    return media in ("application/json", "")


async def _too_large(send, limit: int) -> None:
    await _send_json(send, 413, {"error": f"request body is over the limit of {limit} bytes ({MAX_BODY_ENV})",
                                 "limit_bytes": limit})


UNAVAILABLE = ("service unavailable: the batch queue is full (requests would wait longer than max_latency_ms) "
               "or a model is not loaded yet (see /readyz); retry shortly")


class Overloaded(asyncio.CancelledError):
    """Raised by a handler to answer 503 with `UNAVAILABLE`: a CancelledError, so BentoML's handler (which turns
    every Exception into a bare 500) lets it through to `OverloadMiddleware`."""


class OverloadMiddleware:
    """503 with a clear message and Retry-After for: a request the batcher cancelled, `Overloaded`, and
    BentoML's own 503s (its dispatcher's "process is overloaded", sent as a generic error text)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "/") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        started = replaced = False

        async def rewriting_send(message):
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
                if message["status"] == 503:
                    replaced = True
                    return await _unavailable(send)
            await send(message)

        try:
            await self.app(scope, receive, rewriting_send)
        except asyncio.CancelledError as e:
            task = asyncio.current_task()
            if started or (not isinstance(e, Overloaded) and task is not None and task.cancelling()):
                raise  # the client went away or the server is shutting down: nothing to answer
            log.warning("request shed under load: answered 503")
            await _unavailable(send)


async def _unavailable(send) -> None:
    await _send_json(send, 503, {"error": UNAVAILABLE}, [(b"retry-after", b"1")])


class Coalescer:
    """Merges concurrent single-item calls into batches for a sync batch function run in a worker thread.

    Why: adaptive batching without a wait. An idle coalescer runs a call at once (no batching window to
    pay); while a batch computes, new calls gather and go together as the next batch (at most
    `max_batch`), so batch size grows with load. More than `max_queue` waiting calls: `Overloaded` (503).
    A failed batch is retried item by item, so one bad request (e.g. an unknown category) fails alone.
    """

    def __init__(self, fn, max_batch: int = 64, max_queue: int | None = None):
        self.fn, self.max_batch = fn, max_batch
        self.max_queue = max_queue if max_queue is not None else int(os.environ.get("OFFERLAB_MAX_QUEUE", 512))
        self.pending: list[tuple[object, asyncio.Future]] = []
        self.running = False
        self._task: asyncio.Task | None = None

    async def submit(self, item):
        if len(self.pending) >= self.max_queue:
            log.warning("coalescer queue full (%d waiting): answered 503", len(self.pending))
            raise Overloaded()
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((item, fut))
        if not self.running:
            self.running = True
            self._task = asyncio.get_running_loop().create_task(self._drain())  # held: the loop keeps weak refs
        return await fut

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch:]
                await self._run([item for item, _ in batch], [fut for _, fut in batch])
        finally:
            self.running = False

    async def _run(self, items: list, futures: list[asyncio.Future]) -> None:
        try:
            results = await asyncio.to_thread(self.fn, items)
        except Exception as e:  # noqa: BLE001 - delivered to the callers, never lost
            if len(items) > 1:
                for item, fut in zip(items, futures, strict=True):
                    await self._run([item], [fut])
                return
            results, error = None, e
        for i, fut in enumerate(futures):
            if fut.done():  # the caller went away
                continue
            if results is None:
                fut.set_exception(error)
            else:
                fut.set_result(results[i])
