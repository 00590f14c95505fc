"""A short, bounded locust run against `bentoml serve`: figures come out and nothing answers 5xx."""

from __future__ import annotations

import json

import pytest

from offerlab.serving.loadtest import load_test, percentile, table, write_json
from serving_models import serving_models  # noqa: F401

SERVER_ENV = {"OFFERLAB_MAX_LATENCY_MS": "60000", "OFFERLAB_TIMING_SAMPLES": "8"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_short_load_run_has_figures_and_no_5xx(serving_models, tmp_path):  # noqa: F811
    result = load_test(rate=4, duration=6, ramp=(2,), stage_seconds=4, server_env=SERVER_ENV)
    fixed = result["fixed_rate"]
    assert result["history_length"] == 50
    assert fixed["requests"] >= 2
    for stage in (fixed, *result["ramp"]):
        # no server error; a 503 (load shed, or a dependency's link closed twice in a row) is the documented
        # answer under load: at most 1% of a stage (CI's 2-core ramp once saw 1 in 356), with Retry-After
        statuses = stage["non_200"]
        assert not {k for k in statuses if k.startswith("HTTP 5") and k != "HTTP 503"}, stage
        assert statuses.get("HTTP 503", 0) <= 0.01 * stage["requests"], stage
    assert 0 < fixed["p50_ms"] <= fixed["p95_ms"] <= fixed["p99_ms"]
    assert 0 < fixed["model_share_p50"] <= 1.0  # the server's model time (x-model-ms) is part of the total
    assert result["peak_throughput_rps"] > 0
    write_json(result, tmp_path / "load.json")
    assert json.loads((tmp_path / "load.json").read_text())["fixed_rate"]["requests"] == fixed["requests"]
    assert "peak throughput" in table(result)


def test_percentiles_from_locust_histogram():
    hist = {"10": 1, "2": 2, "41": 1}  # locust's {rounded ms: count}, keys unsorted strings
    assert percentile(hist, 0.5) == 2.0
    assert percentile(hist, 0.75) == 10.0
    assert percentile(hist, 0.99) == 41.0
