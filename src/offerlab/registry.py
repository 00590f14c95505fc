"""MLflow model registry: promotion by evidence, and a listing of versions.

`promote(family, run_id)` registers the run's model as `offerlab-<family>` and moves the `champion`
alias to it only when the candidate beats the current champion on the family's primary metric,
measured on the same evaluation data (same `offerlab.eval_fingerprint` tag). Otherwise it says why
and changes nothing: no version is registered for a refused candidate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHAMPION = "champion"
EVAL_FINGERPRINT_TAG = "offerlab.eval_fingerprint"
# family -> (metric logged by its training run, direction)
PRIMARY_METRIC: dict[str, tuple[str, str]] = {
    "timing": ("eval_nll", "minimize"),
    "uplift": ("eval_qini", "maximize"),
    "credit": ("eval_auc", "maximize"),
}
FAMILIES = tuple(PRIMARY_METRIC)  # the model families, in pipeline order


def model_name(family: str) -> str:
    if family not in PRIMARY_METRIC:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(PRIMARY_METRIC)}")
    return f"offerlab-{family}"


def alias_uri(family: str, alias: str = CHAMPION) -> str:
    """The MLflow URI of the version that holds `alias` in the family's registered model."""
    return f"models:/{model_name(family)}@{alias}"


@dataclass
class PromotionDecision:
    promoted: bool
    reason: str
    version: str | None = None
    candidate_value: float | None = None
    champion_value: float | None = None


def _run_metric(client, run_id: str, metric: str, role: str) -> tuple[float, str | None]:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"{role} run {run_id} not found in the tracking store") from None
    if metric not in run.data.metrics:
        raise ValueError(f"{role} run {run_id} has no metric '{metric}' (the family's primary metric)")
    return run.data.metrics[metric], run.data.tags.get(EVAL_FINGERPRINT_TAG)


def promote(family: str, run_id: str, *, alias: str = CHAMPION, tolerance: float = 0.0,
            replace_other_data: bool = False) -> PromotionDecision:
    """Register the run's model and move `alias` to it only if it beats the alias holder.

    `replace_other_data`: when the holder was evaluated on other data (the user switched the served data, as
    `offerlab run --data` does), the candidate replaces it and the reason says so; on the same data the usual
    rule holds."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from offerlab import tracking

    name = model_name(family)
    metric, direction = PRIMARY_METRIC[family]
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    cand_value, cand_fp = _run_metric(client, run_id, metric, "candidate")
    try:
        mlflow.models.get_model_info(f"runs:/{run_id}/model")
    except (MlflowException, OSError):
        raise ValueError(f"candidate run {run_id} has no logged model named 'model'") from None

    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    champ_value, replaced = None, ""
    if current is not None:
        champ_value, champ_fp = _run_metric(client, current.run_id, metric, "champion")
        if cand_fp != champ_fp and replace_other_data:
            replaced = f" (replaces version {current.version}, which was evaluated on other data)"
            champ_value = None
        elif cand_fp != champ_fp:
            return PromotionDecision(
                False, f"not comparable: the candidate was evaluated on data {cand_fp}, the champion (version "
                f"{current.version}) on {champ_fp}; evaluate both on the same data", None, cand_value, champ_value)
        better = replaced or (cand_value < champ_value - tolerance if direction == "minimize"
                              else cand_value > champ_value + tolerance)
        if not better:
            return PromotionDecision(
                False, f"candidate {metric}={cand_value:.5g} does not beat champion version {current.version} "
                f"{metric}={champ_value:.5g} ({direction}); alias '{alias}' unchanged", None, cand_value, champ_value)
    from offerlab.quiet import hushed

    with hushed():  # MLflow prints "Successfully registered model ..." itself; our line below says it
        mv = mlflow.register_model(f"runs:/{run_id}/model", name)
    client.set_registered_model_alias(name, alias, mv.version)
    client.set_model_version_tag(name, mv.version, metric, str(cand_value))
    reason = (f"version {mv.version} is now '{alias}': {metric}={cand_value:.5g}"
              + (f" vs previous {champ_value:.5g}" if champ_value is not None else replaced or " (first champion)"))
    log.info(reason)
    return PromotionDecision(True, reason, str(mv.version), cand_value, champ_value)


def list_models(family: str | None = None) -> list[dict]:
    """Every registered version of the family models with aliases and primary metric."""
    import mlflow
    from mlflow import MlflowClient

    from offerlab import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    rows = []
    for fam in [family] if family else list(PRIMARY_METRIC):
        name = model_name(fam)
        metric = PRIMARY_METRIC[fam][0]
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            continue
        # search results do not carry aliases; the registered model does (alias -> version)
        by_version: dict[str, list[str]] = {}
        for a, v in client.get_registered_model(name).aliases.items():
            by_version.setdefault(str(v), []).append(a)
        for mv in versions:
            run_metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            rows.append({"model": name, "version": int(mv.version), "aliases": sorted(by_version.get(str(mv.version), [])),
                         "run_id": mv.run_id, metric: run_metrics.get(metric)})
    return sorted(rows, key=lambda r: (r["model"], -r["version"]))
