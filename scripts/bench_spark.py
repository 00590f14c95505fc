"""Single machine vs Spark local[2], side by side: customers/s, peak memory and core-seconds per 1M customers.

    python scripts/bench_spark.py --customers 1000000 --workdir runs/bench_score

Both engines score the same synthetic customers (`<workdir>/synth_<n>_<seed>`, written by `offerlab data synth`
when missing) with the same registered models (MLFLOW_TRACKING_URI, default a store in the workdir; a family
without a champion gets a small model trained and promoted, as in scripts/bench_score.py). Each run is its own
`offerlab score` process; its peak memory is sampled over the whole process tree every 0.2 s (for Spark: the
driver, its JVM, the Python daemon and workers), beside the largest single process. The two outputs are checked to
hold the same customers. `uptime` before and after goes into the JSON: the machine may be shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import ensure_models, ensure_synth  # noqa: E402

from offerlab.serving.loadtest import write_json  # noqa: E402

INPUTS = {"timing": ["--input", "transactions.parquet"],
          "discount": ["--input", "transactions.parquet", "--customers", "customers.parquet"],
          "credit": ["--input", "applications.parquet", "--transactions", "transactions.parquet"],
          "offers": ["--input", "transactions.parquet", "--customers", "customers.parquet",
                     "--applications", "applications.parquet"]}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


class TreeMemory(threading.Thread):
    """Peak resident memory of a process and all its descendants (sum), and of the largest one, in MB."""

    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak_sum, self.peak_one, self.done = pid, every_s, 0, 0, threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            rss = []
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            if rss:
                self.peak_sum = max(self.peak_sum, sum(rss))
                self.peak_one = max(self.peak_one, max(rss))
            self.done.wait(self.every_s)


def run_engine(engine: str, command: str, synth: Path, out: Path, chunk_size: int, samples: int,
               spark_master: str, driver_memory: str) -> dict:
    args = [a if a.startswith("--") else str(synth / a) for a in INPUTS[command]]
    cmd = [sys.executable, "-m", "offerlab.cli", "score", command, *args, "--output", str(out), "--force",
           "--chunk-size", str(chunk_size), "--samples", str(samples)]
    if engine == "spark":
        cmd += ["--engine", "spark", "--spark-master", spark_master, "--spark-conf",
                f"spark.driver.memory={driver_memory}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    mem = TreeMemory(proc.pid)
    mem.start()
    stdout = proc.stdout.read()
    proc.wait()
    mem.done.set()
    mem.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"engine": engine, "command": command, "failed": f"exit {proc.returncode}", "wall_seconds": wall}
    summary = json.loads(stdout[stdout.index("{"):])
    summary.update(engine=engine, wall_seconds=round(wall, 1), peak_tree_rss_mb=round(mem.peak_sum / 2**20),
                   peak_process_rss_mb=round(mem.peak_one / 2**20))
    return summary


def per_core(summary: dict, cores: int) -> float:
    """Core-seconds per 1M customers of the scoring (load time excluded): seconds x cores / millions."""
    return round((summary["seconds"] - summary["load_seconds"]) * cores / (summary["customers"] / 1e6), 1)


def same_customers(local: Path, spark: Path, command: str) -> bool:
    import pandas as pd

    key = "application_id" if command == "credit" else "customer_id"
    a = pd.read_parquet(local, columns=[key])[key]
    b = pd.read_parquet(spark, columns=[key])[key]
    return len(a) == len(b) and a.sort_values().tolist() == b.sort_values().tolist()


def main(argv: list[str] | None = None) -> int:
    from bench_score import scoring_args  # scripts/ is on the path when a script runs

    p = scoring_args(__doc__, "offers", "customers per chunk = per Spark group (task)")
    p.add_argument("--spark-master", default="local[2]")
    p.add_argument("--driver-memory", default="6g", help="local mode: the JVM (driver = executor) heap")
    p.add_argument("--out", type=Path, default=Path("experiments/results/score_spark.json"))
    a = p.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(a.workdir / 'mlflow.db').resolve()}")
    synth = ensure_synth(a.customers, a.seed, a.workdir)
    ensure_models(a.workdir, a.train_customers)
    cores = int(a.spark_master.removeprefix("local[").rstrip("]")) if a.spark_master.startswith("local[") else None
    machine_cores = os.cpu_count()
    before = uptime()
    rows = []
    for command in a.commands.split(","):
        outs = {"local": a.workdir / f"{command}_local.parquet", "spark": a.workdir / f"{command}_spark"}
        for engine in ("local", "spark"):
            print(f"{command} on {engine} ({uptime()})", flush=True)
            r = run_engine(engine, command, synth, outs[engine], a.chunk_size, a.samples, a.spark_master,
                           a.driver_memory)
            if "failed" not in r:
                r["core_seconds_per_1m_customers"] = per_core(r, cores if engine == "spark" else machine_cores)
            rows.append(r)
        if all("failed" not in r for r in rows[-2:]):
            rows[-1]["same_customers_as_local"] = same_customers(outs["local"], outs["spark"], command)
    after = uptime()
    print("| command | engine | customers | seconds (load) | customers/s | core-s per 1M | peak tree RSS MB "
          "| largest process MB |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['command']} | {r['engine']} | failed: {r['failed']} |")
            continue
        print(f"| {r['command']} | {r['engine']} | {r['customers']} | {r['seconds']} ({r['load_seconds']}) "
              f"| {r['customers_per_s']} | {r['core_seconds_per_1m_customers']} | {r['peak_tree_rss_mb']} "
              f"| {r['peak_process_rss_mb']} |")
    result = {"customers": a.customers, "chunk_size": a.chunk_size, "samples": a.samples,
              "spark_master": a.spark_master, "spark_driver_memory": a.driver_memory, "cpu_count": machine_cores,
              "local_cores": machine_cores, "spark_cores": cores, "uptime_before": before, "uptime_after": after,
              "results": rows, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(result, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
