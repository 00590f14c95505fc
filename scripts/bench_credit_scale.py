"""The credit benchmark at three sizes in one run: German credit, and the synthetic marketplace at 100k and 1M
customers (about 25k and 250k applications). Ours, LightGBM, both WoE scorecards and logistic regression on the
same folds; AUC, ECE, fit seconds, the paired comparison with each peer and, on synthetic data, the gap to the
observable oracle. Writes one DESIGN.md JSON per size and prints them side by side.

    python scripts/bench_credit_scale.py                     # all three, into experiments/results/
    python scripts/bench_credit_scale.py --sizes german,100k --work-dir /tmp/credit-scale

The synthetic folders are generated under --work-dir when missing (seed 0). Each JSON records the machine's
load average before and after and the process's peak memory; the 1M run needs about 4 GB and a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"german": None, "100k": 100_000, "1m": 1_000_000}
OUT_NAMES = {"german": "credit_german.json", "100k": "credit_synth_100k.json", "1m": "credit_synth_1m.json"}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_size(size: str, work_dir: Path, out_dir: Path, progress: bool | None) -> dict:
    from offerlab.credit.bench import run_bench, write_json_atomic
    from offerlab.credit.config import load_config

    if SIZES[size] is None:
        cfg = load_config(ROOT / "configs" / "credit" / "german.yaml")
    else:
        from offerlab.data.synth import synth_to_dir

        folder = work_dir / f"synth_{size}"
        if not (folder / "applications.parquet").is_file():
            logging.getLogger("offerlab").info("bench credit: generating %s customers into %s", SIZES[size], folder)
            synth_to_dir(SIZES[size], 0, folder)
        cfg = load_config(ROOT / "configs" / "credit" / "synth.yaml", {"data": {"synth_dir": str(folder)}})
    before = _uptime()
    result = run_bench(cfg, progress=progress)
    result["machine"].update({"uptime_before": before, "uptime_after": _uptime(),
                              "command": "python scripts/bench_credit_scale.py --sizes " + size})
    if SIZES[size] is not None:
        result["customers"] = SIZES[size]
    write_json_atomic(result, out_dir / OUT_NAMES[size])
    return result


def side_by_side(results: dict[str, dict]) -> str:
    """One block per size: AUC, ECE and seconds per model, the oracle gap and ours' time over LightGBM's."""
    from offerlab.credit.cli import summary_table

    lines = []
    for r in results.values():
        lines.append(summary_table(r))
        t = r["targets"]
        if "seconds_over_lightgbm" in t:
            lines.append(f"  ours / LightGBM fit time {t['seconds_over_lightgbm']:.2f}x; AUC minus LightGBM "
                         f"{t['auc_minus_lightgbm']:+.4f}; peak memory {r['machine']['peak_rss_gb']:.2f} GB; "
                         f"load {r['machine']['load_avg_before']} -> {r['machine']['load_avg_after']}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="german,100k,1m", help="comma-separated: german, 100k, 1m")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "credit_scale", help="synthetic data folders")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = ap.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        ap.error(f"--sizes: unknown {bad}; choose from {list(SIZES)}")
    from offerlab import quiet

    quiet.configure(verbose=False)
    from offerlab.credit.cli import _quiet_lightning

    _quiet_lightning()
    os.environ.setdefault("OFFERLAB_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    results, t0 = {}, time.perf_counter()
    for size in sizes:
        results[size] = run_size(size, args.work_dir, args.out_dir, args.progress)
        print(side_by_side({size: results[size]}), flush=True)
    print(f"wrote {', '.join(str(args.out_dir / OUT_NAMES[s]) for s in sizes)} in {time.perf_counter() - t0:.0f} s")
    print(json.dumps({s: {"rows": r["rows"], "targets": r["targets"]} for s, r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
