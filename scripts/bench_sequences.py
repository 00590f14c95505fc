"""Benchmark build_sequences and the behaviour features on a synthetic transactions table.

python scripts/bench_sequences.py --events 10000000 --customers 700000

The table is generated vectorised: customers drawn with gamma-distributed activity, uniform random
timestamps (second resolution) over three years in random row order, log-normal amounts and 12
categories. Peak RSS is the process-wide maximum (``ru_maxrss``) after each phase.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from offerlab.data.features import behaviour_features, behaviour_features_at
from offerlab.data.sequences import build_sequences

CATEGORIES = ("books", "music", "video", "games", "toys", "home", "garden", "beauty", "sports", "food", "pets", "tech")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def synth_transactions(n_events: int, n_customers: int, seed: int = 0, categorical_ids: bool = False) -> pd.DataFrame:
    """A random `transactions` table with ``n_events`` rows over up to ``n_customers`` customers."""
    rng = np.random.default_rng(seed)
    activity = rng.gamma(0.8, 1.0, n_customers)
    cdf = np.cumsum(activity)
    cust = np.searchsorted(cdf, rng.random(n_events) * cdf[-1], side="right").clip(0, n_customers - 1)
    start = np.datetime64("2021-01-01", "s").astype(np.int64)
    secs = start + rng.integers(0, 3 * 365 * 86_400, n_events)
    ids = pa.array(np.char.add("c", np.char.zfill(np.arange(n_customers).astype(str), 7)).astype(object))
    cat_names = pa.array(list(CATEGORIES))
    table = pa.table(
        {
            "customer_id": ids.take(pa.array(cust)),
            "timestamp": pa.array(secs.astype("datetime64[s]").astype("datetime64[ns]")),
            "amount": pa.array(np.round(rng.lognormal(3.0, 0.8, n_events), 2)),
            "category": cat_names.take(pa.array(rng.integers(0, len(CATEGORIES), n_events))),
        }
    )
    df = table.to_pandas()
    if categorical_ids:
        df["customer_id"] = df["customer_id"].astype("category")
    return df


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--customers", type=int, default=700_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--as-of", default="2023-10-01")
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--same-day", default="keep", choices=["keep", "merge"])
    ap.add_argument("--anchors", type=int, default=None, help="rows for behaviour_features_at (default: --customers)")
    ap.add_argument("--skip-features", action="store_true")
    ap.add_argument("--categorical-ids", action="store_true", help="pass customer_id as a pandas categorical")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = ap.parse_args(argv)

    res: dict = {"events": args.events, "customers": args.customers}
    t0 = time.perf_counter()
    tx = synth_transactions(args.events, args.customers, args.seed, args.categorical_ids)
    res["generate_s"] = round(time.perf_counter() - t0, 2)
    res["rss_after_generate_mb"] = round(_rss_mb(), 1)

    t0 = time.perf_counter()
    seq = build_sequences(tx, args.as_of, max_len=args.max_len, same_day=args.same_day)
    res["build_sequences_s"] = round(time.perf_counter() - t0, 2)
    res["peak_rss_after_sequences_mb"] = round(_rss_mb(), 1)
    res["seq_customers"], res["seq_events"] = seq.n_customers, seq.n_events
    t0 = time.perf_counter()
    batch = seq.padded(np.arange(min(4096, seq.n_customers)), max_len=64)
    res["padded_4096x64_s"] = round(time.perf_counter() - t0, 3)
    del seq, batch

    if not args.skip_features:
        t0 = time.perf_counter()
        feats = behaviour_features(tx, args.as_of)
        res["behaviour_features_s"] = round(time.perf_counter() - t0, 2)
        res["peak_rss_after_features_mb"] = round(_rss_mb(), 1)
        res["feature_rows"], res["feature_cols"] = feats.shape
        del feats
        n_anchor = args.anchors or args.customers
        rng = np.random.default_rng(args.seed + 1)
        lo = np.datetime64("2021-06-01", "s").astype(np.int64)
        anchors = pd.DataFrame(
            {
                "customer_id": tx["customer_id"].to_numpy()[rng.integers(0, len(tx), n_anchor)],
                "as_of": (lo + rng.integers(0, 2 * 365 * 86_400, n_anchor))
                .astype("datetime64[s]")
                .astype("datetime64[ns]"),
            }
        )
        t0 = time.perf_counter()
        fa = behaviour_features_at(tx, anchors)
        res["behaviour_features_at_s"] = round(time.perf_counter() - t0, 2)
        res["anchors"] = len(fa)
        res["peak_rss_after_features_at_mb"] = round(_rss_mb(), 1)

    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:<32} {v:,}" if isinstance(v, int | float) else f"{k:<32} {v}")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
