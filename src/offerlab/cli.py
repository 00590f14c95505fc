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

from offerlab.cli_options import data_spec_options, engine_options, open_spec, parse_spark_conf, refuse_beside_spec
from offerlab.data.loaders import DataFileMissing, load_dataset
from offerlab.data.schema import DataValidationError
from offerlab.registry import FAMILIES

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
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, library banners and third-party warnings.")
def main(verbose: bool) -> None:
    """Offerlab: when to remind, which discount, what credit terms — from purchase histories.

    \b
    Examples:
      offerlab data synth --customers 20000 --seed 0 --out data/synth
      offerlab data load cdnow
      offerlab run --customers 20000
    """
    from offerlab.quiet import configure

    configure(verbose)


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
@click.option("--campaign", "campaign_assignment", type=click.Choice(["randomised", "targeted"]), default="randomised",
              show_default=True, help="How the previous campaign chose levels: at random, or targeted by the CRM on "
              "customer traits (the log then has no propensity column; the truth has each level's probability).")
def data_synth(n_customers: int, seed: int, out_dir: str, force: bool, campaign_assignment: str) -> None:
    """Write the synthetic marketplace (tables + ground truth) as parquet.

    \b
    Examples:
      offerlab data synth --customers 1000000 --seed 0 --out data/synth1m
      offerlab data synth --customers 50000 --campaign targeted --out data/synth_targeted_50k
    """
    from offerlab.pipeline import synth_safely

    # the default passes nothing new, so a randomised data set is written exactly as before
    extra = {"campaign_assignment": campaign_assignment} if campaign_assignment != "randomised" else {}
    paths = synth_safely(n_customers, seed, Path(out_dir), overwrite=force, **extra)
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


@data.command("init")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default="offerlab_data.yaml", show_default=True,
              help="The draft data spec to write.")
@click.option("--name", default=None, help="A short name for the data (default: the output folder's name).")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
def data_init(files: tuple[str, ...], out: str, name: str | None, force: bool) -> None:
    """Write a commented draft data spec from your files (one per table: orders, campaign log, applications...).

    Each file's table and columns are guessed from its header and a sample of rows; discount rates, revenue
    meaning, label values, margin and contact cost are left blank for you to fill in (the commands refuse to
    run until they are).

    \b
    Example:
      offerlab data init orders.csv campaign.csv applications.csv --out mydata.yaml
      offerlab data check --data mydata.yaml
    """
    from offerlab.data.draft import write_draft

    path = write_draft(list(files), out, force=force, name=name)
    text = path.read_text()
    blanks = sum(1 for line in text.splitlines() if ": ~" in line or "~," in line or "FILL-IN" in line)
    click.echo(f"wrote {path}: {blanks} line(s) to fill in (marked ~); then: offerlab data check --data {path}")


@data.command("check")
@data_spec_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: data_check/<spec name>).")
@click.option("--track/--no-track", default=True, show_default=True, help="Log the report as an MLflow run.")
def data_check(data_spec: str | None, data_sets: tuple[str, ...], out_dir: str | None, track: bool) -> None:
    """Profile your data before modelling: a Markdown report with plots, logged to MLflow.

    Per table rows, customers, dates, missing values; purchases: repeat buyers, inter-purchase times, who the
    holdout can score; campaign: arms, outcomes, a randomisation check (can a classifier predict the arm?) and
    propensity overlap; credit: default rate, leakage suspects, drift between the first and second half in time;
    and per model family whether the spec is ready or which key it still needs.

    \b
    Example:
      offerlab data check --data mydata.yaml
    """
    from offerlab.pipeline import check_data

    spec = open_spec(data_spec, data_sets)
    if spec is None:
        raise ValueError("data check needs --data SPEC (a data spec; `offerlab data init FILES` drafts one)")
    result = check_data(spec, Path(out_dir) if out_dir else Path("data_check") / spec.name, track=track)
    for family, state in result["readiness"].items():
        click.echo(f"{family:<7} {state}")
    click.echo(f"report: {result['report']}" + (f"\nMLflow: {result['run_id']}" if result.get("run_id") else ""))


