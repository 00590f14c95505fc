"""`offerlab train uplift`: fit the uplift model on a campaign's training split, evaluate it on the test
split (uplift metrics, policy value, oracle gap on synthetic data), log everything to MLflow."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from offerlab.config import flatten
from offerlab.uplift.config import UpliftConfig

log = logging.getLogger(__name__)


def qini_figure(model, test, outcome: str):
    """Qini curves of each level vs control (model ranking, random line), as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from offerlab.uplift.metrics import qini_points

    up = model.uplift(test.features, outcome)
    names = test.treatment_names.astype(str)
    y = test.outcome(outcome)
    fig, axes = plt.subplots(1, len(up.columns), figsize=(5 * len(up.columns), 4), squeeze=False)
    for ax, level in zip(axes[0], up.columns, strict=True):
        rows = (names == level) | (names == test.control)
        k, q = qini_points(up[level].to_numpy()[rows], y[rows], (names[rows] == level).astype(float))
        ax.plot(k / k[-1], q, label="model")
        ax.plot([0, 1], [0, q[-1]], "--", label="random")
        ax.set_title(f"Qini: {level} vs {test.control}")
        ax.set_xlabel("share targeted")
        ax.set_ylabel("incremental outcomes")
        ax.legend()
    fig.tight_layout()
    return fig


BUDGET_GRID = tuple(np.linspace(0, 1, 11))


def profit_budget_curve(pred: dict, test, policy, truth: pd.DataFrame | None, shares=BUDGET_GRID):
    """Expected (and, with ground truth, true) incremental profit per customer against the budget."""
    from offerlab.uplift.bench import true_matrices
    from offerlab.uplift.policy import choose_levels

    d = policy.discount_rates(test.levels, test.discounts)
    profit, spend = policy.level_matrices(pred, test.levels, test.discounts)
    _, full = choose_levels(profit, spend)
    rows = np.arange(len(profit))
    true = None
    if truth is not None:
        true, _ = true_matrices(truth, test.levels, policy, d)
    curve = []
    for s in shares:
        choice, used = choose_levels(profit, spend, s * full)
        point = {"budget_share": float(s), "budget": float(s * full), "spend_used": used,
                 "expected_profit_per_customer": float(profit[rows, choice].mean())}
        if true is not None:
            point["true_profit_per_customer"] = float(true[rows, choice].mean())
        curve.append(point)
    return pd.DataFrame(curve)


