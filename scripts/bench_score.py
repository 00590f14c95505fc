"""Time `offerlab score` over a large synthetic customer base: customers/s and peak RSS per command.

    python scripts/bench_score.py --customers 1000000 --workdir runs/bench_score

Reuses `<workdir>/synth_<n>_<seed>` when it exists (else `offerlab data synth` writes it). Models come from
the registry behind MLFLOW_TRACKING_URI (default: a store inside the workdir); when a family has no
`champion`, the main job's training step trains it on a small synthetic set and promotes it. Each
command runs as its own process so its peak RSS is its own. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FAMILY = {"timing": "timing", "discount": "uplift", "credit": "credit"}


def ensure_synth(n: int, seed: int, workdir: Path) -> Path:
    from offerlab.pipeline import synth_safely

    folder = workdir / f"synth_{n}_{seed}"
    if not (folder / "meta.json").exists():
        t0 = time.perf_counter()
        synth_safely(n, seed, folder, overwrite=True)
        print(f"synthesised {n} customers in {time.perf_counter() - t0:.0f}s -> {folder}")
    return folder


def ensure_models(workdir: Path, train_customers: int) -> None:
    """Train and promote a small model for every family that has no champion yet."""
    import importlib

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from offerlab.registry import CHAMPION, model_name, promote

    client = MlflowClient()
    missing = []
    for fam in FAMILY.values():
        try:
            client.get_model_version_by_alias(model_name(fam), CHAMPION)
        except MlflowException:
            missing.append(fam)
    if not missing:
        return
    small = ensure_synth(train_customers, 1, workdir)
    for fam in missing:
        step = importlib.import_module(f"offerlab.{fam}.jobs").main_job_step
        out = step(small, workdir / "train" / fam)
        print(promote(fam, out["run_id"]).reason)


def run_command(command: str, synth: Path, out_dir: Path, chunk_size: int, samples: int) -> dict:
    """One `offerlab score` process; its summary JSON plus its own peak RSS (wait4)."""
    inputs = {"timing": ["--input", synth / "transactions.parquet"],
              "discount": ["--input", synth / "transactions.parquet", "--customers", synth / "customers.parquet"],
              "credit": ["--input", synth / "applications.parquet", "--transactions", synth / "transactions.parquet"],
              "offers": ["--input", synth / "transactions.parquet", "--customers", synth / "customers.parquet",
                         "--applications", synth / "applications.parquet"]}[command]
    cmd = [sys.executable, "-m", "offerlab.cli", "score", command, *map(str, inputs),
           "--output", str(out_dir / f"{command}.parquet"), "--force", "--chunk-size", str(chunk_size),
           "--samples", str(samples)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit {proc.returncode}")
    summary = json.loads(stdout[stdout.index("{"):])
    summary.update(wall_seconds=round(time.perf_counter() - t0, 1), peak_rss_mb=round(usage.ru_maxrss / 1024))
    return summary


def scoring_args(doc: str | None, commands: str, chunk_help: str | None = None) -> argparse.ArgumentParser:
    """The arguments every scoring benchmark shares (this script's and scripts/bench_spark.py's)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("runs/bench_score"))
    p.add_argument("--train-customers", type=int, default=5_000, help="synthetic set for models when none exist")
    p.add_argument("--commands", default=commands)
    p.add_argument("--chunk-size", type=int, default=50_000, help=chunk_help)
    p.add_argument("--samples", type=int, default=100, help="timing Monte Carlo paths per customer")
    return p


def main(argv: list[str] | None = None) -> int:
    p = scoring_args(__doc__, "offers,timing,discount,credit")
    p.add_argument("--out", type=Path, default=Path("experiments/results/bench_score.json"))
    a = p.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(a.workdir / 'mlflow.db').resolve()}")
    synth = ensure_synth(a.customers, a.seed, a.workdir)
    ensure_models(a.workdir, a.train_customers)
    rows = [run_command(c, synth, a.workdir, a.chunk_size, a.samples) for c in a.commands.split(",")]
    print("| command | customers | rows | seconds | customers/s | peak RSS MB |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['command']} | {r['customers']} | {r['rows']} | {r['seconds']} | {r['customers_per_s']} "
              f"| {r['peak_rss_mb']} |")
    result = {"customers": a.customers, "chunk_size": a.chunk_size, "samples": a.samples, "cpu_count": os.cpu_count(),
              "results": rows, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
