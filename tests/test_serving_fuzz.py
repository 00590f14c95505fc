"""Schemathesis's own command line, every check, against `bentoml serve` on loopback: no finding may remain.

What a user runs (README, "Serving and batch scoring"): `st run http://127.0.0.1:PORT/docs.json -c all`. Here with
its examples, coverage and fuzzing phases, bounded in cases per operation and in time, a fixed seed, the API key
set (so the spec declares it and `ignored_auth` has something to check), and every schemathesis warning turned into
a failure (a spec whose generated requests the service mostly refuses warns `low_valid_rate`). The run fails on
any finding; the server's log must hold no traceback and no value from a refused body. The contract's cross-field
rules on returns and repayments, which JSON Schema cannot state, are kept by `schemathesis_hooks.py` (a return names a
purchase of the request, on or after it, within its amount; an instalment is due and paid on or after its issue).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from served import stop
from serving_models import serving_models  # noqa: F401
from test_serving_http import free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
# cases per operation and phase, and the CLI's time bound (fuzzing stops there): OffersLocal is the deployment the
# README runs it on; Offers (three services behind bentoml.depends) gets a smaller run
BOUNDS = {"OffersLocal": (25, 90), "Offers": (8, 30)}
SEED = 21
KEY = "fuzz-k3y"


def _config(folder: Path) -> Path:
    """A schemathesis.toml that displays every warning and fails the run on any of them."""
    from schemathesis.core.warnings import SchemathesisWarning

    names = ", ".join(f'"{w.value}"' for w in SchemathesisWarning)
    path = folder / "schemathesis.toml"
    path.write_text(f"[warnings]\ndisplay = [{names}]\nfail-on = true\n")
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("service", list(BOUNDS))
def test_schemathesis_every_check_finds_nothing(serving_models, tmp_path, service):  # noqa: F811
    max_examples, max_time = BOUNDS[service]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": serving_models.tracking_uri, "OFFERLAB_API_KEY": KEY,
           "BENTOML_HOME": str(tmp_path / "bentoml"), "OFFERLAB_MAX_LATENCY_MS": "60000",
           "OFFERLAB_TIMING_SAMPLES": "8"}  # a generous batcher deadline: crashes are looked for, not load shedding
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", f"serving.service:{service}",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, proc)
        st = Path(sys.executable).with_name("st")
        cmd = [str(st), "--config-file", str(_config(tmp_path)), "run", f"{url}/docs.json", "-c", "all",
               "--phases", "examples,coverage,fuzzing", "--max-examples", str(max_examples),
               "--max-time", str(max_time), "--seed", str(SEED), "--request-timeout", "60",
               "-H", f"x-api-key: {KEY}", "--report", "ndjson", "--report-dir", str(tmp_path / "report"),
               "--no-color"]
        hooks = {**os.environ, "SCHEMATHESIS_HOOKS": str(REPO / "tests" / "schemathesis_hooks.py")}  # cross-field
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=max_time + 240, env=hooks)
        out = run.stdout + run.stderr
        counts = re.search(r"(\d+) generated, (\d+) passed", out)
        summary = {"service": service, "returncode": run.returncode, "seed": SEED, "max_examples": max_examples,
                   "generated": int(counts.group(1)) if counts else None,
                   "passed": int(counts.group(2)) if counts else None}
        print(json.dumps(summary))
        assert run.returncode == 0 and "No issues found" in out, out[-6000:]
        assert counts and summary["generated"] >= 6 * 10 and summary["passed"] == summary["generated"], out[-3000:]
        assert "Selected: 6/6" in out and "Tested: 6" in out  # /offers, /offers_batch and the four health paths
    finally:
        stop(proc, log)
    served = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in served and "input_value" not in served, served[-3000:]
