"""The main job on the embedded default: synthetic marketplace -> models -> MLflow -> scored results."""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from offerlab.registry import FAMILIES

log = logging.getLogger(__name__)


def synth_safely(n_customers: int, seed: int, out_dir: Path, *, overwrite: bool = False, **kw) -> dict[str, Path]:
    """Generate into a temporary sibling folder and move it into place only when complete.

    A failed or interrupted run leaves an existing data set in `out_dir` untouched; an existing,
    non-empty `out_dir` is refused unless `overwrite`.
    """
    from offerlab.data.synth import synth_to_dir

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"output folder {out_dir} is not empty; pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        synth_to_dir(n_customers, seed, tmp, **kw)  # kw: campaign_assignment
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {p.relative_to(out_dir).as_posix(): p for p in sorted(out_dir.rglob("*")) if p.is_file()}


def main_job(n_customers: int = 20_000, seed: int = 0, workdir: Path = Path("runs/main")) -> dict:
    """Synthesise the marketplace, log its summary, then train and score each model family that exists."""
    from offerlab.data.synth import load_synth
    from offerlab.tracking import log_data_summary, tracking_uri

    workdir = Path(workdir)
    synth_dir = workdir / f"synth_{n_customers}_{seed}"
    t0 = time.perf_counter()
    if not (synth_dir / "meta.json").exists():
        synth_safely(n_customers, seed, synth_dir, overwrite=True)
    d = load_synth(synth_dir)
    tables = {"transactions": d.transactions, "customers": d.customers, "campaign": d.campaign,
              "applications": d.applications}
    run_id = log_data_summary(tables, params={"source": "synthetic", "seed": seed, "n_customers": n_customers})
    result: dict = {
        "tracking_uri": tracking_uri(),
        "synthetic_data": str(synth_dir),
        "data_summary_run": run_id,
        "rows": {k: len(v) for k, v in tables.items()},
    }
    del d, tables
    for family in FAMILIES:
        if not (Path(__file__).parent / family / "jobs.py").is_file():
            continue
        step = importlib.import_module(f"offerlab.{family}.jobs").main_job_step
        t1 = time.perf_counter()
        log.info("main job: training and scoring %s", family)
        result[family] = {**step(synth_dir, workdir / family), "seconds": round(time.perf_counter() - t1, 1)}
        if result[family].get("run_id"):
            result[family]["registry"] = _promote_quietly(family, result[family]["run_id"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _promote_quietly(family: str, run_id: str) -> str:
    """Offer the main job's model to the registry so `bentoml serve` finds a champion; the usual rule holds:
    the alias moves only if this run beats the current champion on the same evaluation data."""
    from offerlab.registry import promote

    decision = promote(family, run_id)
    return decision.reason


# ----------------------------------------------------------------------------------------------------------
# a user's own data: one data spec -> check -> models -> MLflow -> registry -> scored files (`offerlab run --data`)
# ----------------------------------------------------------------------------------------------------------
QUICK = {  # --quick: the main job's small settings, for a first look in minutes
    "timing": {"training": {"seeds": [0], "max_epochs": 6, "validation_days": 0}, "prediction": {"n_samples": 50},
               "counts": {"steps": 120, "members": 1}},
    "uplift": {"net": {"ensemble": 2, "patience": 3}, "trainer": {"max_epochs": 25}},
    "credit": {"net": {"members": 3, "patience": 4}, "trainer": {"max_epochs": 25}},
}


def check_data(spec, out_dir: Path, track: bool = True) -> dict:
    """`offerlab data check`: profile every table of the spec, say per family what is still missing, write the
    report (Markdown + plots) and log it to MLflow."""
    from offerlab.data.profile import log_profile, profile_tables, write_report

    tables = spec.tables()
    camp = spec.campaign_features() if spec.has("campaign") else None
    app_features = None
    if "applications" in tables:
        from offerlab.credit.data import application_features

        app_features = application_features(tables["applications"], tables.get("transactions"))
    p = spec.spec.protocol
    profile = profile_tables(
        tables.get("transactions"), tables.get("customers"), tables.get("campaign"), tables.get("applications"),
        campaign_features=None if camp is None else camp.features, campaign_levels=None if camp is None else camp.levels,
        campaign_assignment=spec.spec.semantics.campaign_assignment.replace("check", "unknown"),
        application_features=app_features, calibration_end=p.calibration_end, holdout_end=p.holdout_end)
    profile["readiness"] = spec.readiness()
    files = write_report(profile, out_dir, title=f"Data check: {spec.name}")
    run_id = log_profile(profile, files, run_name=f"data-check-{spec.name}",
                         params={"data_spec": str(spec.path), "name": spec.name}) if track else None
    report = next((f for f in files if f.suffix == ".md"), files[0])
    return {"readiness": profile["readiness"], "report": str(report), "run_id": run_id, "files": [str(f) for f in files]}


def _family_config(spec, family: str, quick: bool, config: str | None = None):
    """The family's default config (or `config`) with the spec's data and economics on top."""
    from offerlab.config import deep_merge
    from offerlab.data.spec import family_overrides

    over = family_overrides(spec, family)
    if quick:
        over = deep_merge(QUICK[family], over)
    root = Path(__file__).resolve().parents[2] / "configs" / family
    path = Path(config) if config else root / "default.yaml"
    if family == "timing":
        from offerlab.timing.train import load_config
    elif family == "uplift":
        from offerlab.uplift.config import load_config
    else:
        from offerlab.credit.config import load_config
    return load_config(path, deep_merge(over, {"trainer": {"enable_progress_bar": False}})), path


def _train_family(spec, family: str, quick: bool, workdir: Path) -> dict:
    cfg, path = _family_config(spec, family, quick)
    if family == "timing":
        from offerlab.timing.train import train_and_log

        summary, _, _ = train_and_log(cfg, path, progress=False)
        return {"run_id": summary["run_id"], **{k: summary["metrics"][k] for k in ("count_rmse", "auc_holdout",
                                                                                   "brier_30d", "c_index")}}
    if family == "uplift":
        from offerlab.uplift.train import train_from_config

        summary = train_from_config(cfg, config_path=path, out_dir=workdir / "uplift")
        m = summary["metrics"]
        return {"run_id": summary["run_id"], "eval_qini": m.get("eval_qini"),
                "policy_value": m.get("eval_policy_value")}
    from offerlab.credit.cli import _quiet_lightning
    from offerlab.credit.train import train

    _quiet_lightning()
    summary = train(cfg, progress=False)
    return {"run_id": summary["run_id"], "auc": summary.get("eval_auc"), "ece": summary.get("eval_ece")}


def _bench_family(spec, family: str, quick: bool, out: Path) -> dict:
    cfg, path = _family_config(spec, family, quick)
    if family == "timing":
        from offerlab.timing.bench import run_bench

        res = run_bench(spec.name, out, config=path, cfg_overrides=_family_overrides_quick(spec, family, quick),
                        progress=False, spec=str(spec.path), spec_set=spec.overrides)
        return {m: {k: v[k] for k in ("count_rmse", "auc_holdout", "c_index")} for m, v in res["models"].items()}
    if family == "uplift":
        from offerlab.uplift.bench import run_bench

        res = run_bench(cfg, out, seeds=2 if quick else 5, feature_oracle=False)
        return {m: {"qini": v["qini"], "policy_value": v["policy_value"]} for m, v in res["models"].items()}
    from offerlab.credit.bench import run_bench, write_json_atomic

    res = run_bench(cfg)
    write_json_atomic(res, out)
    return {m: {k: v[k] for k in ("auc", "ece")} for m, v in res["models"].items()}


def _family_overrides_quick(spec, family: str, quick: bool) -> dict:
    from offerlab.config import deep_merge
    from offerlab.data.spec import family_overrides

    over = family_overrides(spec, family)
    return deep_merge(QUICK[family], over) if quick else over


def spec_job(spec, workdir: Path, *, bench: bool = False, quick: bool = False, track_check: bool = True) -> dict:
    """The main job on a user's data: check, train each family the spec supports, register (the champion alias
    moves to a model of the new data), score the customers and the campaign, optionally benchmark against the
    peers. Every family's requirements are checked before any work starts."""
    from offerlab.registry import promote
    from offerlab.tracking import tracking_uri

    families = spec.families()
    if not families:
        raise ValueError(f"data spec {spec.path}: no model family can run: give transactions with protocol dates "
                         "(timing), a campaign table (uplift) or labelled applications (credit)")
    for family in families:  # refuse before any work: the first missing key of any family
        spec.require(family)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {"tracking_uri": tracking_uri(), "data": spec.name, "families": families}
    log.info("step 1/%d: data check", 3 + bench)
    result["check"] = check_data(spec, workdir / "data_check", track=track_check)
    log.info("step 2/%d: training %s", 3 + bench, ", ".join(families))
    for family in families:
        t1 = time.perf_counter()
        log.info("training %s on %s", family, spec.name)
        out = _train_family(spec, family, quick, workdir)
        out["registry"] = promote(family, out["run_id"], replace_other_data=True).reason
        out["seconds"] = round(time.perf_counter() - t1, 1)
        result[family] = out
    log.info("step 3/%d: scoring", 3 + bench)
    result["scored"] = score_spec(spec, {f: result[f]["run_id"] for f in families}, workdir)
    if bench:
        log.info("step 4/4: benchmarks against the peers")
        result["bench"] = {f: _bench_family(spec, f, quick, workdir / "bench" / f"{f}.json") for f in families}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def score_spec(spec, run_ids: dict[str, str], workdir: Path) -> dict:
    """Score the spec's customers with the runs just trained (`runs:/<id>/model`): reminders (timing), the
    campaign's discount per customer (uplift; within the spec's budget when it sets one), credit decisions, and,
    with all three, the combined offers. Returns {name: {"path", "rows"}}."""
    from offerlab.serving.score import run_score, spec_inputs

    uris = {f: f"runs:/{r}/model" for f, r in run_ids.items()}
    out: dict = {}

    def one(command: str, name: str, family: str | None = None) -> None:
        path = workdir / f"{name}.parquet"
        s = run_score(command, None, path, force=True, progress=False, inputs=spec_inputs(command, spec),
                      model_uris=uris if family is None else {family: uris[family]})
        out[name] = {"path": str(path), "rows": s["rows"], "seconds": s["seconds"]}

    if "timing" in uris:
        one("timing", "reminders", "timing")
    if "uplift" in uris:
        out["campaign_scored"] = score_campaign(spec, uris["uplift"], workdir / "campaign_scored.parquet")
    if "credit" in uris:
        one("credit", "credit_decisions", "credit")
    if set(uris) == {"timing", "uplift", "credit"} and spec.has("transactions"):
        one("offers", "offers")
    return out


def score_campaign(spec, uri: str, path: Path) -> dict:
    """The campaign's customers with their discount level (or none), expected incremental profit and spend, from
    the features they were trained on; with `economics.budget` also the level within the campaign-wide budget."""
    import mlflow
    import numpy as np

    from offerlab.serving.score import write_atomic
    from offerlab.uplift.policy import choose_levels
    from offerlab.uplift.pyfunc import frame_predictions

    data = spec.campaign_data()
    model = mlflow.pyfunc.load_model(uri)
    rec = model.predict(data.features.reset_index(drop=True))
    rec.insert(0, "customer_id", data.customer_id.astype(str))
    budget = spec.spec.economics.budget
    if budget is not None:
        inner = model.unwrap_python_model()
        levels = inner.model.levels
        profit, spend = inner.policy.level_matrices(frame_predictions(rec, levels), levels, inner.model.discounts)
        choice, used = choose_levels(profit, spend, budget)
        rec["level_within_budget"] = np.asarray(levels, dtype=object)[choice]
        log.info("campaign within the budget %.2f: expected spend %.2f, %d customers treated", budget, used,
                 int((choice > 0).sum()))
    write_atomic(rec, path)
    return {"path": str(path), "rows": len(rec)}
