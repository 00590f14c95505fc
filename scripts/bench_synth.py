"""Benchmark the synthetic marketplace generator: wall time, peak RSS and row counts.

python scripts/bench_synth.py --customers 100000 --out /tmp/synth100k
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from offerlab.data.synth import synth_to_dir


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=100_000)
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    paths = synth_to_dir(args.customers, args.seed, args.out, chunk_size=args.chunk_size)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    rows = {k: pq.ParquetFile(p).metadata.num_rows for k, p in paths.items() if k != "meta"}
    size_mb = sum(p.stat().st_size for p in paths.values()) / 2**20
    result = {
        "customers": args.customers,
        "chunk_size": args.chunk_size,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "disk_mb": round(size_mb, 1),
        "rows": rows,
        "tx_per_customer": round(rows["transactions"] / args.customers, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"customers     {args.customers:,} (chunk {args.chunk_size:,}) -> {args.out}")
        print(f"seconds       {seconds:.2f}")
        print(f"peak RSS      {peak_mb:,.1f} MiB")
        print(f"on disk       {size_mb:,.1f} MiB")
        for k, n in rows.items():
            print(f"rows {k:<15} {n:,}")
        print(f"tx/customer   {result['tx_per_customer']}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
