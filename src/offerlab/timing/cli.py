"""`offerlab train timing` and `offerlab bench timing` (attached by the main CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from offerlab.cli_options import data_spec_options, open_spec, refuse_beside_spec


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (e.g. configs/timing/cdnow.yaml; with --data default: configs/timing/default.yaml); "
                   "it may overlay `defaults: default.yaml`.")
@data_spec_options
@click.option("--data-path", default=None, help="Override data.data_path (file with --mapping, or the data folder).")
@click.option("--synth-dir", default=None, help="Override data.synth_dir (a folder written by `offerlab data synth`).")
@click.option("--trainer", "profile", default=None, help="Trainer profile from the config: cpu, gpu or ddp.")
@click.option("--max-epochs", type=click.IntRange(min=1), default=None, help="Override training.max_epochs.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Lightning progress bar.")
def train(config_path: str | None, data_spec: str | None, data_sets: tuple[str, ...], data_path: str | None,
          synth_dir: str | None, profile: str | None, max_epochs: int | None, progress: bool) -> None:
    """Train the timing model (neural point process) and log config, metrics, plots and model to MLflow.

    \b
    Examples:
      offerlab train timing --data mydata.yaml
      offerlab train timing --config configs/timing/cdnow.yaml
      offerlab train timing --config configs/timing/synth.yaml --synth-dir data/synth --trainer gpu
    """
    from offerlab.data.spec import family_overrides
    from offerlab.timing.train import CONFIG_DIR, load_config, run_training

    overrides: dict = {}
    spec = open_spec(data_spec, data_sets)
    if spec is not None:
        refuse_beside_spec(data_path=data_path, synth_dir=synth_dir)
        overrides = family_overrides(spec, "timing")
        config_path = config_path or str(CONFIG_DIR / "default.yaml")
    if config_path is None:
        raise ValueError("give --config (a timing YAML) or --data (a data spec)")
    if data_path:
        overrides.setdefault("data", {})["data_path"] = data_path
    if synth_dir:
        overrides.setdefault("data", {})["synth_dir"] = synth_dir
    if profile:
        overrides["trainer"] = {"profile": profile}
    if max_epochs:
        overrides["training"] = {"max_epochs": max_epochs}
    cfg = load_config(config_path, overrides)
    result = run_training(cfg, config_path=Path(config_path), progress=progress)
    click.echo(json.dumps(result, indent=1, default=str))


@click.command()
@click.option("--dataset", default=None, help="cdnow, synth, or a name for your own file (with --mapping); "
              "with --data: the spec's name.")
@data_spec_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the benchmark JSON.")
@click.option("--data-path", default=None, help="Data folder for cdnow, or your own file (with --mapping).")
@click.option("--mapping", default=None, type=click.Path(dir_okay=False), help="Column-mapping YAML for your file.")
@click.option("--calibration-end", default=None, help="Last day of the calibration period (YYYY-MM-DD).")
@click.option("--holdout-end", default=None, help="Last day of the holdout period (YYYY-MM-DD).")
@click.option("--synth-dir", default=None, type=click.Path(file_okay=False),
              help="Synthetic data folder; without it --customers/--seed generate one in memory.")
@click.option("--customers", type=click.IntRange(min=10), default=20_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Model config (default: configs/timing/<dataset>.yaml).")
@click.option("--models", default="offerlab,bg_nbd,pareto_nbd,naive", show_default=True,
              help="Comma-separated subset of models to run.")
@click.option("--progress/--no-progress", default=False, show_default=True)
def bench(dataset: str | None, data_spec: str | None, data_sets: tuple[str, ...], out: str, data_path: str | None,
          mapping: str | None, calibration_end: str | None, holdout_end: str | None, synth_dir: str | None,
          customers: int, seed: int, config_path: str | None, models: str, progress: bool) -> None:
    """Benchmark the timing model against BG/NBD, Pareto/NBD and a naive rate on one split.

    \b
    Examples:
      offerlab bench timing --data mydata.yaml --out timing_mine.json
      offerlab bench timing --dataset cdnow --out experiments/results/timing_cdnow.json
      offerlab bench timing --dataset synth --synth-dir data/synth --out experiments/results/timing_synth.json
      offerlab bench timing --dataset mine --data-path tx.csv --mapping configs/data/transactions_example.yaml \\
          --calibration-end 2024-03-31 --holdout-end 2024-06-30 --out mine.json
    """
    from offerlab.timing.bench import run_bench

    names = tuple(m.strip() for m in models.split(",") if m.strip())
    spec = open_spec(data_spec, data_sets)
    if spec is not None:
        refuse_beside_spec(data_path=data_path, mapping=mapping, synth_dir=synth_dir)
        spec.require("timing")
        dataset = dataset or spec.name
    if dataset is None:
        raise ValueError("give --dataset (cdnow, synth, or a name with --mapping) or --data (a data spec)")
    report = run_bench(dataset, out, data_path=data_path, mapping=mapping, calibration_end=calibration_end,
                       holdout_end=holdout_end, synth_dir=synth_dir, customers=customers, seed=seed,
                       config=config_path, models=names, progress=progress,
                       spec=str(spec.path) if spec else None, spec_set=spec.overrides if spec else None)
    rows = [f"{'model':<12}" + "".join(f"{k:>14}" for k in next(iter(report["models"].values())))]
    for name, m in report["models"].items():
        rows.append(f"{name:<12}" + "".join(f"{v:>14.4f}" for v in m.values()))
    click.echo("\n".join(rows))
    click.echo(f"wrote {out}")
