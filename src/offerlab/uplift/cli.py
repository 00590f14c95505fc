"""`offerlab train uplift` and `offerlab bench uplift` (attached by the main CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from offerlab.cli_options import data_spec_options, spec_overrides
from offerlab.config import deep_merge

CONFIG_DIR = Path("configs/uplift")


def _default_config(dataset: str) -> Path | None:
    """configs/uplift/<dataset or default>.yaml from the working folder, else from the project checkout."""
    name = dataset if dataset in ("synth", "hillstrom") else "default"
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (root / CONFIG_DIR / f"{name}.yaml").is_file():
            return root / CONFIG_DIR / f"{name}.yaml"
    return None


@click.command("bench")
@click.option("--dataset", type=click.Choice(["hillstrom", "synth", "mapped"]), default=None,
              help="hillstrom (default), synth or mapped (a file with --mapping); with --data: the spec's campaign.")
@data_spec_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Benchmark JSON to write.")
@click.option("--outcome", type=click.Choice(["visit", "conversion", "spend"]), default=None,
              help="Outcome (Hillstrom: visit is the protocol's primary).")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="Seeds of the split.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Uplift YAML (default: configs/uplift/<dataset>.yaml when present).")
@click.option("--data-path", type=click.Path(), default=None, help="Campaign file (with --mapping) or data folder.")
@click.option("--mapping", type=click.Path(dir_okay=False), default=None, help="Column-mapping YAML (campaign table).")
@click.option("--synth-dir", type=click.Path(file_okay=False), default=None, help="Synthetic data folder.")
@click.option("--customers", type=click.IntRange(min=100), default=None, help="Generate synthetic data of this size.")
@click.option("--seed", "synth_seed", type=int, default=None, help="Synthetic generator seed.")
@click.option("--margin", type=float, default=None, help="Profit per unit of list-price revenue for the policy.")
@click.option("--contact-cost", type=float, default=None, help="Cost per contacted customer.")
@click.option("--models", default="offerlab,s_learner,t_learner,x_learner", show_default=True,
              help="Comma-separated models to run.")
@click.option("--feature-oracle/--no-feature-oracle", default=True, show_default=True,
              help="Synthetic data: also fit the (slow) feature-ceiling reference.")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None,
              help="Also write every model's out-of-sample predictions per split (parquet, raw ids: keep it local).")
def bench(dataset, data_spec, data_sets, out, outcome, seeds, config_path, data_path, mapping, synth_dir, customers,
          synth_seed, margin, contact_cost, models, feature_oracle, predictions) -> None:
    """Benchmark ours against S/T/X-learners with gradient boosting on the same splits; write one JSON.

    \b
    Examples:
      offerlab bench uplift --data mydata.yaml --out uplift_mine.json
      offerlab bench uplift --dataset hillstrom --out experiments/results/uplift_hillstrom.json
      offerlab bench uplift --dataset synth --seed 0 --out experiments/results/uplift_synth.json
      offerlab bench uplift --dataset mapped --data-path log.csv --mapping configs/data/campaign_example.yaml \\
          --margin 0.3 --contact-cost 0.05 --out mine.json
    """
    from offerlab.uplift.bench import PEERS, run_bench
    from offerlab.uplift.config import load_config

    overrides = spec_overrides("uplift", data_spec, data_sets, dataset=dataset, data_path=data_path, mapping=mapping,
                                synth_dir=synth_dir, customers=customers, synth_seed=synth_seed)
    dataset = "spec" if overrides else (dataset or "hillstrom")
    if mapping is not None:
        dataset = "mapped"
    if dataset == "mapped" and mapping is None:
        raise ValueError("--dataset mapped needs --mapping (a column-mapping YAML for the campaign table)")
    chosen = tuple(m.strip() for m in models.split(",") if m.strip())
    unknown = [m for m in chosen if m not in ("offerlab", *PEERS)]
    if unknown or not chosen:
        raise ValueError(f"unknown model {unknown[:1] or models!r}; choose from {('offerlab', *PEERS)}")
    overrides = deep_merge(overrides, {"data": {"dataset": dataset}, "policy": {}})
    for key, value in (("outcome", outcome), ("data_path", data_path), ("mapping", mapping),
                       ("synth_dir", synth_dir), ("customers", customers), ("synth_seed", synth_seed)):
        if value is not None:
            overrides["data"][key] = value
    if margin is not None:
        overrides["policy"]["margin"] = margin
    if contact_cost is not None:
        overrides["policy"]["contact_cost"] = contact_cost
    cfg = load_config(config_path or _default_config("default" if dataset == "spec" else dataset), overrides)
    result = run_bench(cfg, out, seeds=seeds, models=chosen, feature_oracle=feature_oracle, predictions=predictions)
    click.echo(json.dumps({"out": out, "seconds": result["seconds"], "targets": result["targets"]}, indent=1,
                          default=float))


@click.command("train")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Uplift YAML config (with --data default: configs/uplift/default.yaml).")
@data_spec_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the model and the test-split recommendations here.")
@click.option("--progress/--no-progress", default=True, help="Lightning progress bar.")
@click.option("--campaign-log", "campaign_logs", multiple=True, type=click.Path(dir_okay=False),
              help="A past campaign's log (`offerlab campaign evaluate --log-out`) to learn from as well, weighted by "
                   "its logged probabilities (repeatable).")
def train(config_path: str | None, data_spec: str | None, data_sets: tuple[str, ...], out_dir: str | None,
          progress: bool, campaign_logs: tuple[str, ...]) -> None:
    """Train the multi-treatment uplift model from a YAML config and log it to MLflow (offerlab-uplift).

    \b
    Examples:
      offerlab train uplift --data mydata.yaml
      offerlab train uplift --config configs/uplift/hillstrom.yaml
      offerlab train uplift --data mydata.yaml --campaign-log week1-log.parquet --campaign-log week2-log.parquet
    """
    from offerlab.uplift.config import load_config
    from offerlab.uplift.train import train_from_config

    overrides = spec_overrides("uplift", data_spec, data_sets)
    config_path = config_path or (str(_default_config("default")) if overrides else None)
    if config_path is None:
        raise ValueError("give --config (an uplift YAML) or --data (a data spec)")
    extra = {"trainer": {"enable_progress_bar": progress}}
    if campaign_logs:
        missing = [p for p in campaign_logs if not Path(p).is_file()]
        if missing:
            raise ValueError(f"--campaign-log {missing[0]}: file not found")
        extra["data"] = {"campaign_logs": [str(Path(p).resolve()) for p in campaign_logs]}
    cfg = load_config(config_path, deep_merge(overrides, extra))
    summary = train_from_config(cfg, config_path=config_path, out_dir=Path(out_dir) if out_dir else None)
    click.echo(json.dumps(summary, indent=1, default=float))
