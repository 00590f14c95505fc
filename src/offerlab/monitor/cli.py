"""`offerlab monitor drift | performance`: the weekly questions of whoever runs the services.

Exit codes (for a scheduler): 0 nothing to report; 2 bad input (the message names it); drift: 3 a moderate shift
(PSI >= 0.10, with `--fail-on moderate`), 4 a significant one (>= 0.25); performance: 3 a degradation beyond the
tolerance.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import click

log = logging.getLogger("offerlab.monitor")
EXPERIMENT = "offerlab-monitor"
RUN_ID = re.compile(r"(?:runs:/)?([0-9a-f]{32})/?")
REFERENCE_ARTIFACT = "reference/decisions.parquet"


@click.group()
def monitor() -> None:
    """Watch the served models: drift of inputs and scores, performance on matured outcomes.

    \b
    Examples:
      offerlab monitor drift --reference decisions/day=2025-01-0[1-7] --current decisions/day=2025-01-08
      offerlab monitor drift --reference 3f2a...c1 --current decisions/ --since 2025-01-08
      offerlab monitor performance --decisions decisions/ --outcomes purchases.parquet --outcomes defaults.parquet
    """


def _start_run(name: str):
    """An MLflow run in the `offerlab-monitor` experiment (artifacts beside a local SQLite store)."""
    import mlflow

    from offerlab import tracking
    from offerlab.quiet import hushed

    uri = tracking.tracking_uri()
    mlflow.set_tracking_uri(uri)
    with hushed():
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            location = None
            if uri.startswith("sqlite:///"):
                location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
            try:
                mlflow.create_experiment(EXPERIMENT, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                pass
        mlflow.set_experiment(EXPERIMENT)
    return mlflow.start_run(run_name=name, tags={"offerlab.family": "monitor"})


def _read(sources: tuple[str, ...] | list[str], since=None, until=None):
    from offerlab.monitor.decision_log import read_decisions

    return read_decisions(list(sources), since, until)


def read_reference(reference: str):
    """A decision log (file, folder, URL) or an MLflow run that logged one (`monitor drift` keeps its window)."""
    m = RUN_ID.fullmatch(reference)
    if m and not Path(reference).exists():
        import mlflow

        from offerlab import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri())
        try:
            path = mlflow.artifacts.download_artifacts(run_id=m.group(1), artifact_path=REFERENCE_ARTIFACT,
                                                       dst_path=tempfile.mkdtemp(prefix="offerlab-ref-"))
        except Exception as e:  # noqa: BLE001 - one line naming the run
            raise ValueError(f"--reference {reference}: no {REFERENCE_ARTIFACT} in that MLflow run "
                             f"({str(e).splitlines()[0][:200]})") from None
        return _read([path])
    return _read([reference])


@monitor.command("drift")
@click.option("--reference", required=True, help="Reference window: a decision log (parquet file or folder, "
              "postgresql:// URL) or an MLflow run id of an earlier `monitor drift` (its current window).")
@click.option("--current", multiple=True, required=True, help="Current window's decision log (repeat for several).")
@click.option("--since", default=None, help="Current window: first day kept (YYYY-MM-DD).")
@click.option("--until", default=None, help="Current window: last day kept (YYYY-MM-DD).")
@click.option("--bins", type=click.IntRange(min=2), default=10, show_default=True, help="Quantile bins of numbers.")
@click.option("--fail-on", type=click.Choice(["moderate", "significant"]), default="moderate", show_default=True,
              help="Exit non-zero from this PSI status on (moderate 0.10, significant 0.25).")
@click.option("--out", default="drift_report.md", show_default=True, help="Markdown report.")
@click.option("--track/--no-track", default=True, show_default=True, help="Log an MLflow run (offerlab-monitor).")
def drift_cmd(reference, current, since, until, bins, fail_on, out, track) -> None:
    """PSI per family of every logged input feature and of the scores; refusal shares; exit 3/4 on drift."""
    from offerlab.monitor import drift

    ref = read_reference(reference)
    cur = _read(current, since, until)
    if not len(ref) or not len(cur):
        raise ValueError(f"{'--reference' if not len(ref) else '--current'} holds no decision records")
    table, refusals = drift.drift_table(ref, cur, bins), drift.refusal_table(ref, cur)
    meta = {"reference": reference, "current": list(current), "n_reference": len(ref), "n_current": len(cur)}
    Path(out).write_text(drift.markdown(table, refusals, meta))
    code = drift.exit_code(table, fail_on)
    flagged = table[table["status"] != "stable"]
    click.echo(f"drift: {len(table)} variables, {len(flagged)} flagged (worst {drift.worst_status(table)}); "
               f"report {out}")
    for r in flagged.itertuples():
        click.echo(f"  {r.family}.{r.variable}: PSI {r.psi:.3f} ({r.status})")
    if track:
        import mlflow
        import pandas as pd

        from offerlab.monitor.decision_log import conform

        with _start_run("drift") as run:
            mlflow.log_params({"reference": reference[:250], "current": ",".join(current)[:250], "bins": bins})
            mlflow.log_metrics({"n_reference": len(ref), "n_current": len(cur), "n_flagged": len(flagged),
                                "max_psi": float(table["psi"].max()) if len(table) else 0.0})
            mlflow.log_metrics({f"psi.{r.family}.{r.variable}"[:250]: float(r.psi) for r in table.itertuples()})
            mlflow.log_artifact(out)
            mlflow.log_text(table.to_csv(index=False), "psi.csv")
            fig = drift.psi_figure(table)
            mlflow.log_figure(fig, "psi.png")
            with tempfile.TemporaryDirectory() as tmp:  # this window, as a later run's reference (no keys)
                raw = pd.concat([_raw(c) for c in current], ignore_index=True)
                raw = conform(raw)
                if since:
                    raw = raw[raw["day"] >= since]
                if until:
                    raw = raw[raw["day"] <= until]
                path = Path(tmp) / "decisions.parquet"
                drift.reference_frame(raw).to_parquet(path, index=False)
                mlflow.log_artifact(str(path), "reference")
        click.echo(f"MLflow run {run.info.run_id} (experiment {EXPERIMENT}); use it as --reference later")
    sys.exit(code)


def _raw(source: str):
    from offerlab.monitor.decision_log import DEFAULT_TABLE, TABLE_ENV, PostgresSink, _read_parquet

    if source.startswith(("postgresql://", "postgres://")):
        return PostgresSink(source, os.environ.get(TABLE_ENV, DEFAULT_TABLE)).read()
    return _read_parquet(source)


@monitor.command("performance")
@click.option("--decisions", multiple=True, required=True, help="Decision log (parquet file or folder, "
              "postgresql:// URL); repeat for several.")
@click.option("--outcomes", multiple=True, required=True, help="Matured outcomes keyed by customer_id: purchases "
              "(timestamp), campaign outcomes (conversion, revenue) or applications (default); repeat.")
@click.option("--observed-until", default=None, help="End of observation of the purchases (default: the end of "
              "the day of the latest purchase).")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Flag a figure worse than at promotion by more than this (absolute: AUC, C-index, ECE).")
@click.option("--out", default="performance_report.md", show_default=True, help="Markdown report.")
@click.option("--track/--no-track", default=True, show_default=True, help="Log an MLflow run (offerlab-monitor).")
def performance_cmd(decisions, outcomes, observed_until, tolerance, out, track) -> None:
    """Join matured outcomes to the logged decisions; per family figures vs promotion; exit 3 on degradation."""
    import pandas as pd

    from offerlab.monitor import performance as perf
    from offerlab.monitor.decision_log import KEY_ENV

    key = os.environ.get(KEY_ENV, "")
    if not key:
        raise ValueError(f"set {KEY_ENV} to the decision log's key: the outcomes' customer ids are hashed with it "
                         "to join the logged decisions")
    d = _read(decisions)
    tables = {}
    for path in outcomes:
        if not Path(path).is_file():
            raise ValueError(f"outcomes file {path} does not exist")
        try:
            tables[path] = pd.read_parquet(path) if not path.endswith(".csv") else pd.read_csv(path)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"outcomes file {path} is not a readable parquet/CSV file: {e}") from None
    report = perf.performance_report(d, tables, key, observed_until=observed_until)
    try:
        promoted = perf.promoted_figures(d)
    except Exception as e:  # noqa: BLE001 - no registry reachable: the figures are reported without comparison
        log.info("no promotion figures (%s)", type(e).__name__)
        promoted = {}
    flags = perf.degradations(report, promoted, tolerance)
    meta = {"decisions": list(decisions), "outcomes": list(outcomes), "n_decisions": len(d), "tolerance": tolerance}
    Path(out).write_text(perf.markdown(report, promoted, flags, meta))
    click.echo(json.dumps({"report": report, "promoted": promoted, "degraded": flags}, indent=1, default=str))
    if track:
        import mlflow

        with _start_run("performance") as run:
            mlflow.log_params({"decisions": ",".join(decisions)[:250], "tolerance": tolerance})
            mlflow.log_metrics({f"{fam}.{k}": float(v) for fam, figs in report.items() for k, v in figs.items()
                                if isinstance(v, int | float) and not isinstance(v, bool)})
            mlflow.log_metric("n_degraded", len(flags))
            mlflow.log_artifact(out)
        click.echo(f"MLflow run {run.info.run_id} (experiment {EXPERIMENT})")
    sys.exit(3 if flags else 0)
