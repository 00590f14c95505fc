"""A `bentoml serve` process in a test: wait until a path answers 200, stop its process group."""

from __future__ import annotations

import os
import subprocess
import time

import httpx


def wait_for(url: str, path: str, proc: subprocess.Popen, timeout: float = 240.0, every: float = 1.0) -> None:
    """Poll `url + path` until 200, failing fast if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(every)
    raise TimeoutError(f"{url}{path} not answering 200 after {timeout:.0f} s")


def stop(proc: subprocess.Popen, log) -> None:
    """SIGTERM the server's process group, SIGKILL after 30 s; close its log."""
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()
