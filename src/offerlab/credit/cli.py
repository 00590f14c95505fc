"""`offerlab train credit` and `offerlab bench credit` (attached by the main CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from offerlab.cli_options import data_spec_options, spec_overrides

CONFIG_DIR = Path("configs") / "credit"


def _default_config(name: str) -> Path | None:
    """configs/credit/<name>.yaml from the working folder, else from the project checkout."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        p = root / CONFIG_DIR / f"{name}.yaml"
        if p.is_file():
            return p
    return None


def _quiet_lightning() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", module="lightning")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Credit config YAML (default: configs/credit/default.yaml).")
@data_spec_options
@click.option("--no-progress", is_flag=True, help="Hide the training progress bar.")
def train(config_path: str | None, data_spec: str | None, data_sets: tuple[str, ...], no_progress: bool) -> None:
    """Train the calibrated PD model, report it on a held-out split and log the run to MLflow.

    \b
    Examples:
      offerlab train credit --data mydata.yaml
      offerlab train credit --config configs/credit/german.yaml
    """
    from offerlab.credit.config import load_config
    from offerlab.credit.train import train as train_credit

    path = Path(config_path) if config_path else _default_config("default")
    if path is None:
        raise ValueError("no --config given and configs/credit/default.yaml not found")
    cfg = load_config(path, spec_overrides("credit", data_spec, data_sets))
    _quiet_lightning()
    summary = train_credit(cfg, progress=not no_progress)
    summary.pop("model", None)
    click.echo(json.dumps(summary, indent=1, default=str))


@click.command()
@click.option("--dataset", type=click.Choice(["german", "synth", "mapped"]), default=None,
              help="german (public file; the default), synth (synthetic marketplace) or mapped (your file, with "
                   "--mapping); with --data: the spec's applications.")
@data_spec_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Benchmark JSON to write.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Credit config YAML (default: configs/credit/<dataset>.yaml).")
@click.option("--data-path", type=click.Path(), default=None,
              help="Your applications file (with --mapping), or the folder of the public files.")
@click.option("--mapping", type=click.Path(dir_okay=False), default=None, help="Column-mapping YAML for --data-path.")
@click.option("--synth-dir", type=click.Path(file_okay=False), default=None, help="Synthetic data folder (synth).")
@click.option("--customers", type=click.IntRange(min=100), default=None, help="Synthetic customers to generate.")
@click.option("--seed", type=int, default=None, help="Seed of the synthetic data.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar over folds x epochs of ours (default: on a terminal only); one line per fold always.")
def bench(dataset: str | None, data_spec: str | None, data_sets: tuple[str, ...], out: str, config_path: str | None,
          data_path: str | None, mapping: str | None, synth_dir: str | None, customers: int | None,
          seed: int | None, progress: bool | None) -> None:
    """Run the credit protocol (stratified 5-fold CV, same folds) for ours, LightGBM, the WoE scorecards and a
    logistic regression: AUC, ECE and fit seconds of each, paired with ours fold by fold.

    \b
    Examples:
      offerlab bench credit --data mydata.yaml --out credit_mine.json
      offerlab bench credit --dataset german --out experiments/results/credit_german.json
      offerlab bench credit --dataset synth --customers 100000 --seed 0 --out credit_synth.json
      offerlab bench credit --dataset mapped --data-path apps.csv --mapping configs/data/applications_example.yaml --out mine.json
    """
    from offerlab.credit.bench import run_bench, write_json_atomic
    from offerlab.credit.config import load_config

    spec_over = spec_overrides("credit", data_spec, data_sets, dataset=dataset, data_path=data_path, mapping=mapping,
                                synth_dir=synth_dir, customers=customers, seed=seed)
    if spec_over:
        cfg = load_config(Path(config_path) if config_path else _default_config("default"), spec_over)
    else:
        cfg = _builtin_config(dataset or "german", config_path, data_path, mapping, synth_dir, customers, seed)
    _quiet_lightning()
    result = run_bench(cfg, progress=progress)
    write_json_atomic(result, out)
    click.echo(json.dumps({k: result[k] for k in ("dataset", "models", "oracle", "targets", "seconds")}, indent=1))
    click.echo(summary_table(result))


def summary_table(result: dict) -> str:
    """The bench's closing summary: one line per model (AUC, ECE, fit seconds), then the oracle gap."""
    lines = [f"credit bench on {result['dataset']} ({result['rows']:,} applications):",
             f"  {'model':<14}{'AUC':>8}{'ECE':>8}{'seconds':>10}"]
    for name, m in result["models"].items():
        lines.append(f"  {name:<14}{m['auc']:>8.4f}{m['ece']:>8.4f}{result['seconds'][name]:>10.1f}")
    for name, why in result.get("failed", {}).items():
        lines.append(f"  {name:<14} failed: {why[:80]}")
    if result.get("oracle"):
        o = result["oracle"]
        lines.append(f"  observable oracle AUC {o['auc_oracle']:.4f}: ours {o['auc_gap']:.4f} below it")
    return "\n".join(lines)


def _builtin_config(dataset: str, config_path: str | None, data_path: str | None, mapping: str | None,
                    synth_dir: str | None, customers: int | None, seed: int | None):
    """The bench config of a public, synthetic or column-mapped data set (no data spec)."""
    from offerlab.credit.config import CreditConfig, load_config

    if mapping and dataset != "mapped":
        dataset = "mapped"
    if dataset == "mapped" and not mapping:
        raise ValueError("--dataset mapped needs --mapping (a column-mapping YAML for --data-path)")
    if dataset != "synth" and (synth_dir or customers or seed is not None):
        raise ValueError("--synth-dir, --customers and --seed apply to --dataset synth only")
    path = Path(config_path) if config_path else _default_config("synth" if dataset == "synth" else "german")
    data = {"dataset": dataset}
    for key, value in (("data_path", data_path), ("mapping", mapping), ("synth_dir", synth_dir),
                       ("customers", customers), ("seed", seed)):
        if value is not None:
            data[key] = value
    if path is None:
        return CreditConfig.model_validate({"data": data, "terms": None})
    return load_config(path, {"data": data})
