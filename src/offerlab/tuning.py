"""Optuna tuning shared by every model family.

A search space is declared in YAML (`configs/<family>/search.yaml`):

    direction: minimize          # or maximize
    metric: val_loss             # what the family's objective returns and Lightning logs (for pruning)
    sampler: {name: tpe, seed: 0, n_startup_trials: 5}
    pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 2}
    params:
      model.hidden_size: {type: int, low: 16, high: 128, log: true}
      optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.cell: {type: categorical, choices: [gru, lstm]}

Dotted names address keys of the family's training config. The study lives in a storage URL
(`sqlite:///study.db`, `postgresql://...`, or `journal:./study.log`), so several workers share it and
a killed study resumes where it stopped with the same command: the target is a number of finished
trials, and trials of a killed worker are retried through Optuna's heartbeat (RDB storages).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from offerlab.config import load_yaml_model

log = logging.getLogger(__name__)


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs 'choices'")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"an {self.type} parameter needs low <= high")
        return self


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["tpe", "random"] = "tpe"
    seed: int = 0  # explicit: Optuna 5 changed TPE defaults, so results must not depend on them
    n_startup_trials: int = 5
    multivariate: bool = True


class PrunerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["median", "none"] = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 2


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    direction: Literal["minimize", "maximize"]
    metric: str
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    params: dict[str, ParamSpec]


def load_search_space(path: str | Path) -> SearchSpace:
    return load_yaml_model(path, SearchSpace, "search space file", missing=FileNotFoundError)


def set_dotted(config: dict, dotted: str, value: Any) -> None:
    """Set `config['a']['b'] = value` for 'a.b', refusing keys the config does not have."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, key in enumerate(parents):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"search parameter '{dotted}': the config has no key '{'.'.join(parents[: i + 1])}'")
        node = node[key]
    if not isinstance(node, dict) or leaf not in node:
        raise ValueError(f"search parameter '{dotted}': the config has no key '{dotted}'")
    node[leaf] = value


def base_params(config: dict, space: SearchSpace) -> dict[str, Any]:
    """The base config's own values of the searched parameters (those it sets), to enqueue as trial 0."""
    out: dict[str, Any] = {}
    for dotted in space.params:
        node: Any = config
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            out[dotted] = node
    return out


def apply_params(config: dict, params: dict[str, Any]) -> dict:
    out = copy.deepcopy(config)
    for k, v in params.items():
        set_dotted(out, k, v)
    return out


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            out[name] = trial.suggest_categorical(name, p.choices)
        elif p.type == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
    return out


def make_storage(url: str):
    """An Optuna storage from a URL: `journal:PATH` for a journal file, any SQLAlchemy URL otherwise."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    last_error: Exception | None = None
    for attempt in range(5):  # workers starting together race to create the schema; the loser retries
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=int(os.environ.get("OFFERLAB_TUNE_HEARTBEAT_S", "30")),
                grace_period=int(os.environ.get("OFFERLAB_TUNE_GRACE_S", "90")),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
        except Exception as e:  # sqlalchemy IntegrityError / ProgrammingError from the concurrent CREATE
            last_error = e
            time.sleep(0.5 * (attempt + 1))
    raise RuntimeError(f"could not open the Optuna storage {url}: {last_error}") from last_error


def _sampler(spec: SamplerSpec):
    import optuna

    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials,
                                      multivariate=spec.multivariate, constant_liar=True)


def _pruner(spec: PrunerSpec):
    import optuna

    if spec.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)


@dataclass
class StudyResult:
    study_name: str
    n_finished: int
    n_pruned: int
    best_value: float
    best_params: dict
    best_config_path: Path
    parent_run_id: str


def _parent_run(family: str, study_name: str, space: SearchSpace, base_config: dict) -> str:
    """The study's one MLflow parent run, shared by every worker and every resume.

    Found by tag; workers that start together may each create one, then all pick the earliest and the
    others delete theirs, so every trial ends up under the same parent.
    """
    import mlflow

    from offerlab import tracking

    exp_id = tracking.setup(family)

    def existing() -> list[str]:
        runs = mlflow.search_runs([exp_id], filter_string=f"tags.`offerlab.study` = '{study_name}'",
                                  order_by=["attributes.start_time ASC"], output_format="list")
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

    found = existing()
    if found:
        return found[0]
    with mlflow.start_run(run_name=f"tune-{study_name}", tags={"offerlab.family": family,
                                                              "offerlab.study": study_name}) as parent:
        mlflow.log_dict(space.model_dump(), "search_space.json")
        mlflow.log_dict(base_config, "base_config.json")
    chosen = existing()[0]
    if chosen != parent.info.run_id:
        mlflow.delete_run(parent.info.run_id)
    return chosen


Objective = Callable[[dict, list], float]
"""(config, extra Lightning callbacks) -> the metric; it runs inside an active MLflow parent run."""


def run_study(
    family: str,
    base_config: dict,
    space: SearchSpace,
    objective: Objective,
    *,
    trials: int,
    storage: str,
    study_name: str,
    out_path: str | Path,
    show_progress: bool = True,
) -> StudyResult:
    """Run (or resume) a study until it holds `trials` finished trials; write the best config as YAML."""
    import mlflow
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback


    for name in space.params:  # refuse a search space that does not fit the config before any work
        set_dotted(copy.deepcopy(base_config), name, None)
    store = make_storage(storage)
    settings = {"study_name": study_name, "storage": store, "sampler": _sampler(space.sampler),
                "pruner": _pruner(space.pruner)}
    try:  # the storage refuses a second study of one name, so exactly one of several workers starting together creates it
        study = optuna.create_study(direction=space.direction, **settings)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**settings)
        created = False
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if created:  # a new study: trial 0 is the base config, the value to beat (enqueued by its creator only)
        study.enqueue_trial(base_params(base_config, space), skip_if_exists=True)

    parent_id = _parent_run(family, study_name, space, base_config)
    study.set_user_attr("mlflow_parent_run_id", parent_id)

    def _objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        cfg = apply_params(base_config, params)
        callbacks = [PyTorchLightningPruningCallback(trial, monitor=space.metric)]
        with mlflow.start_run(run_id=parent_id):
            value = objective(cfg, callbacks)
        log.info("trial %d: %s=%.5f", trial.number, space.metric, value)
        return value

    done = len(study.get_trials(deepcopy=False, states=finished_states))
    if done < trials:
        log.info("study %s: %d of %d trials finished; running the rest", study_name, done, trials)
        study.optimize(
            _objective, n_trials=trials - done, gc_after_trial=True, show_progress_bar=show_progress,
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished_states)],
        )
    best = study.best_trial
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    header = (f"# best of study '{study_name}' ({storage}): trial {best.number}, "
              f"{space.metric}={best.value:.6g}\n")
    tmp.write_text(header + yaml.safe_dump(apply_params(base_config, best.params), sort_keys=False))
    tmp.replace(out_path)
    n_pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    with mlflow.start_run(run_id=parent_id):
        mlflow.log_metric(f"best_{space.metric}", best.value)
        mlflow.set_tags({f"best.{k}": str(v) for k, v in best.params.items()})
        mlflow.log_artifact(str(out_path))
    return StudyResult(study_name, len(study.get_trials(deepcopy=False, states=finished_states)), n_pruned,
                       best.value, best.params, out_path, parent_id)
