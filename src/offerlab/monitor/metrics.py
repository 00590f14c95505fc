"""Prometheus counters the services add to BentoML's own `/metrics` (request counts and latency per endpoint).

- `offerlab_refusals_total{service, field}`: requests answered 400, by refused field (the field's path with
  list positions dropped, e.g. `history.amount`, `attributes.region`; `body` for a body that is not JSON).
- `offerlab_decision_log_dropped_total{reason}`: decision records lost: `overflow` (the bounded queue was
  full) or `sink` (the sink was down or refused the batch).
- `offerlab_decision_log_written_total`: records written.

Plain `prometheus_client` objects (BentoML 1.4 deprecates `bentoml.metrics` for it): under `bentoml serve`,
`PROMETHEUS_MULTIPROC_DIR` is set before the service module is imported, so these are multiprocess counters
that BentoML's `/metrics` collects with its own.
"""

from __future__ import annotations

from prometheus_client import Counter

REFUSALS = Counter("offerlab_refusals", "Requests refused (400), by service and refused field",
                   ["service", "field"])
DECISION_LOG_DROPPED = Counter("offerlab_decision_log_dropped", "Decision-log records dropped, by reason",
                               ["reason"])
DECISION_LOG_WRITTEN = Counter("offerlab_decision_log_written", "Decision-log records written")


def field_name(loc: list | tuple) -> str:
    """A refused field's path without list positions (bounded label values): ["history", 3, "amount"] ->
    "history.amount"."""
    parts = [str(p) for p in loc if not isinstance(p, int) and not str(p).isdigit()]
    return ".".join(parts) or "body"


def count_refusal(service: str, detail: list[dict]) -> list[str]:
    """Count one refused request under each distinct field it broke; returns those fields (sorted)."""
    fields = sorted({field_name(d.get("loc", ())) for d in detail}) or ["body"]
    for f in fields:
        REFUSALS.labels(service=service, field=f).inc()
    return fields


def count_drop(reason: str, n: int) -> None:
    DECISION_LOG_DROPPED.labels(reason=reason).inc(n)


def count_written(n: int) -> None:
    DECISION_LOG_WRITTEN.inc(n)
