"""Locust user for `/offers` (driven by `python -m offerlab.serving.loadtest`; settings via environment).

OFFERLAB_LOAD_BODY: JSON file with one OffersRequest. OFFERLAB_LOAD_USER_RATE: requests/s per user
(0 = closed loop, next request as soon as the answer arrives). OFFERLAB_LOAD_MAX_REQUESTS: stop after this
many (0 = only the time limit). OFFERLAB_API_KEY: sent as x-api-key when set. The server's model compute
time (header x-model-ms) is recorded as an entry of type MODEL, so its percentiles sit beside the totals;
every non-200 answer also counts under type STATUS, name `HTTP <code>`, and every 200 under type OK
(its latency, so the 200s' percentiles are not flattered by fast 503 refusals).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

from locust import FastHttpUser, constant, constant_throughput, events, task

BODY = json.loads(Path(os.environ["OFFERLAB_LOAD_BODY"]).read_text())
USER_RATE = float(os.environ.get("OFFERLAB_LOAD_USER_RATE", "0"))
MAX_REQUESTS = int(os.environ.get("OFFERLAB_LOAD_MAX_REQUESTS", "0"))
HEADERS = {"x-api-key": os.environ["OFFERLAB_API_KEY"]} if os.environ.get("OFFERLAB_API_KEY") else {}
SENT = itertools.count(1)


class OffersUser(FastHttpUser):
    wait_time = constant_throughput(USER_RATE) if USER_RATE > 0 else constant(0)

    @task
    def offers(self) -> None:
        if MAX_REQUESTS and next(SENT) > MAX_REQUESTS:
            self.environment.runner.quit()
            return
        t0 = time.perf_counter()
        with self.client.post("/offers", json=BODY, headers=HEADERS, catch_response=True, name="/offers") as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                events.request.fire(request_type="STATUS", name=f"HTTP {r.status_code}", response_time=0,
                                    response_length=0, exception=None, context={})
            else:  # answered: its latency apart from fast refusals, and the server's model time
                events.request.fire(request_type="OK", name="/offers 200", response_time=(time.perf_counter() - t0) * 1e3,
                                    response_length=0, exception=None, context={})
            if r.status_code == 200 and r.headers.get("x-model-ms"):
                events.request.fire(request_type="MODEL", name="/offers model", response_time=float(r.headers["x-model-ms"]),
                                    response_length=0, exception=None, context={})
