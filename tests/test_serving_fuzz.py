"""Fuzz the running `/offers` service from its own OpenAPI spec (schemathesis): no input may give a 5xx."""

from __future__ import annotations

import json

import pytest

from offerlab.serving.loadtest import bento_server
from serving_models import serving_models  # noqa: F401

EXAMPLES = 8  # per operation and generation mode: bounded so the test stays well under 90 s on 2 busy cores
# a generous batcher deadline: here we look for crashes, not for load shedding (the load test measures that)
SERVER_ENV = {"OFFERLAB_MAX_LATENCY_MS": "60000", "OFFERLAB_TIMING_SAMPLES": "8"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_5xx_on_generated_requests(serving_models):  # noqa: F811
    import schemathesis

    problems: list[str] = []
    calls = {"n": 0}
    with bento_server(env=SERVER_ENV) as url:
        schema = schemathesis.openapi.from_url(f"{url}/docs.json")
        operations = [r.ok() for r in schema.get_all_operations()]
        labels = {op.label for op in operations}
        assert {"POST /offers", "POST /offers_batch"} <= labels, labels
        for op in operations:
            for mode in schemathesis.GenerationMode:
                _fuzz(op, mode, url, problems, calls)
    assert calls["n"] >= len(operations)
    assert problems == [], "\n".join(problems[:10])


def _fuzz(op, mode, url: str, problems: list[str], calls: dict) -> None:
    """Up to EXAMPLES generated requests for one operation; every 5xx is recorded, not raised."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(mode))
    def check(case) -> None:
        r = case.call(base_url=url, timeout=60)
        calls["n"] += 1
        if r.status_code >= 500:
            body = json.dumps(case.body, default=str)[:200] if isinstance(case.body, list | dict) else repr(case.body)
            problems.append(f"{op.label} body={body} [{mode.value}] -> {r.status_code}: {r.text[:200]}")

    try:
        check()
    except Unsatisfiable:  # e.g. no invalid request exists for an operation without parameters
        pass
