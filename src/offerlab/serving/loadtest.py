"""Load test of `/offers`: start `bentoml serve` on a free loopback port, drive it with headless locust.

    python -m offerlab.serving.loadtest --rate 100 --duration 30

(a) a fixed rate (open loop, `constant_throughput` users) for `--duration` seconds -> p50/p95/p99,
throughput, error rate, and the model-compute share (header `x-model-ms`) at p50; (b) a ramp of
closed-loop stages (`--ramp 8,16,32,64` users) -> the peak throughput the adaptive batcher reaches.
Everything stays on 127.0.0.1 and every stage is bounded in time and requests. Figures go to a table on
stdout and to JSON (`experiments/results/serving_load.json`, written whole or not at all).
Models: whatever the registry behind `MLFLOW_TRACKING_URI` holds under the alias (`champion`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
LOCUSTFILE = REPO / "scripts" / "loadtest" / "locustfile.py"
RESULTS = REPO / "experiments" / "results" / "serving_load.json"
APPLICATION = {"requested_amount": 600.0, "income": 42000.0, "term_months": 6, "age": 38, "employment_years": 4.5,
               "housing": "rent", "purpose": "electronics", "existing_credits": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except OSError as e:
        return getattr(e, "code", 0) or 0


@contextmanager
def bento_server(target: str = "serving.service:Offers", port: int | None = None, ready_timeout: float = 240.0,
                 env: dict[str, str] | None = None, log_tail: list[str] | None = None) -> Iterator[str]:
    """`bentoml serve` on 127.0.0.1:<free port> from the repo root; yields the base URL once /readyz is 200.
    `log_tail`, when given, receives the last 6000 characters of the server's log as it stops."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w+", prefix="bentoml-serve-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + ready_timeout
        while _get(f"{url}/readyz") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = Path(log.name).read_text()[-3000:]
                raise RuntimeError(f"bentoml serve {target} not ready after {ready_timeout:.0f}s "
                                   f"(exit {proc.poll()}); log tail:\n{tail}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if log_tail is not None:
            log.flush()
            log_tail.append(Path(log.name).read_text()[-6000:])
        log.close()
        Path(log.name).unlink(missing_ok=True)


def offers_body(n_history: int = 50, seed: int = 0) -> dict:
    """An /offers request for a synthetic customer with an `n_history`-purchase history (no real customer)."""
    from offerlab.data.synth import generate

    d = generate(400, seed=seed)
    tx = d.transactions
    cid = tx["customer_id"].value_counts().index[0]
    rows = tx[tx["customer_id"] == cid].sort_values("timestamp").tail(n_history)
    cust = d.customers.set_index("customer_id").loc[cid]
    history = [{"timestamp": t.isoformat(), "amount": float(a), "category": str(c)}
               for t, a, c in zip(rows["timestamp"], rows["amount"], rows["category"], strict=True)]
    attrs = {k: str(cust[k]) for k in ("region", "age_band", "signup_channel")}
    attrs["acquired_at"] = str(cust["acquired_at"].date())
    return {"customer_id": "load-test", "history": history, "as_of": "2025-01-01T00:00:00", "attributes": attrs,
            "application": APPLICATION}


def percentile(hist: dict[str, int], q: float) -> float:
    """The q-quantile (0..1) of locust's response-time histogram {rounded ms: count}."""
    ms = np.array([float(k) for k in hist])
    counts = np.array(list(hist.values()), dtype=float)
    order = np.argsort(ms)
    cum = np.cumsum(counts[order])
    return float(ms[order][np.searchsorted(cum, q * cum[-1])])


def run_locust(url: str, body: Path, *, users: int, user_rate: float, seconds: float, max_requests: int,
               workdir: Path, name: str) -> dict:
    """One headless locust stage against `url`; returns its figures (latencies in ms)."""
    prefix = workdir / name
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
           "-u", str(users), "-r", str(users), "-t", f"{max(1, round(seconds))}s", "--host", url,
           "--json-file", str(prefix), "--stop-timeout", "5", "--exit-code-on-error", "0", "--loglevel", "WARNING"]
    env = {**os.environ, "OFFERLAB_LOAD_BODY": str(body), "OFFERLAB_LOAD_USER_RATE": str(user_rate),
           "OFFERLAB_LOAD_MAX_REQUESTS": str(max_requests)}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=seconds + 120)
    path = Path(f"{prefix}.json")
    if proc.returncode != 0 or not path.exists():
        raise RuntimeError(f"locust stage {name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    entries = {(e["method"], e["name"]): e for e in json.loads(path.read_text())}
    total = entries.get(("POST", "/offers"))
    if total is None or total["num_requests"] == 0:
        raise RuntimeError(f"locust stage {name} sent no request; stderr: {proc.stderr[-2000:]}")
    n, fails = total["num_requests"], total["num_failures"]
    statuses = {k[1]: e["num_requests"] for k, e in entries.items() if k[0] == "STATUS"}
    span = max(total["last_request_timestamp"] - total["start_time"], 1.0)
    out = {"stage": name, "users": users, "target_rate": round(users * user_rate, 1) if user_rate else None,
           "requests": n, "errors": fails, "errors_5xx": sum(v for k, v in statuses.items() if k.startswith("HTTP 5")),
           "error_rate": round(fails / n, 5), "non_200": statuses, "throughput_rps": round(n / span, 1),
           **{f"p{q}_ms": percentile(total["response_times"], q / 100) for q in (50, 95, 99)}}
    ok, model = entries.get(("OK", "/offers 200")), entries.get(("MODEL", "/offers model"))
    if ok is not None and ok["num_requests"]:
        out.update({"ok_requests": ok["num_requests"], "ok_throughput_rps": round(ok["num_requests"] / span, 1),
                    **{f"ok_p{q}_ms": percentile(ok["response_times"], q / 100) for q in (50, 95, 99)}})
    if model is not None and model["num_requests"] and ok is not None:
        out["model_p50_ms"] = percentile(model["response_times"], 0.5)
        out["model_share_p50"] = round(out["model_p50_ms"] / max(out["ok_p50_ms"], 1e-9), 3)
    return out


def load_test(rate: float = 100.0, duration: float = 30.0, ramp: tuple[int, ...] = (8, 16, 32, 64),
              stage_seconds: float = 10.0, n_history: int = 50, url: str | None = None,
              server_env: dict[str, str] | None = None) -> dict:
    """Fixed-rate stage then the closed-loop ramp, against `url` or a server started here."""
    body = offers_body(n_history)
    server_log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="offerlab-load-") as tmp, \
            (_existing(url) if url else bento_server(env=server_env, log_tail=server_log)) as base:
        work = Path(tmp)
        (work / "body.json").write_text(json.dumps(body))
        users = max(1, math.ceil(rate / 5))  # 5 req/s each: enough users that one slow answer does not stall the rate
        common = {"workdir": work}
        fixed = run_locust(base, work / "body.json", users=users, user_rate=rate / users, seconds=duration,
                           max_requests=int(rate * duration * 1.05) + 1, name="fixed", **common)
        stages = [run_locust(base, work / "body.json", users=u, user_rate=0.0, seconds=stage_seconds,
                             max_requests=int(2000 * stage_seconds), name=f"ramp{u}", **common) for u in ramp]
    # peak = answered (200) requests per second: refusals are fast and would flatter the figure
    peak = max(stages, key=lambda s: s.get("ok_throughput_rps", 0.0)) if stages else None
    if server_log and any(s["errors_5xx"] for s in [fixed, *stages]):  # what the server said about its 5xx
        print(f"server log tail (5xx answered):\n{server_log[0]}", file=sys.stderr)
    return {"endpoint": "/offers", "history_length": len(body["history"]), "fixed_rate": fixed, "ramp": stages,
            "peak_throughput_rps": peak.get("ok_throughput_rps", 0.0) if peak else None,
            "peak_users": peak["users"] if peak else None, "cpu_count": os.cpu_count(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@contextmanager
def _existing(url: str) -> Iterator[str]:
    if _get(f"{url}/readyz") != 200:
        raise RuntimeError(f"{url}/readyz is not 200: start the service first")
    yield url


def table(result: dict) -> str:
    cols = ("stage", "users", "target_rate", "requests", "throughput_rps", "p50_ms", "p95_ms", "p99_ms",
            "error_rate", "errors_5xx", "ok_throughput_rps", "ok_p50_ms", "ok_p99_ms", "model_p50_ms", "model_share_p50")
    rows = [result["fixed_rate"], *result["ramp"]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    lines.append(f"peak throughput (200 answers): {result['peak_throughput_rps']} req/s at {result['peak_users']} users")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="fixed-rate stage, requests/s")
    p.add_argument("--duration", type=float, default=30.0, help="fixed-rate stage length, s")
    p.add_argument("--ramp", default="8,16,32,64", help="closed-loop users per ramp stage ('' = no ramp)")
    p.add_argument("--stage-seconds", type=float, default=10.0, help="length of each ramp stage, s")
    p.add_argument("--history", type=int, default=50, help="purchases in the test customer's history")
    p.add_argument("--url", default=None, help="an already running service (default: start one here)")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output")
    a = p.parse_args(argv)
    ramp = tuple(int(u) for u in a.ramp.split(",") if u.strip())
    result = load_test(a.rate, a.duration, ramp, a.stage_seconds, a.history, a.url)
    print(table(result))
    write_json(result, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
