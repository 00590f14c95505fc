"""Experiment specs: one small YAML names the data, the family, config overlays, seeds and what to report.

`run_experiment` reproduces a spec by calling the family's own benchmark (`offerlab.<family>.bench`, the
same functions `offerlab bench` runs; no protocol is re-implemented here) once per seed, or once for all
seeds where the protocol itself repeats over seeds (uplift splits), then writes the bench JSON, a results
table (markdown + CSV) and plots into `<out-dir>/<name>/` (beside, never over, `offerlab bench` JSONs) and
logs them as one MLflow run in the family's experiment. Everything is written to a temporary folder first and moved into place
only when the whole run succeeded, so a failed run never overwrites earlier results.

Seeds: seed 0 always reproduces the family config as it is; seed s shifts the family's own seeds by s
(timing: ensemble member seeds + 1000 s; uplift: the split seed; credit: model and fold seed).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from offerlab.config import deep_merge, expand_dotted, flatten

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PLOTS = ("metrics", "policy")


# ------------------------------------------------------------------------------------------------------
# the spec
# ------------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    """Which data: a named data set, your file with a column mapping, or a synthetic marketplace."""

    dataset: str = Field(description="cdnow / hillstrom / german / synth, mapped (with data_path + mapping), or "
                         "spec (with spec: a data spec YAML)")
    data_path: str | None = None
    mapping: str | None = None
    spec: str | None = Field(None, description="a data spec YAML: the files, semantics, economics and dates")
    spec_set: dict = Field(default_factory=dict, description="dotted-key overrides of the data spec")
    synth_dir: str | None = None
    customers: int | None = Field(None, ge=100, description="synthetic customers to generate")
    synth_seed: int | None = None
    calibration_end: str | None = Field(None, description="timing on your own data: last calibration day")
    holdout_end: str | None = None


class ReportSpec(_Strict):
    """What the results table and plots show (defaults: the family's protocol metrics and every peer)."""

    metrics: list[str] | None = Field(None, min_length=1)
    peers: list[str] | None = None
    plots: list[Literal["metrics", "policy"]] = Field(default_factory=lambda: ["metrics"])


class QuickSpec(_Strict):
    """What `--quick` changes on top of the family's built-in smoke-run overlay."""

    overlay: dict = Field(default_factory=dict)
    seeds: list[int] | None = Field(None, min_length=1)


class ExperimentSpec(_Strict):
    name: str | None = Field(None, description="results file stem (default: the spec file's stem)")
    description: str = ""
    family: Literal["timing", "uplift", "credit"]
    data: DataSpec
    config: str | None = Field(None, description="family config YAML (default: configs/<family>/<dataset>.yaml)")
    overlay: dict = Field(default_factory=dict, description="merged onto the config; dotted or nested keys")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    report: ReportSpec = Field(default_factory=ReportSpec)
    quick: QuickSpec = Field(default_factory=QuickSpec)
    threads: int = Field(1, ge=1, description="torch CPU threads")

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a spec; the error names the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"experiment spec not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"experiment spec {path} must be a mapping of keys")
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ValueError(f"experiment spec {path}: key '{key}': {first['msg']}") from None
    return spec.model_copy(update={"name": spec.name or path.stem})


def resolve_path(value: str | None, key: str, spec_path: Path) -> str | None:
    """A path named in a spec: as given if it exists, else relative to the project checkout."""
    if value is None:
        return None
    for p in (Path(value), PROJECT_ROOT / value):
        if p.exists():
            return str(p)
    raise ValueError(f"experiment spec {spec_path}: key '{key}': file not found: {value}")


# ------------------------------------------------------------------------------------------------------
# the families: how a spec maps onto each benchmark
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    metrics: tuple[str, ...]        # every metric key the bench reports per model
    default_metrics: tuple[str, ...]
    peers: tuple[str, ...]
    quick_overlay: dict             # a smoke run: seconds, not minutes
    load_config: Callable           # (path, overrides) -> validated config
    run: Callable                   # (Plan, out_json) -> list of bench JSONs (one per bench call)


@dataclass
class Plan:
    """Everything a run needs, resolved and validated before any work starts."""

    spec: ExperimentSpec
    spec_path: Path
    config: str
    overlay: dict
    seeds: list[int]
    peers: list[str]
    metrics: list[str]
    quick: bool


def _data_overrides(d: DataSpec, seed_key: str, family: str) -> dict:
    if d.spec is not None:
        from offerlab.data.spec import SpecData, family_overrides

        return family_overrides(SpecData.load(d.spec, d.spec_set), family)
    values = {"dataset": d.dataset, "data_path": d.data_path, "mapping": d.mapping, "synth_dir": d.synth_dir,
              "customers": d.customers, seed_key: d.synth_seed}
    return {"data": {k: v for k, v in values.items() if v is not None}}


def _timing_overlay(plan: Plan, seed: int) -> dict:
    from offerlab.timing.train import load_config

    members = load_config(plan.config, plan.overlay).training.seeds
    return deep_merge(plan.overlay, {"training": {"seeds": [m + 1000 * seed for m in members]}})


def _run_timing(plan: Plan, out: Path) -> list[dict]:
    from offerlab.timing.bench import run_bench

    d = plan.spec.data
    return [run_bench(d.dataset, out.with_suffix(f".seed{s}.json"), data_path=d.data_path, mapping=d.mapping,
                      calibration_end=d.calibration_end, holdout_end=d.holdout_end, synth_dir=d.synth_dir,
                      customers=d.customers or 20_000, seed=d.synth_seed or 0, config=plan.config,
                      models=("offerlab", *plan.peers), cfg_overrides=_timing_overlay(plan, s), progress=False,
                      spec=d.spec, spec_set=d.spec_set)
            for s in plan.seeds]


def _uplift_config(path: str, overlay: dict):
    from offerlab.uplift.config import load_config

    return load_config(path, overlay)


def _run_uplift(plan: Plan, out: Path) -> list[dict]:
    from offerlab.uplift.bench import run_bench

    seeds = plan.seeds
    cfg = _uplift_config(plan.config, plan.overlay)
    cfg.data.split_seed += seeds[0]
    return [run_bench(cfg, out, seeds=len(seeds), models=("offerlab", *plan.peers))]


def _credit_config(path: str, overlay: dict):
    from offerlab.credit.config import load_config

    return load_config(path, overlay)


def _run_credit(plan: Plan, out: Path) -> list[dict]:
    from offerlab.credit.bench import run_bench, write_json_atomic

    results = []
    for s in plan.seeds:
        cfg = _credit_config(plan.config, deep_merge(plan.overlay, {"evaluation": {"peers": plan.peers}}))
        cfg.seed += s
        cfg.evaluation.fold_seed += s
        results.append(run_bench(cfg))
        write_json_atomic(results[-1], out.with_suffix(f".seed{s}.json"))
    return results


def _timing_config(path: str, overlay: dict):
    from offerlab.timing.train import load_config

    return load_config(path, overlay)


TIMING_METRICS = ("count_mae", "count_rmse", "auc_holdout", "brier_holdout", "auc_30d", "brier_30d", "c_index",
                  "total_pred", "total_true")
FAMILIES: dict[str, Family] = {
    "timing": Family(
        metrics=TIMING_METRICS, default_metrics=TIMING_METRICS,
        peers=("bg_nbd", "pareto_nbd", "naive"),
        quick_overlay={"training": {"max_epochs": 1, "seeds": [0], "refit": False, "patience": 1},
                       "prediction": {"n_samples": 20}},
        load_config=_timing_config, run=_run_timing),
    "uplift": Family(
        metrics=("qini", "qini_area", "auuc", "uplift_at_30", "policy_value", "policy_value_ci", "policy_value_dr",
                 "share_treated", "treat_none_value", "best_single_value", "policy_minus_best_single"),
        default_metrics=("qini", "auuc", "uplift_at_30", "policy_value", "policy_value_ci", "best_single_value"),
        peers=("s_learner", "t_learner", "x_learner"),
        quick_overlay={"net": {"ensemble": 1}, "trainer": {"max_epochs": 2}},
        load_config=_uplift_config, run=_run_uplift),
    "credit": Family(
        metrics=("auc", "gini", "ks", "brier", "ece", "citl", "auc_fold"),
        default_metrics=("auc", "gini", "ks", "brier", "ece", "auc_fold"),
        peers=("lightgbm", "woe_logistic", "logistic"),
        quick_overlay={"net": {"members": 2, "patience": 2}, "trainer": {"max_epochs": 5}},
        load_config=_credit_config, run=_run_credit),
}


def _default_config(family: str, dataset: str) -> Path:
    folder = PROJECT_ROOT / "configs" / family
    named = folder / f"{dataset}.yaml"
    return named if named.is_file() else folder / "default.yaml"


def plan_experiment(spec_path: str | Path, quick: bool = False, data_spec: str | None = None,
                    data_sets: dict | None = None) -> Plan:
    """Load a spec and check everything it names (files, metric and peer names, overlay keys) before any work."""
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    fam = FAMILIES[spec.family]
    if data_spec is not None:  # --data: the user's data replace the spec's data block (and name the results)
        from offerlab.data.spec import read_spec

        mine = read_spec(data_spec, data_sets)
        spec = spec.model_copy(update={"data": DataSpec(dataset="spec", spec=data_spec, spec_set=dict(data_sets or {})),
                                       "name": f"{spec.name}-on-{mine.name}"})
    data = spec.data.model_copy(update={k: resolve_path(getattr(spec.data, k), f"data.{k}", spec_path)
                                        for k in ("data_path", "mapping", "synth_dir", "spec")})
    spec = spec.model_copy(update={"data": data})
    config = resolve_path(spec.config, "config", spec_path) or str(_default_config(spec.family, data.dataset))
    for key, names, allowed in (("report.metrics", spec.report.metrics, fam.metrics),
                                ("report.peers", spec.report.peers, fam.peers)):
        bad = [n for n in names or () if n not in allowed]
        if bad:
            raise ValueError(f"experiment spec {spec_path}: key '{key}': unknown {bad[0]!r} for family "
                             f"{spec.family}; expected some of {list(allowed)}")
    if "policy" in spec.report.plots and spec.family != "uplift":
        raise ValueError(f"experiment spec {spec_path}: key 'report.plots': 'policy' applies to family uplift only")
    overlay = expand_dotted(spec.overlay)
    seeds = spec.seeds
    if quick:
        overlay = deep_merge(deep_merge(overlay, fam.quick_overlay), expand_dotted(spec.quick.overlay))
        seeds = spec.quick.seeds or seeds[:1]
    if spec.family == "uplift" and seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"experiment spec {spec_path}: key 'seeds': uplift split seeds must be consecutive "
                         f"(the protocol runs split_seed, split_seed + 1, ...); got {seeds}")
    seed_key = "seed" if spec.family == "credit" else "synth_seed"
    if spec.family != "timing":  # timing takes its data as bench arguments
        overlay = deep_merge(overlay, _data_overrides(data, seed_key, spec.family))
    try:
        fam.load_config(config, overlay)
    except ValueError as e:
        raise ValueError(f"experiment spec {spec_path}: 'overlay' does not fit the {spec.family} config: {e}") from None
    peers = fam.peers if spec.report.peers is None else spec.report.peers  # [] = ours alone
    return Plan(spec, spec_path, config, overlay, list(seeds), list(peers),
                list(spec.report.metrics or fam.default_metrics), quick)