@data.command("summary")
@click.argument("synth_dir", type=click.Path(exists=True, file_okay=False))
def data_summary(synth_dir: str) -> None:
    """Log a data-summary run of a synthetic data set to MLflow (experiment `offerlab-data`).

    \b
    Example:
      offerlab data summary data/synth
    """
    from offerlab.data.synth import load_synth
    from offerlab.tracking import log_data_summary

    d = load_synth(synth_dir)
    tables = {"transactions": d.transactions, "customers": d.customers, "campaign": d.campaign,
              "applications": d.applications}
    run_id = log_data_summary(tables, params={"source": "synthetic", **{k: d.meta[k] for k in ("seed", "n_customers")}})
    click.echo(f"logged data summary run {run_id}")


@main.command("run")
@data_spec_options
@click.option("--customers", "n_customers", type=click.IntRange(min=100), default=None,
              help="Synthetic customers (the embedded default; 20000).")
@click.option("--seed", type=int, default=None, help="Synthetic seed (0).")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Folder for the outputs (default: runs/main, or runs/<spec name> with --data).")
@click.option("--bench", is_flag=True, help="With --data: also benchmark every family against its peers.")
@click.option("--quick", is_flag=True, help="With --data: small model settings, for a first look in minutes.")
def run_main(data_spec: str | None, data_sets: tuple[str, ...], n_customers: int | None, seed: int | None,
             workdir: str | None, bench: bool, quick: bool) -> None:
    """The main job: data -> the models -> MLflow -> registry -> scored results.

    Without --data it runs on the embedded synthetic marketplace. With --data (your data spec) it checks the
    data, trains every family the spec supports, registers them as champions of your data, and writes the
    scored files: reminders, the campaign's discount per customer, credit decisions, and the combined offers.

    \b
    Examples:
      offerlab run --customers 20000 --seed 0
      offerlab run --data mydata.yaml --bench
    """
    from offerlab.pipeline import main_job, spec_job

    spec = open_spec(data_spec, data_sets)
    if spec is None:
        if bench or quick:
            raise ValueError("--bench and --quick apply to your data: give --data SPEC")
        result = main_job(n_customers=n_customers or 20_000, seed=seed or 0, workdir=Path(workdir or "runs/main"))
    else:
        refuse_beside_spec(customers=n_customers, seed=seed)
        result = spec_job(spec, Path(workdir or f"runs/{spec.name}"), bench=bench, quick=quick)
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


@main.command("score")
@click.argument("command", type=click.Choice(["timing", "discount", "credit", "offers"]))
@data_spec_options
@click.option("--input", "input_path", type=click.Path(dir_okay=False), default=None,
              help="Transactions parquet (timing/discount/offers) or applications parquet (credit); "
                   "with --data the spec's tables are read instead.")
@click.option("--output", type=click.Path(), required=True, help="Output parquet (one row per customer; "
              "per application for credit; a folder with --engine spark).")
@click.option("--customers", type=click.Path(dir_okay=False), default=None,
              help="discount/offers: customers parquet with the static attributes the uplift model uses.")
@click.option("--applications", type=click.Path(dir_okay=False), default=None,
              help="offers: applications parquet; adds credit_* columns for each customer's latest application.")
@click.option("--transactions", type=click.Path(dir_okay=False), default=None,
              help="credit: transactions parquet for the purchase-history features.")
@click.option("--returns", "returns_path", type=click.Path(dir_okay=False), default=None,
              help="returns parquet (customer_id, order_id, returned_at, amount): timing scores purchases net of "
                   "them; credit (and offers) builds the ret_* features of a model trained with them.")
@click.option("--repayments", "repayments_path", type=click.Path(dir_okay=False), default=None,
              help="repayments parquet (customer_id, credit_id, issued_at, due_date, paid_at, amount_due, "
                   "amount_paid): the rep_* features of a credit model trained with them.")
