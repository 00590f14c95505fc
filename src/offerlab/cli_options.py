"""Options every data-reading command shares: `--data SPEC` (a data spec YAML) and `--data-set KEY=VALUE`.

Kept apart from `offerlab.cli` so the family command modules can import it without importing the main CLI.
"""

from __future__ import annotations

import click

DATA_HELP = ("Your data spec YAML (files, column mapping, semantics, economics, protocol dates); "
             "`offerlab data init FILES...` writes a draft.")


def data_spec_options(f):
    """Add `--data SPEC` and `--data-set KEY=VALUE` (repeatable) to a click command."""
    f = click.option("--data-set", "data_sets", multiple=True, metavar="KEY=VALUE",
                     help="Override one key of the data spec, e.g. --data-set economics.margin=0.35 (repeatable).")(f)
    return click.option("--data", "data_spec", type=click.Path(dir_okay=False), default=None, help=DATA_HELP)(f)


def open_spec(path: str | None, sets: tuple[str, ...] = ()):
    """The loaded `SpecData` of `--data` (with `--data-set` applied), or None without `--data`."""
    if path is None:
        if sets:
            raise ValueError("--data-set changes a key of a data spec: give the spec with --data SPEC")
        return None
    from offerlab.data.spec import SpecData, parse_sets

    return SpecData.load(path, parse_sets(sets))


def refuse_beside_spec(**given: object) -> None:
    """`--data` names the data: refuse data options that would name it a second time."""
    for name, value in given.items():
        if value not in (None, False, ()):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} and --data both name the data: drop {flag} (the data spec says where the "
                             "data are; change one of its keys with --data-set KEY=VALUE)")


def spec_overrides(family: str, data_spec: str | None, data_sets: tuple[str, ...], **data_options) -> dict:
    """The `family` config keys `--data` sets (data, economics, dates), after refusing data options beside it;
    {} without --data."""
    from offerlab.data.spec import family_overrides

    spec = open_spec(data_spec, data_sets)
    if spec is None:
        return {}
    refuse_beside_spec(**data_options)
    return family_overrides(spec, family)


def engine_options(f):
    """Add `--engine local|spark` and the Spark engine's options (`offerlab score`)."""
    f = click.option("--partition-by", "partition_by", multiple=True, metavar="COLUMN",
                     help="--engine spark: partition the output folder by this output column (repeatable).")(f)
    f = click.option("--spark-conf", "spark_conf", multiple=True, metavar="KEY=VALUE",
                     help="--engine spark: a Spark setting for the session it starts, e.g. "
                          "spark.driver.memory=4g (repeatable; under spark-submit use its --conf).")(f)
    f = click.option("--spark-master", default=None, metavar="URL",
                     help="--engine spark: master of the session it starts (default: spark-submit's, else "
                          "local[*]).")(f)
    return click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
                        help="local: this machine, in chunks; spark: Apache Spark, inputs and output at any path "
                             "Spark reads (output: a parquet folder).")(f)


def parse_spark_conf(items: tuple[str, ...]) -> dict[str, str]:
    """--spark-conf KEY=VALUE pairs as a dict (refusing an item without '=')."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--spark-conf {item!r} must be KEY=VALUE, e.g. spark.driver.memory=4g")
        out[key.strip()] = value
    return out