def _curve_figure(curve: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(curve["budget_share"], curve["expected_profit_per_customer"], marker="o", label="expected (model)")
    if "true_profit_per_customer" in curve:
        ax.plot(curve["budget_share"], curve["true_profit_per_customer"], marker="s", label="true (oracle truth)")
    ax.set_xlabel("budget / unconstrained spend")
    ax.set_ylabel("incremental profit per customer")
    ax.set_title("Profit vs budget")
    ax.legend()
    fig.tight_layout()
    return fig


def fit_and_evaluate(cfg: UpliftConfig, callbacks: list | None = None):
    """Load, split, fit and score; returns (model, train, test, truth_test, scores)."""
    from offerlab.uplift.bench import load_campaign, score_split
    from offerlab.uplift.data import stratified_split
    from offerlab.uplift.model import UpliftModel
    from offerlab.uplift.returns import check_returns_declared

    data, truth, meta = load_campaign(cfg)
    check_returns_declared(data, cfg.policy)
    tr, te = stratified_split(data, cfg.data.test_size, cfg.data.split_seed, cfg.data.metric_outcome)
    train, test = data.subset(tr), data.subset(te)
    t_test = None if truth is None else truth.iloc[te].reset_index(drop=True)
    val = None
    if cfg.data.validation_size:
        fit_idx, val_idx = stratified_split(train, cfg.data.validation_size, cfg.data.split_seed + 1,
                                            cfg.data.metric_outcome)
        train, val = train.subset(fit_idx), train.subset(val_idx)
    model = UpliftModel(cfg.net, cfg.trainer, seed=cfg.seed).fit(train, callbacks=callbacks)
    scores = score_split(model, train, test, cfg.policy, cfg.data.metric_outcome, t_test, meta, cfg.budget_shares)
    scores["campaign_rows"] = len(data)
    if val is not None:
        scores["val_qini"] = validation_qini(model, val, cfg.data.metric_outcome)
    return model, train, test, t_test, scores


def training_price_of_spend(model, pred: dict, policy, n_test: int, n_campaign: int) -> float | None:
    """The price of spend (Lagrange multiplier of `policy.allocate`) of the policy's budget on the test predictions,
    None without a budget. The budget is the campaign's total expected spend; the test rows are a random
    `n_test / n_campaign` share of it, so they get that share of the budget (the same spend per customer, hence
    the same price a whole campaign of these customers would meet). Serving then picks each customer's
    argmax(profit - price x spend)."""
    from offerlab.uplift.policy import allocate

    if policy.budget is None:
        return None
    profit, spend = policy.level_matrices(pred, list(model.levels), model.discounts)
    return float(allocate(profit, spend, policy.budget * n_test / max(n_campaign, n_test)).price)


def validation_qini(model, val, metric_outcome: str) -> float:
    """Mean Qini over levels on validation rows carved from the training split (never the test split)."""
    from offerlab.uplift.metrics import per_treatment_metrics

    pred = model.predict_levels(val.features)[metric_outcome]
    uplift = pd.DataFrame(pred[:, 1:] - pred[:, :1], columns=val.levels[1:])
    qini = per_treatment_metrics(uplift, val.treatment_names, val.outcome(metric_outcome), val.control)["qini"]
    return float(np.mean(list(qini.values())))


def train_from_config(cfg: UpliftConfig, config_path: str | Path | None = None, out_dir: Path | None = None,
                      callbacks: list | None = None) -> dict:
    """Train, evaluate and log one run; returns a small JSON-able summary. `callbacks`: extra Lightning
    callbacks for every member's fit (e.g. Optuna pruning)."""
    import lightning.pytorch as pl
    import mlflow

    from offerlab import tracking
    from offerlab.registry import EVAL_FINGERPRINT_TAG

    pl.seed_everything(cfg.seed, verbose=False)
    model, train, test, t_test, scores = fit_and_evaluate(cfg, callbacks)
    metrics = {f"eval_qini_{lv}": v for lv, v in scores["qini"].items()}
    metrics["eval_qini"] = float(np.mean(list(scores["qini"].values())))
    metrics.update({f"eval_auuc_{lv}": v for lv, v in scores["auuc"].items()})
    metrics.update({f"eval_uplift_at_30_{lv}": v for lv, v in scores["uplift_at_30"].items()})
    if "val_qini" in scores:
        metrics["val_qini"] = scores["val_qini"]
    for key in ("policy_value", "policy_value_dr", "best_single_value", "policy_minus_best_single", "share_treated"):
        if scores.get(key) is not None:
            metrics[f"eval_{key}"] = scores[key]
    if "oracle" in scores:
        for b, v in scores["oracle"]["profit_share"].items():
            metrics[f"oracle_share_budget_{b}"] = v["share_of_oracle"]
        metrics.update({f"uplift_rmse_{lv}": v for lv, v in scores["oracle"]["uplift_rmse"].items()})
    metrics = {k.replace(" ", "_"): float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    pred_test = model.predict_levels(test.features)
    price = training_price_of_spend(model, pred_test, cfg.policy, len(test), scores.get("campaign_rows", len(test)))
    policy = cfg.policy
    if price is not None:
        metrics["price_of_spend"] = price
        policy = cfg.policy.model_copy(update={"price_of_spend": price})  # travels inside the logged pyfunc
    eval_fp = tracking.data_fingerprint(pd.DataFrame({"t": test.treatment, "y": test.conversion,
                                                      "r": test.revenue}))
    with tracking.start_run("uplift", cfg.name, tags={EVAL_FINGERPRINT_TAG: eval_fp}) as run:
        mlflow.log_params({k: v if isinstance(v, int | float | str | bool) else str(v)
                           for k, v in flatten(cfg.model_dump()).items() if v is not None})
        if config_path:
            mlflow.log_artifact(str(config_path), "config")
        mlflow.log_dict(cfg.model_dump(), "config/resolved.json")
        mlflow.set_tags({"offerlab.train_fingerprint": tracking.data_fingerprint(train.features),
                         "offerlab.dataset": cfg.data.dataset})
        mlflow.log_metrics({**metrics, "n_train": len(train), "n_test": len(test)})
        mlflow.log_dict({"history": model.history, "policy": {k: v for k, v in scores.items()
                                                                 if k not in ("qini", "auuc", "qini_area")}},
                        "evaluation.json")
        mlflow.log_figure(qini_figure(model, test, cfg.data.metric_outcome), "plots/qini_curves.png")
        curve = profit_budget_curve(pred_test, test, cfg.policy, t_test)
        mlflow.log_figure(_curve_figure(curve), "plots/profit_vs_budget.png")
        mlflow.log_dict(curve.to_dict(orient="list"), "plots/profit_vs_budget.json")
        from offerlab.uplift.pyfunc import log_pyfunc

        with tempfile.TemporaryDirectory() as tmp:
            log_pyfunc(model, policy, test.features.head(5), Path(tmp))
        logs = getattr(model, "fit_report", {}).get("logs")
        if logs:  # which campaign logs the fit stacked and how each was weighted (counts, no customer)
            mlflow.log_dict({"logs": logs}, "campaign_logs.json")
        run_id = run.info.run_id
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir / "uplift_model.pt")
        rec = model.recommend(test.features, cfg.policy, customer_id=test.customer_id)
        rec.to_parquet(out_dir / "recommendations_test.parquet", index=False)
    out = {"run_id": run_id, "metrics": metrics, "levels": model.levels}
    if logs:
        out["campaign_logs"] = logs
    return out
