"""`offerlab tune FAMILY`: the study runner every family shares, around `offerlab.tuning.run_study`.

A family plugs in with `offerlab.<family>.tune`, which provides

    METRIC = ("val_auc", "maximize")       # what `objective` returns; search.yaml must name the same
    PRUNE_ON = "val_loss"                  # the Lightning metric (lower is better) the pruner watches per epoch
    base_config(path) -> dict              # the validated config as plain data (search keys address it)
    objective(cfg, callbacks) -> (value, run_id)   # train + log one run with the family's own train function

Each trial is the family's ordinary training run, nested under the study's parent run, so its model and
evaluation metrics are logged exactly as by `offerlab train` and `offerlab promote` takes its run id.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from types import ModuleType

import click

from offerlab.cli_options import data_spec_options, open_spec
from offerlab.config import parse_key_values

log = logging.getLogger(__name__)
PRUNED_TAG = "offerlab.trial_state"


def parse_overrides(items: tuple[str, ...]) -> dict[str, object]:
    """`--set key.sub=value` pairs -> {dotted key: value}."""
    return parse_key_values(items, "--set", "training.seeds=[0]")


def family_module(family: str) -> ModuleType:
    return importlib.import_module(f"offerlab.{family}.tune")


def check_space(family: str, module: ModuleType, space, search_path: str) -> None:
    """Refuse a search space whose metric or direction is not what the family's objective returns."""
    metric, direction = module.METRIC
    if (space.metric, space.direction) != (metric, direction):
        raise ValueError(f"search space {search_path}: metric must be '{metric}' with direction '{direction}' for "
                         f"{family} (what its objective returns), not '{space.metric}' / '{space.direction}'")


def _pruning_proxy(source: str, target: str, sign: float):
    import lightning.pytorch as pl

    class PublishForPruning(pl.Callback):
        """Publishes `sign * source` as `target` before the pruning callback reads it (same hook, earlier)."""

        def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if source in trainer.callback_metrics:
                trainer.callback_metrics[target] = sign * trainer.callback_metrics[source]

    return PublishForPruning()


def _quiet_trials() -> None:
    """One line per trial is enough: silence Lightning's banners and Optuna's repeated-step notices
    (ensemble members after the first report epochs the trial already holds)."""
    import warnings

    warnings.filterwarnings("ignore", message="The reported value is ignored")
    warnings.filterwarnings("ignore", module="lightning")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def make_objective(family: str, module: ModuleType, space, study_name: str):
    """The family's objective with pruning wired to its per-epoch loss and each trial run tagged."""
    import mlflow
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    metric = space.metric
    # the pruner compares intermediate values in the study's direction: a maximised metric prunes on -loss
    sign = -1.0 if space.direction == "maximize" else 1.0
    watched = module.PRUNE_ON if sign > 0 else f"neg_{module.PRUNE_ON}"

    def objective(cfg: dict, callbacks: list) -> float:
        callbacks = list(callbacks)
        for cb in callbacks:
            if isinstance(cb, PyTorchLightningPruningCallback):
                cb.monitor = watched
        if watched != module.PRUNE_ON:
            callbacks.insert(0, _pruning_proxy(module.PRUNE_ON, watched, sign))
        before = mlflow.last_active_run()
        try:
            value, run_id = module.objective(cfg, callbacks)
        except optuna.TrialPruned:
            last = mlflow.last_active_run()
            if last is not None and (before is None or last.info.run_id != before.info.run_id):
                client = mlflow.MlflowClient()
                client.set_tag(last.info.run_id, PRUNED_TAG, "pruned")
                # the run context closed on the TrialPruned exception and marked the run FAILED: it was stopped
                client.set_terminated(last.info.run_id, status="KILLED")
            raise
        client = mlflow.MlflowClient()
        client.log_metric(run_id, metric, float(value))
        client.set_tag(run_id, "offerlab.study", study_name)
        client.set_tag(run_id, PRUNED_TAG, "complete")
        return float(value)

    return objective


def best_trial_run(parent_id: str, metric: str, direction: str) -> str | None:
    """The finished child run of the study with the best objective value (the one to promote)."""
    import mlflow

    parent = mlflow.get_run(parent_id)
    runs = mlflow.search_runs(
        [parent.info.experiment_id], output_format="list", max_results=1,
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`{PRUNED_TAG}` = 'complete'",
        order_by=[f"metrics.{metric} {'DESC' if direction == 'maximize' else 'ASC'}"],
    )
    return runs[0].info.run_id if runs else None