@click.option("--model-uri", default=None, help="Any MLflow model URI for a one-family command (default: the alias).")
@click.option("--alias", default="champion", show_default=True, help="Registry alias of offerlab-<family>.")
@click.option("--as-of", default=None, help="Scoring instant (default: end of the day of the latest transaction).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=50_000, show_default=True, help="Customers per chunk.")
@click.option("--samples", "n_samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Monte Carlo paths per customer for the expected purchase count (timing).")
@click.option("--budget", type=float, default=None,
              help="discount/offers: total expected spend (discounts paid + contact costs) allocated across the "
                   "whole file (default: the data spec's economics.budget with --data, else none: each customer's "
                   "best level at the model's stored price of spend).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@engine_options
def score_cmd(command: str, data_spec: str | None, data_sets: tuple[str, ...], input_path: str | None, output: str,
              customers: str | None, applications: str | None, transactions: str | None,
              returns_path: str | None, repayments_path: str | None, model_uri: str | None,
              alias: str, as_of: str | None, chunk_size: int, n_samples: int, budget: float | None,
              force: bool, engine: str, spark_master: str | None, spark_conf: tuple[str, ...],
              partition_by: tuple[str, ...]) -> None:
    """Batch-score a customer base with the registered models (the ones the services use).

    \b
    Inputs: transactions = customer_id, timestamp, amount[, category];
    customers = customer_id + attributes; applications = customer_id, applied_at + application fields.
    Examples:
      offerlab score offers --data mydata.yaml --output offers.parquet
      offerlab score timing --input data/synth/transactions.parquet --output reminders.parquet
      offerlab score discount --input tx.parquet --customers customers.parquet --output discounts.parquet
      offerlab score credit --input applications.parquet --transactions tx.parquet --output credit.parquet
      offerlab score credit --input apps.parquet --transactions tx.parquet --returns returns.parquet \
          --repayments repayments.parquet --output credit.parquet   # a model trained with ret_*/rep_*
      offerlab score offers --input tx.parquet --customers customers.parquet --applications apps.parquet \\
          --output offers.parquet --alias challenger --force
      offerlab score discount --input tx.parquet --customers customers.parquet --budget 5000 --output d.parquet
      offerlab score offers --engine spark --input s3a://lake/tx/ --customers s3a://lake/customers/ \
          --output s3a://lake/offers/2025-01-31 --partition-by discount_level   # on Spark (a parquet folder)
    """
    from offerlab.serving.score import BUDGET_COMMANDS, check_budget, run_score, spec_inputs

    check_budget(budget, command)  # refused before the spec or any table is read
    spec = open_spec(data_spec, data_sets)
    inputs = None
    budget_from = "--budget" if budget is not None else None
    if spec is not None:
        refuse_beside_spec(input=input_path, customers=customers, applications=applications, transactions=transactions,
                           returns=returns_path, repayments=repayments_path)
        inputs = spec_inputs(command, spec)
        if budget is None and command in BUDGET_COMMANDS and spec.spec.economics.budget is not None:
            budget, budget_from = spec.spec.economics.budget, "economics.budget"  # the flag wins when given
    summary = run_score(command, input_path, output, customers=customers, applications=applications,
                        transactions=transactions, returns=returns_path, repayments=repayments_path,
                        model_uri=model_uri, alias=alias, as_of=as_of,
                        chunk_size=chunk_size, n_samples=n_samples, force=force, inputs=inputs, budget=budget,
                        engine=engine, **spark_cli(engine, spark_master, spark_conf, partition_by))
    if budget_from:
        summary["budget_source"] = budget_from
    click.echo(json.dumps(summary, indent=1))


def spark_cli(engine: str, master: str | None, conf: tuple[str, ...], partition_by: tuple[str, ...]) -> dict:
    """The Spark engine's options for `run_score` (given with the local engine, they are refused there)."""
    return {"master": master, "conf": parse_spark_conf(conf) if engine == "spark" else conf,
            "partition_by": partition_by}


@main.group()
def experiment() -> None:
    """Reproduce an experiment spec (experiments/<name>.yaml): bench JSON, results table, plots.

    \b
    Examples:
      offerlab experiment check experiments/credit_german.yaml
      offerlab experiment run experiments/credit_german.yaml
      offerlab experiment run experiments/uplift_hillstrom.yaml --quick --out-dir /tmp/results
    """


@experiment.command("run")
@click.argument("spec", type=click.Path(dir_okay=False))
@data_spec_options
@click.option("--out-dir", type=click.Path(file_okay=False), default="experiments/results", show_default=True,
              help="Writes <out-dir>/<name>/<name>.json/.md/.csv and plots (whole, or not at all).")
@click.option("--quick", is_flag=True, help="Smoke run: the family's tiny overlay plus the spec's `quick:` block, "
              "first seed only; outputs go to <out-dir>/<name>_quick/.")
@click.option("--track/--no-track", default=True, show_default=True, help="Log the results as one MLflow run.")
def experiment_run(spec: str, data_spec: str | None, data_sets: tuple[str, ...], out_dir: str, quick: bool,
                   track: bool) -> None:
    """Run the spec through the family's benchmark and write its results table and plots.

    \b
    Examples:
      offerlab experiment run experiments/timing_cdnow.yaml
      offerlab experiment run experiments/credit_german.yaml --quick --no-track
      offerlab experiment run experiments/credit_german.yaml --data mydata.yaml   # the protocol on your data
    """
    from offerlab.data.spec import parse_sets
    from offerlab.experiment import run_experiment
    from offerlab.experiment_report import markdown_table

    out = run_experiment(spec, out_dir, quick=quick, track=track, data_spec=data_spec,
                         data_sets=parse_sets(data_sets))
    click.echo(markdown_table(out["table"]))
    click.echo(f"wrote {', '.join(str(p) for p in out['files'])} in {out['seconds']:.0f}s")
    if out["run_link"]:
        click.echo(f"MLflow: {out['run_link']}")


@experiment.command("check")
@click.argument("spec", type=click.Path(dir_okay=False))
@data_spec_options
@click.option("--quick", is_flag=True, help="Check the quick-mode overlay too.")
def experiment_check(spec: str, data_spec: str | None, data_sets: tuple[str, ...], quick: bool) -> None:
    """Validate a spec (keys, files, metric and peer names, overlay against the family config); run nothing.

    \b
    Example:
      offerlab experiment check experiments/uplift_hillstrom.yaml
    """
    from offerlab.data.spec import parse_sets
    from offerlab.experiment import plan_experiment

    plan = plan_experiment(spec, quick, data_spec, parse_sets(data_sets))
    click.echo(f"ok: {plan.spec.family} on {plan.spec.data.dataset}, config {plan.config}, seeds {plan.seeds}, "
               f"peers {plan.peers}, metrics {plan.metrics}")


class FamilyGroup(click.Group):
    """`train` / `bench`: one subcommand per family whose `offerlab.<family>.cli` exists, imported on use.

    Importing a family pulls in torch and Lightning, so `offerlab --help` stays quick by not doing it.
    """

    def __init__(self, attr: str, **kw):
        super().__init__(**kw)
        self.attr = attr

    EXTRA = {"bench": {"basket": "offerlab.timing.basket_bench"}}  # benchmarks beside the families' own

    def list_commands(self, ctx: click.Context) -> list[str]:
        package_dir = Path(__file__).parent
        return [f for f in FAMILIES if (package_dir / f / "cli.py").is_file()] + list(self.EXTRA.get(self.attr, {}))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        extra = self.EXTRA.get(self.attr, {})
        module = extra.get(name, f"offerlab.{name}.cli")
        return getattr(importlib.import_module(module), self.attr, None)


def _attach_family_commands() -> None:
    """Add the `train` and `bench` groups once at least one family provides them."""
    for attr, doc in (
        ("train", "Train a model family from a YAML config and log it to MLflow.\n\n\b\nExamples:\n"
                  "  offerlab train credit --config configs/credit/german.yaml\n"
                  "  offerlab train timing --config configs/timing/cdnow.yaml --trainer gpu"),
        ("bench", "Benchmark ours against the peers on one split; write the JSON of DESIGN.md.\n\n\b\nExamples:\n"
                  "  offerlab bench uplift --dataset hillstrom --out uplift_hillstrom.json\n"
                  "  offerlab bench credit --dataset german --out credit_german.json"),
    ):
        group = FamilyGroup(attr, name=attr, help=doc)
        if group.list_commands(click.Context(group)):
            main.add_command(group)


_attach_family_commands()


def _attach_tune() -> None:
    """`offerlab tune FAMILY` (offerlab.tune_job; imports the family only when it runs)."""
    from offerlab.tune_job import tune

    main.add_command(tune)


_attach_tune()


def _attach_campaign() -> None:
    """`offerlab campaign plan | evaluate | simulate` (offerlab.campaign.cli)."""
    from offerlab.campaign.cli import campaign

    main.add_command(campaign)


_attach_campaign()


def _attach_monitor() -> None:
    """`offerlab monitor drift | performance` (offerlab.monitor.cli)."""
    from offerlab.monitor.cli import monitor

    main.add_command(monitor)


_attach_monitor()

if __name__ == "__main__":
    main()