# ------------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------------
def combine_runs(runs: list[dict], plan: Plan) -> dict:
    """One bench JSON for the experiment: the bench's own when it ran once, else per-seed runs side by side
    with `models` as {model: {metric column: {"mean", "std"}}} over the seeds (DESIGN.md's seed shape)."""
    from offerlab.experiment_report import aggregate_runs

    info = {"name": plan.spec.name, "spec": str(plan.spec_path), "family": plan.spec.family, "seeds": plan.seeds,
            "quick": plan.quick, "config": plan.config, "overlay": plan.overlay, "metrics": plan.metrics,
            "plots": plan.spec.report.plots}
    if len(runs) == 1:
        return {**runs[0], "experiment": info}
    first = runs[0]
    return {"task": first["task"], "dataset": first["dataset"], "protocol": first["protocol"],
            "models": aggregate_runs(runs, plan.metrics), "oracle": None,
            "seconds": {m: round(sum(r["seconds"][m] for r in runs), 1) for m in first["seconds"]},
            "experiment": info, "runs": runs}


def run_experiment(spec_path: str | Path, out_dir: str | Path = "experiments/results", quick: bool = False,
                   track: bool = True, data_spec: str | None = None, data_sets: dict | None = None) -> dict:
    """Run a spec; write <name>.json/.md/.csv and <name>_<plot>.png into `out_dir`/<name>/ (<name>_quick in quick mode).

    Returns {"files": [...], "table": DataFrame, "seconds": float, "run_link": str | None}.
    """
    import torch

    from offerlab.experiment_report import publish, results_table

    plan = plan_experiment(spec_path, quick, data_spec, data_sets)
    torch.set_num_threads(plan.spec.threads)
    stem = plan.spec.name + ("_quick" if quick else "")
    out_dir = Path(out_dir) / stem  # one folder per experiment: never collides with `offerlab bench` JSONs
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"offerlab-{stem}-") as tmp:  # the bench's own scratch files
        runs = FAMILIES[plan.spec.family].run(plan, Path(tmp) / f"{stem}.json")
        result = combine_runs(runs, plan)
        result["experiment"]["seconds"] = round(time.perf_counter() - t0, 1)
        table = results_table(result, plan.metrics)
    files = publish(result, table, plan.spec.report.plots, out_dir, stem)
    seconds = time.perf_counter() - t0
    link = log_experiment(plan, result, table, files) if track else None
    return {"files": files, "table": table, "seconds": seconds, "run_link": link}


def log_experiment(plan: Plan, result: dict, table, files: list[Path]) -> str:
    """One MLflow run in the family's experiment: the spec as params, every table number, the outputs."""
    import mlflow

    from offerlab.experiment_report import table_metrics
    from offerlab.tracking import run_link, start_run

    params = {"spec": str(plan.spec_path), "config": plan.config, "seeds": json.dumps(plan.seeds),
              "quick": plan.quick, **{f"overlay.{k}": v for k, v in flatten(plan.overlay).items()}}
    with start_run(plan.spec.family, f"experiment-{plan.spec.name}",
                   tags={"offerlab.experiment": plan.spec.name, "offerlab.dataset": str(result["dataset"])}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics(table_metrics(table))
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="experiment")
    return run_link(run.info.run_id, run.info.experiment_id)