def run_tune(family: str, config: str, search: str, trials: int, storage: str, study: str, out: str,
             overrides: dict[str, object], progress: bool, data_overrides: dict | None = None) -> dict:
    """Run or resume the study; returns what the command prints. `data_overrides`: the config keys a data spec
    sets (`offerlab.data.spec.family_overrides`), merged under the `--set` overrides."""
    import mlflow

    from offerlab import tracking
    from offerlab.config import deep_merge
    from offerlab.tuning import apply_params, load_search_space, run_study

    module = family_module(family)
    _quiet_trials()
    space = load_search_space(search)
    check_space(family, module, space, search)
    base = apply_params(deep_merge(module.base_config(config), data_overrides or {}), overrides)
    t0 = time.perf_counter()
    result = run_study(family, base, space, make_objective(family, module, space, study), trials=trials,
                       storage=storage, study_name=study, out_path=out, show_progress=progress)
    best_run = best_trial_run(result.parent_run_id, space.metric, space.direction)
    parent = mlflow.get_run(result.parent_run_id)
    return {"study": study, "finished": result.n_finished, "pruned": result.n_pruned, "metric": space.metric,
            "best_value": result.best_value, "best_params": result.best_params,
            "best_config": str(result.best_config_path), "best_run_id": best_run,
            "parent_run": tracking.run_link(result.parent_run_id, parent.info.experiment_id),
            "seconds": round(time.perf_counter() - t0, 1)}


@click.command("tune")
@click.argument("family", type=click.Choice(["timing", "uplift", "credit"]))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="The family's training config to start from (e.g. configs/credit/german.yaml; with --data "
                   "default: configs/<family>/default.yaml).")
@data_spec_options
@click.option("--search", "search_path", type=click.Path(dir_okay=False), default=None,
              help="Search space YAML (default: configs/<family>/search.yaml).")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Finished (complete or pruned) trials the study should hold; a resumed study runs the rest.")
@click.option("--storage", default="sqlite:///optuna.db", show_default=True,
              help="Optuna storage: sqlite:///FILE, journal:FILE or postgresql://... (shared by workers).")
@click.option("--study", "study_name", default=None, help="Study name (default: <family>-<config name>).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Best config YAML to write (default: best_<study>.yaml); `offerlab train` accepts it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Fixed config override for every trial, e.g. --set training.seeds=[0] (repeatable).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Optuna progress bar over trials.")
def tune(family: str, config_path: str | None, data_spec: str | None, data_sets: tuple[str, ...],
         search_path: str | None, trials: int, storage: str, study_name: str | None, out: str | None,
         sets: tuple[str, ...], progress: bool) -> None:
    """Tune a model family with Optuna: pruned trials, each a nested MLflow run; write the best config.

    Re-running the same command resumes a killed study; several workers may run it at once on one
    storage. Promote the best trial's run, or retrain from the best config first.

    \b
    Examples:
      offerlab tune credit --data mydata.yaml --trials 12 --study credit-mine
      offerlab tune credit --config configs/credit/german.yaml --trials 12 --study credit-german
      offerlab tune timing --config configs/timing/cdnow.yaml --trials 10 --set training.seeds=[0] \\
          --storage journal:optuna/timing.log --study timing-cdnow --out configs/timing/cdnow_tuned.yaml
      offerlab tune uplift --config configs/uplift/hillstrom.yaml --storage postgresql://me@db/optuna --study u1
      offerlab promote credit --run <best_run_id printed above>
    """
    from offerlab.data.spec import family_overrides

    spec = open_spec(data_spec, data_sets)
    data_overrides = family_overrides(spec, family) if spec is not None else None
    if config_path is None:
        if spec is None:
            raise ValueError("give --config (the family's training YAML) or --data (a data spec)")
        config_path = str(Path(__file__).resolve().parents[2] / "configs" / family / "default.yaml")
    study_name = study_name or f"{family}-{spec.name if spec else Path(config_path).stem}"
    if search_path is None:  # the working folder's configs/, else the checkout's
        rel = Path("configs") / family / "search.yaml"
        search_path = str(rel if rel.is_file() else Path(__file__).resolve().parents[2] / rel)
    out = out or f"best_{study_name}.yaml"
    summary = run_tune(family, config_path, search_path, trials, storage, study_name, out, parse_overrides(sets),
                       progress, data_overrides)
    click.echo(f"study {summary['study']}: {summary['finished']} trials ({summary['pruned']} pruned), best "
               f"{summary['metric']}={summary['best_value']:.5g} in {summary['seconds']:.0f}s")
    click.echo(f"best config: {summary['best_config']} (offerlab train {family} --config {summary['best_config']})")
    if summary["best_run_id"]:
        click.echo(f"best trial run: {summary['best_run_id']} (offerlab promote {family} --run "
                   f"{summary['best_run_id']})")
    click.echo(f"MLflow parent: {summary['parent_run']}")
