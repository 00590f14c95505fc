"""`bentoml serve` for real: `Offers` (with its three dependencies) and `OffersLocal` over loopback HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from served import stop, wait_for
from serving_models import serving_models  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Poll /readyz until 200 (models loaded in every service), failing fast if the server died."""
    wait_for(url, "/readyz", proc, timeout)


@pytest.mark.slow
@pytest.mark.parametrize("service", ["Offers", "OffersLocal"])
def test_bentoml_serve_offers_over_http(serving_models, tmp_path, service):  # noqa: F811
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": serving_models.tracking_uri, "OFFERLAB_API_KEY": "k3y",
           "BENTOML_HOME": str(tmp_path / "bentoml")}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", f"serving.service:{service}",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, proc)
        body = serving_models.offers_request(n=50)
        key = {"x-api-key": "k3y"}
        assert httpx.post(f"{url}/offers", json=body, timeout=30).status_code == 401
        r = httpx.post(f"{url}/offers", json=body, headers=key, timeout=30)
        assert r.status_code == 200, r.text
        ans = r.json()
        assert ans["customer_id"] == "c-test" and ans["credit"]["decision"] in ("approve", "decline")
        assert 0 <= ans["timing"]["p_buy_30d"] <= 1 and float(r.headers["x-model-ms"]) > 0
        bad = {**body, "history": [{**body["history"][0], "amount": -1.0}, *body["history"][1:]]}
        r = httpx.post(f"{url}/offers", json=bad, headers=key, timeout=30)
        assert r.status_code == 400 and "history" in r.text and "amount" in r.text
        unknown = {**body, "history": [{**body["history"][0], "category": "no-such-category"}]}
        r = httpx.post(f"{url}/offers", json=unknown, headers=key, timeout=30)
        assert r.status_code == 400 and "category" in r.text, r.text
        r = httpx.post(f"{url}/offers_batch", content=b"\x00", headers={**key, "content-type": "application/json"},
                       timeout=30)
        assert r.status_code == 400 and "not valid JSON" in r.text, r.text
        docs = httpx.get(f"{url}/docs.json", timeout=30).json()  # the loaded models' contract, its example valid
        assert docs["info"]["x-offerlab-models"]["uplift"]["version"] == serving_models.versions["uplift"]
        example = docs["paths"]["/offers"]["post"]["requestBody"]["content"]["application/json"]["example"]
        r = httpx.post(f"{url}/offers", json=example, headers=key, timeout=30)
        assert r.status_code == 200 and r.json()["purchases_used"] == len(example["history"]), r.text
        log.flush()
        served = (tmp_path / "serve.log").read_text()
        assert "c-test" not in served  # no raw customer id in the logs
    finally:
        stop(proc, log)
