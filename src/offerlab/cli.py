"""The `offerlab` command line: one entry point for data, training, benchmarks and the main job.

Model families plug in by providing `offerlab.<family>.cli` with click commands `train` and/or
`bench`; a family whose module is absent simply does not appear (no placeholder commands).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path

import click

from offerlab.data.loaders import DataFileMissing, load_dataset
from offerlab.data.schema import DataValidationError

FAMILIES = ("timing", "uplift", "credit")
log = logging.getLogger("offerlab")


class OfferlabGroup(click.Group):
    """Turns known user errors (bad data, missing files, bad configs) into one clear line and exit 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DataValidationError, DataFileMissing, ValueError) as e:
            if isinstance(e, click.ClickException):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=OfferlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Offerlab: when to remind, which discount, what credit terms — from purchase histories.

    \b
    Examples:
      offerlab data synth --customers 20000 --seed 0 --out data/synth
      offerlab data load cdnow
      offerlab run --customers 20000
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "lightning", "lightning.pytorch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.group()
def data() -> None:
    """Generate, load and summarise data sets.

    \b
    Examples:
      offerlab data synth --customers 100000 --seed 1 --out data/synth
      offerlab data load hillstrom --out hillstrom.parquet
      offerlab data load mine --data-path my.csv --mapping configs/data/transactions_example.yaml
      offerlab data summary data/synth
    """


@data.command("synth")
@click.option("--customers", "n_customers", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Number of customers.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same bytes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Overwrite an existing synthetic data set in --out.")
def data_synth(n_customers: int, seed: int, out_dir: str, force: bool) -> None:
    """Write the synthetic marketplace (tables + ground truth) as parquet.

    \b
    Example:
      offerlab data synth --customers 1000000 --seed 0 --out data/synth1m
    """
    from offerlab.pipeline import synth_safely

    paths = synth_safely(n_customers, seed, Path(out_dir), overwrite=force)
    click.echo(f"wrote {len(paths)} files to {out_dir}")


@data.command("load")
@click.argument("dataset")
@click.option("--data-path", type=click.Path(), default=None,
              help="File (with --mapping) or folder of the public files (default: $OFFERLAB_DATA_DIR).")
@click.option("--mapping", type=click.Path(dir_okay=False), default=None, help="Column-mapping YAML for your own file.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the canonical table as parquet.")
def data_load(dataset: str, data_path: str | None, mapping: str | None, out: str | None) -> None:
    """Load and validate a data set (cdnow, hillstrom, german, or any name with --mapping).

    \b
    Examples:
      offerlab data load cdnow
      offerlab data load mine --data-path tx.csv --mapping configs/data/transactions_example.yaml --out tx.parquet
    """
    from offerlab.tracking import table_summary

    df = load_dataset(dataset, data_path, mapping)
    summary = table_summary(df, dataset)
    click.echo(json.dumps(summary, indent=1, default=str))
    if out:
        df.to_parquet(out, index=False)
        click.echo(f"wrote {len(df)} rows to {out}")


@data.command("summary")
@click.argument("synth_dir", type=click.Path(exists=True, file_okay=False))
def data_summary(synth_dir: str) -> None:
    """Log a data-summary run of a synthetic data set to MLflow (experiment `offerlab-data`)."""
    from offerlab.data.synth import load_synth
    from offerlab.tracking import log_data_summary

    d = load_synth(synth_dir)
    tables = {"transactions": d.transactions, "customers": d.customers, "campaign": d.campaign,
              "applications": d.applications}
    run_id = log_data_summary(tables, params={"source": "synthetic", **{k: d.meta[k] for k in ("seed", "n_customers")}})
    click.echo(f"logged data summary run {run_id}")


@main.command("run")
@click.option("--customers", "n_customers", type=click.IntRange(min=100), default=20_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/main", show_default=True,
              help="Folder for the synthetic data and outputs.")
def run_main(n_customers: int, seed: int, workdir: str) -> None:
    """The main job on the embedded default: synthetic data -> the models -> MLflow -> scored results.

    \b
    Example:
      offerlab run --customers 20000 --seed 0
    """
    from offerlab.pipeline import main_job

    result = main_job(n_customers=n_customers, seed=seed, workdir=Path(workdir))
    click.echo(json.dumps(result, indent=1, default=str))


@main.command("promote")
@click.argument("family", type=click.Choice(FAMILIES))
@click.option("--run", "run_id", required=True, help="MLflow run id of the candidate (its model must be logged as 'model').")
@click.option("--alias", default="champion", show_default=True, help="Alias to move if the candidate wins.")
def promote_cmd(family: str, run_id: str, alias: str) -> None:
    """Register a run's model and move the alias only if it beats the current holder.

    The comparison uses the family's primary metric on the same evaluation data; a refused candidate
    is not registered and the alias stays where it was (exit code 1).

    \b
    Example:
      offerlab promote credit --run 3f2a9c...
    """
    from offerlab.registry import promote

    decision = promote(family, run_id, alias=alias)
    click.echo(("promoted: " if decision.promoted else "not promoted: ") + decision.reason)
    if not decision.promoted:
        sys.exit(1)


@main.command("models")
@click.option("--family", type=click.Choice(FAMILIES), default=None, help="Only this family.")
def models_cmd(family: str | None) -> None:
    """List registered model versions with their aliases and primary metric.

    \b
    Example:
      offerlab models --family timing
    """
    from offerlab.registry import list_models

    rows = list_models(family)
    if not rows:
        click.echo("no registered models")
    for r in rows:
        metric = [(k, v) for k, v in r.items() if k not in ("model", "version", "aliases", "run_id")]
        shown = ", ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in metric)
        click.echo(f"{r['model']} v{r['version']} [{', '.join(r['aliases']) or '-'}] run {r['run_id']} {shown}")


class FamilyGroup(click.Group):
    """`train` / `bench`: one subcommand per family whose `offerlab.<family>.cli` exists, imported on use.

    Importing a family pulls in torch and Lightning, so `offerlab --help` stays quick by not doing it.
    """

    def __init__(self, attr: str, **kw):
        super().__init__(**kw)
        self.attr = attr

    def list_commands(self, ctx: click.Context) -> list[str]:
        package_dir = Path(__file__).parent
        return [f for f in FAMILIES if (package_dir / f / "cli.py").is_file()]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        return getattr(importlib.import_module(f"offerlab.{name}.cli"), self.attr, None)


def _attach_family_commands() -> None:
    """Add the `train` and `bench` groups once at least one family provides them."""
    for attr, doc in (
        ("train", "Train a model family from a YAML config and log it to MLflow."),
        ("bench", "Benchmark ours against the peers on one split; write the JSON of DESIGN.md."),
    ):
        group = FamilyGroup(attr, name=attr, help=doc)
        if group.list_commands(click.Context(group)):
            main.add_command(group)


_attach_family_commands()

if __name__ == "__main__":
    main()
