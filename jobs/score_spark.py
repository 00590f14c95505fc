"""spark-submit entry point of the nightly job: `offerlab score <command> ... --engine spark` in the driver.

    spark-submit [spark options] jobs/score_spark.py offers --input ... --output ... [score options]

The session is spark-submit's (its --master, --conf); the arguments are those of `offerlab score` (see
`offerlab score --help`), `--engine spark` added when not given. jobs/nightly_spark.sh is a complete job.
"""

from __future__ import annotations

import sys


def run(argv: list[str]) -> None:
    """`offerlab score` with `argv` on the Spark engine (exits with the command's status, as the CLI does)."""
    from offerlab.cli import main

    args = list(argv)
    if "--engine" not in args:
        args += ["--engine", "spark"]
    main(["score", *args], prog_name="offerlab")


if __name__ == "__main__":
    run(sys.argv[1:])
