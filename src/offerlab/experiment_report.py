"""Results tables and plots of an experiment, built from its bench JSON alone (so they can be re-drawn).

Table: one row per model, one column per reported metric; a metric reported per treatment becomes one
column per level (`qini.Mens E-Mail`), a {"mean", "std"} value a column plus `<column>_std`, a
confidence interval `<column>.low` and `<column>.high`. The CSV holds these raw numbers; the markdown
shows `mean ± std` and `[low, high]`.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

OURS = "offerlab"


def metric_cells(name: str, value) -> dict[str, float]:
    """One metric value of the bench JSON -> flat table cells (see the module docstring)."""
    if isinstance(value, bool) or value is None:
        return {name: math.nan}
    if isinstance(value, int | float):
        return {name: float(value)}
    if isinstance(value, list | tuple) and len(value) == 2:
        return {f"{name}.low": float(value[0]), f"{name}.high": float(value[1])}
    if isinstance(value, dict) and {"mean", "std"} <= set(value):  # (credit's auc_fold also lists its values)
        return {name: float(value["mean"]), f"{name}_std": float(value["std"])}
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(metric_cells(f"{name}.{k}", v))
        return out
    return {}  # strings (e.g. the name of the best single level) are not table numbers


def model_cells(metrics: dict, names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in names:
        out.update(metric_cells(n, metrics.get(n)))
    return out


def results_table(result: dict, metrics: list[str]) -> pd.DataFrame:
    """The experiment's table (index = model, ours first) from its bench JSON."""
    if "runs" in result:  # models already hold flat columns aggregated over seeds
        rows = {m: model_cells(v, list(v)) for m, v in result["models"].items()}
    else:
        rows = {m: model_cells(v, metrics) for m, v in result["models"].items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    flat = [c for c in table.columns if c.endswith("_std") and (table[c].fillna(0) == 0).all()]
    table = table.drop(columns=flat)  # a spread of exactly 0 for every model: one seed, nothing to show
    table.index.name = "model"
    order = [OURS] + [m for m in table.index if m != OURS] if OURS in table.index else list(table.index)
    return table.loc[order]


def aggregate_runs(runs: list[dict], metrics: list[str]) -> dict:
    """Per model and table column, mean and std (ddof=1) over the runs of several seeds."""
    out: dict = {}
    for model in runs[0]["models"]:
        cells = pd.DataFrame([model_cells(r["models"][model], metrics) for r in runs])
        cells = cells[[c for c in cells.columns if not c.endswith("_std")]]  # within-run spreads (folds)
        out[model] = {c: {"mean": float(cells[c].mean()), "std": float(cells[c].std(ddof=1))} for c in cells}
    return out


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.4f}"


def markdown_table(table: pd.DataFrame) -> str:
    """`mean ± std`, `[low, high]`, plain numbers otherwise; ours in bold."""
    cols = [c for c in table.columns if not c.endswith(("_std", ".high"))]
    heads = [c.removesuffix(".low") for c in cols]
    lines = ["| model | " + " | ".join(heads) + " |", "|---" * (len(cols) + 1) + "|"]
    for model, row in table.iterrows():
        cells = []
        for c in cols:
            if c.endswith(".low"):
                cells.append(f"[{_fmt(row[c])}, {_fmt(row[c.removesuffix('.low') + '.high'])}]")
            elif f"{c}_std" in table.columns and np.isfinite(row[f"{c}_std"]):
                cells.append(f"{_fmt(row[c])} ± {_fmt(row[f'{c}_std'])}")
            else:
                cells.append(_fmt(row[c]))
        name = f"**{model}**" if model == OURS else str(model)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(result: dict, table: pd.DataFrame) -> str:
    e = result["experiment"]
    seeds = e["seeds"]
    spread = ("± = std over the seeds" if "runs" in result else
              "± = std over the split seeds" if result["task"] == "uplift" else
              "auc_fold ± = std over the folds" if result["task"] == "credit" else "one run")
    secs = ", ".join(f"{m} {s:.0f}s" for m, s in result.get("seconds", {}).items())
    return "\n\n".join([
        f"# {e['name']}{' (quick)' if e['quick'] else ''}: {result['task']} on {result['dataset']}",
        markdown_table(table),
        f"Seeds {seeds}; {spread}. Fit + score seconds: {secs}; whole experiment {e.get('seconds', 0):.0f}s.",
        f"Protocol: {result['protocol']}",
        f"Spec `{e['spec']}`, config `{e['config']}`, overlay `{json.dumps(e['overlay'])}`.",
    ]) + "\n"


