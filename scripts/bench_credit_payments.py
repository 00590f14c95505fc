"""Credit with and without return and repayment features, on the synthetic marketplace (issue 14).

Ours and LightGBM on the same stratified folds, once on the application and purchase-history features only and
once with the return, payment-mix and repayment features (`ret_*`, `rep_*`) built at each applied_at; AUC, ECE and
the gap to both observable oracles (true_pd_observable: purchases only; true_pd_observable_payments: purchases and
the repayment record). Writes one JSON (summary, the gain in AUC, and both full bench runs).

    python scripts/bench_credit_payments.py                          # 100k customers, experiments/results/
    python scripts/bench_credit_payments.py --customers 20000 --work-dir /tmp/credit-pay
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from offerlab import quiet

    quiet.configure(verbose=False)  # before the libraries are imported: one line per step, no banners
    from offerlab.credit.bench import payments_comparison, write_json_atomic
    from offerlab.credit.cli import _quiet_lightning
    from offerlab.credit.config import load_config
    from offerlab.data.synth import synth_to_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/offerlab-credit-payments"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    _quiet_lightning()
    folder = args.work_dir / f"synth_{args.customers}"
    if not (folder / "repayments.parquet").is_file():
        logging.getLogger("offerlab").info("bench credit payments: generating %d customers into %s", args.customers, folder)
        synth_to_dir(args.customers, 0, folder)
    cfg = load_config(ROOT / "configs" / "credit" / "synth.yaml", {"data": {"synth_dir": str(folder)}})
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = payments_comparison(cfg)
    result.update({"customers": args.customers, "command": "python scripts/bench_credit_payments.py --customers "
                   f"{args.customers}", "uptime_before": uptime,
                   "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()})
    size = f"{args.customers // 1000}k" if args.customers % 1000 == 0 else str(args.customers)
    out = args.out or ROOT / "experiments" / "results" / f"credit_payments_synth_{size}.json"
    write_json_atomic(result, out)
    print(json.dumps({"summary": result["summary"], "gain_auc": result["gain_auc"]}, indent=1, default=float))


if __name__ == "__main__":
    main()
