"""The main job on the embedded default: synthetic marketplace -> models -> MLflow -> scored results."""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from offerlab.registry import FAMILIES

log = logging.getLogger(__name__)


def synth_safely(n_customers: int, seed: int, out_dir: Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Generate into a temporary sibling folder and move it into place only when complete.

    A failed or interrupted run leaves an existing data set in `out_dir` untouched; an existing,
    non-empty `out_dir` is refused unless `overwrite`.
    """
    from offerlab.data.synth import synth_to_dir

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"output folder {out_dir} is not empty; pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        synth_to_dir(n_customers, seed, tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {p.relative_to(out_dir).as_posix(): p for p in sorted(out_dir.rglob("*")) if p.is_file()}


def main_job(n_customers: int = 20_000, seed: int = 0, workdir: Path = Path("runs/main")) -> dict:
    """Synthesise the marketplace, log its summary, then train and score each model family that exists."""
    from offerlab.data.synth import load_synth
    from offerlab.tracking import log_data_summary, tracking_uri

    workdir = Path(workdir)
    synth_dir = workdir / f"synth_{n_customers}_{seed}"
    t0 = time.perf_counter()
    if not (synth_dir / "meta.json").exists():
        synth_safely(n_customers, seed, synth_dir, overwrite=True)
    d = load_synth(synth_dir)
    tables = {"transactions": d.transactions, "customers": d.customers, "campaign": d.campaign,
              "applications": d.applications}
    run_id = log_data_summary(tables, params={"source": "synthetic", "seed": seed, "n_customers": n_customers})
    result: dict = {
        "tracking_uri": tracking_uri(),
        "synthetic_data": str(synth_dir),
        "data_summary_run": run_id,
        "rows": {k: len(v) for k, v in tables.items()},
    }
    del d, tables
    for family in FAMILIES:
        if not (Path(__file__).parent / family / "jobs.py").is_file():
            continue
        step = importlib.import_module(f"offerlab.{family}.jobs").main_job_step
        t1 = time.perf_counter()
        log.info("main job: training and scoring %s", family)
        result[family] = {**step(synth_dir, workdir / family), "seconds": round(time.perf_counter() - t1, 1)}
        if result[family].get("run_id"):
            result[family]["registry"] = _promote_quietly(family, result[family]["run_id"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _promote_quietly(family: str, run_id: str) -> str:
    """Offer the main job's model to the registry so `bentoml serve` finds a champion; the usual rule holds:
    the alias moves only if this run beats the current champion on the same evaluation data."""
    from offerlab.registry import promote

    decision = promote(family, run_id)
    return decision.reason