def plot_metrics(table: pd.DataFrame, path: Path) -> Path:
    """One panel per metric column, a point per model with its std; ours highlighted. Points, not bars:
    the axis is zoomed to the models' range, where the differences are."""
    import matplotlib.pyplot as plt

    cols = [c for c in table.columns if not c.endswith(("_std", ".low", ".high")) and table[c].notna().any()]
    ncol = min(4, len(cols))
    nrow = math.ceil(len(cols) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    colors = ["tab:red" if m == OURS else "tab:gray" for m in table.index]
    for ax, c in zip(axes.flat, cols, strict=False):
        err = table[f"{c}_std"].fillna(0).to_numpy() if f"{c}_std" in table.columns else np.zeros(len(table))
        for i, (v, e, color) in enumerate(zip(table[c].to_numpy(), err, colors, strict=True)):
            ax.errorbar(i, v, yerr=e, fmt="o", color=color, capsize=3)
        ax.margins(x=0.2, y=0.2)
        ax.set_xticks(range(len(table)), table.index, rotation=45, ha="right", fontsize=7)
        ax.set_title(c, fontsize=9)
    for ax in list(axes.flat)[len(cols):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_policy(result: dict, path: Path) -> Path:
    """Uplift: each model's policy value (95% CI) beside treat-none (0) and the best single level."""
    import matplotlib.pyplot as plt

    models = list(result["models"])
    value = [result["models"][m]["policy_value"]["mean"] for m in models]
    ci = np.array([result["models"][m]["policy_value_ci"] for m in models], dtype=float)
    single = result["models"][models[0]]["best_single_value"]["mean"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar(range(len(models)), value, yerr=[np.subtract(value, ci[:, 0]), ci[:, 1] - value], fmt="o",
                capsize=4, color="tab:red")
    ax.axhline(0, color="k", lw=0.8, label="treat none")
    ax.axhline(single, color="tab:blue", ls="--", lw=0.8, label="best single level")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("incr. profit / customer", fontsize=8)
    ax.set_title("policy value (IPW, 95% CI)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict, table: pd.DataFrame, plots: list[str], folder: Path, stem: str) -> list[Path]:
    """JSON, markdown, CSV and the plots into `folder` (a staging folder; the caller moves them)."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md, csv = folder / f"{stem}.json", folder / f"{stem}.md", folder / f"{stem}.csv"
    json_path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    md.write_text(markdown_report(result, table))
    table.to_csv(csv)
    paths = [json_path, md, csv]
    if "metrics" in plots:
        paths.append(plot_metrics(table, folder / f"{stem}_metrics.png"))
    if "policy" in plots:
        paths.append(plot_policy(result, folder / f"{stem}_policy.png"))
    return paths


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Every finite table number as an MLflow metric `<model>.<column>`."""
    return {f"{m}.{c}": float(v) for m, row in table.iterrows() for c, v in row.items() if np.isfinite(v)}


def redraw(json_path: str | Path, metrics: list[str] | None = None, plots: list[str] | None = None) -> list[Path]:
    """Re-write an experiment's table and plots beside its JSON (e.g. after a change of plot style)."""
    json_path = Path(json_path)
    result = json.loads(json_path.read_text())
    info = result["experiment"]
    table = results_table(result, metrics or info["metrics"])
    return publish(result, table, plots or info["plots"], json_path.parent, json_path.stem)


def publish(result: dict, table: pd.DataFrame, plots: list[str], dest: Path, stem: str) -> list[Path]:
    """`write_outputs` into a staging folder inside `dest`, then move each file in: none appears half-written."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{stem}.", dir=dest) as tmp:
        staged = write_outputs(result, table, plots, Path(tmp), stem)
        for p in staged:
            p.replace(dest / p.name)
    return [dest / p.name for p in staged]
