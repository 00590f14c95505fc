"""Fit the timing model: config, data, the Lightning loop with time-based early stopping, seed ensembles.

`fit_timing` is the library entry point (transactions + cutoff -> `TimingPredictor`); `NeuralTPP` puts it
behind the same forecaster interface as the BTYD peers; `run_training` is the `offerlab train timing`
job that logs config, metrics, plots and the pyfunc model to MLflow.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from offerlab.config import deep_merge, flatten, read_yaml
from offerlab.timing.baselines import end_of_day
from offerlab.timing.counts import fit_count_head
from offerlab.timing.data import FeatureStats, LengthBucketBatches, TimingExamples, build_examples, n_inputs
from offerlab.timing.model import TimingModel
from offerlab.timing.predict import TimingPredictor

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "timing"


# ------------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    dataset: str = "cdnow"
    data_path: str | None = None
    mapping: str | None = None
    spec: str | None = Field(None, description="a data spec YAML (dataset 'spec'; --data on the command line)")
    spec_set: dict = Field(default_factory=dict, description="dotted-key overrides of the data spec (--data-set)")
    synth_dir: str | None = None
    customers: int = Field(20_000, ge=10)
    seed: int = 0
    calibration_end: str | None = Field(None, description="last calibration day; None: the data set's protocol "
                                        "(cdnow, synth) or refused")
    holdout_end: str | None = None
    same_day: Literal["keep", "merge"] = "merge"
    returns: Literal["net", "keep"] | None = Field(
        None, description="a returns table beside the transactions: net (an order returned in full is no purchase, "
        "a partly returned one counts at its net amount; lines lose what came back) or keep (returns ignored); "
        "required when the data has one (a data spec's tables.returns); the synthetic marketplace's are read with net")

    @model_validator(mode="after")
    def _dates(self) -> DataConfig:
        if self.calibration_end is None or self.holdout_end is None:
            return self  # resolved by `bench.split_dates`: the data set's protocol, or refused
        try:
            cal, end = pd.Timestamp(self.calibration_end), pd.Timestamp(self.holdout_end)
        except ValueError as e:
            raise ValueError(f"data.calibration_end / data.holdout_end must be dates: {e}") from None
        if end <= cal:
            raise ValueError(f"data.holdout_end ({self.holdout_end}) must be after data.calibration_end "
                             f"({self.calibration_end})")
        return self


class ModelConfig(_Strict):
    hidden: int = Field(32, ge=2)
    n_components: int = Field(3, ge=1)
    category_dim: int = Field(8, ge=1)
    cure: bool = True
    use_calendar: bool = False
    age_inputs: bool = Field(False, description="log step index and tenure as inputs (extrapolate badly)")
    gap_stats: bool = Field(False, description="running mean / sd of the customer's own log gaps as inputs")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    category_weight: float = Field(1.0, ge=0)


class TrainingConfig(_Strict):
    max_epochs: int = Field(40, ge=1)
    batch_events: int = Field(16384, ge=16)
    max_customers: int = Field(1024, ge=1)
    validation_days: int = Field(56, ge=0, description="last days of the calibration period held out for early stopping")
    patience: int = Field(4, ge=1)
    refit: bool = Field(True, description="after early stopping, refit on the whole calibration period")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    num_threads: int = Field(1, ge=1, description="torch intra-op threads; 1 is fastest for this small model on a busy CPU")


class PredictionConfig(_Strict):
    n_samples: int = Field(200, ge=1)
    within_days: list[float] = Field(default_factory=lambda: [7.0, 30.0, 90.0])
    horizon_days: float = Field(90.0, gt=0)


class CountsConfig(_Strict):
    """The count head (counts.py): closed-form long-horizon counts trained on calibration windows."""

    enabled: bool = True
    windows: list[int] = Field(default_factory=lambda: [56, 91, 136, 182],
                               description="days before the cutoff at which self-supervised count windows start")
    hidden: int = Field(16, ge=2)
    steps: int = Field(250, ge=1)
    lr: float = Field(2e-2, gt=0)
    members: int = Field(1, ge=1, description="independently seeded heads whose answers are averaged")


class BasketBlock(_Strict):
    """The replenishment basket (`offerlab.timing.basket`), trained beside the timing model when the data have
    order lines (items): on the calibration period, scored on the holdout's first 7 and 30 days."""

    enabled: bool = True
    epochs: int = Field(4, ge=1)
    hidden: int = Field(128, ge=4)
    lr: float = Field(2e-3, gt=0)
    n_cuts: int = Field(3, ge=1, description="training cut dates, every cut_spacing_days back from the end")
    cut_spacing_days: int = Field(30, ge=1)
    max_own: int = Field(50, ge=1, description="a customer's own items kept as candidates (highest decayed frequency)")
    n_popular: int = Field(20, ge=0)
    n_cobought: int = Field(10, ge=0)
    min_p: float = Field(0.3, gt=0, le=1, description="an item enters the basket at P(bought within 30 days) >= min_p")
    max_items: int = Field(10, ge=1)

    def settings(self, seed: int = 0):
        from offerlab.timing.basket import BasketConfig

        return BasketConfig(**self.model_dump(exclude={"enabled"}), seed=seed)


class TrainerConfig(BaseModel):
    """Lightning Trainer settings; `profile` picks a block of `trainer_profiles`, other keys override it."""

    model_config = ConfigDict(extra="allow")
    profile: str | None = None
    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str | int = "32-true"
    num_nodes: int = 1
    enable_progress_bar: bool = True

    def kwargs(self) -> dict:
        return self.model_dump(exclude={"profile"})


class MlflowConfig(_Strict):
    run_name: str | None = None
    register_model: bool = False
    log_model: bool = True


class TimingConfig(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    prediction: PredictionConfig = PredictionConfig()
    counts: CountsConfig = CountsConfig()
    basket: BasketBlock = BasketBlock()
    trainer: TrainerConfig = TrainerConfig()
    trainer_profiles: dict[str, dict] = Field(default_factory=dict)
    mlflow: MlflowConfig = MlflowConfig()

    @model_validator(mode="after")
    def _profile(self) -> TimingConfig:
        p = self.trainer.profile
        if p is not None:
            if p not in self.trainer_profiles:
                raise ValueError(f"trainer.profile {p!r} is not one of trainer_profiles {sorted(self.trainer_profiles)}")
            explicit = self.trainer.model_dump(exclude_unset=True)
            self.trainer = TrainerConfig(**{**self.trainer_profiles[p], **explicit})
        return self


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TimingConfig:
    """Read a YAML config (it may name `defaults: <file>` to overlay), apply overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        raw = read_yaml(path, base_key="defaults")
    raw = deep_merge(raw, overrides or {})
    try:
        return TimingConfig.model_validate(raw)
    except ValidationError as e:
        where = path or "the timing config"
        raise ValueError(f"invalid timing config {where}: {e}") from None


# ------------------------------------------------------------------------------------------------------
# fitting
# ------------------------------------------------------------------------------------------------------
class _BestState(pl.Callback):
    """Keeps the weights (in memory) of the epoch with the lowest validation loss."""

    def __init__(self):
        self.best, self.epoch, self.state = float("inf"), 0, None

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        v = float(trainer.callback_metrics.get("val_loss", float("inf")))
        if v < self.best:
            self.best, self.epoch = v, trainer.current_epoch
            self.state = copy.deepcopy(module.state_dict())


class _Reshuffle(pl.Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        trainer.train_dataloader.dataset.reshuffle(trainer.current_epoch)


def _loader(ex: TimingExamples, cfg: TimingConfig, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    ds = LengthBucketBatches(ex, cfg.training.batch_events, cfg.training.max_customers, shuffle=shuffle, seed=seed)
    return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=0)


def _trainer(cfg: TimingConfig, max_epochs: int, callbacks: list, progress: bool | None) -> pl.Trainer:
    kw = cfg.trainer.kwargs()
    if progress is not None:
        kw["enable_progress_bar"] = progress
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
                      enable_model_summary=False, num_sanity_val_steps=0, **kw)


def _new_model(cfg: TimingConfig, ex: TimingExamples, stats: FeatureStats) -> TimingModel:
    obs = ~ex.censored
    log_gaps = np.log(ex.target_gap[obs]) if obs.any() else np.array([3.0])
    m = cfg.model
    return TimingModel(
        n_inputs=n_inputs(m.use_calendar, m.age_inputs, stats.gap_stats), n_categories=ex.n_categories,
        n_static=0 if ex.static is None else ex.static.shape[1], hidden=m.hidden, n_components=m.n_components,
        category_dim=m.category_dim, cure=m.cure, lr=m.lr, weight_decay=m.weight_decay,
        category_weight=m.category_weight, log_gap_mean=float(np.mean(log_gaps)),
        log_gap_std=float(np.std(log_gaps) or 1.0), feature_stats=vars(stats), use_calendar=m.use_calendar,
        dropout=m.dropout,
    )


def fit_timing(transactions: pd.DataFrame, cutoff: str | pd.Timestamp, cfg: TimingConfig,
               progress: bool | None = None, extra_callbacks: list | None = None) -> tuple[TimingPredictor, dict]:
    """Train the (ensemble) model on the purchases up to `cutoff` (inclusive day); returns it with fit facts.

    Per seed: early stopping on the last `validation_days` of the calibration period (the model sees
    histories only up to the start of that window; the window's gaps are scored given what came
    before), then, with `refit`, the same number of epochs on the whole period. `extra_callbacks` (e.g. an Optuna
    pruning callback) join the early-stopping fit, the one with a validation loss. Without an `amount`
    column the model trains on dates alone (`FeatureStats.uses_amount` False: amounts are then ignored
    wherever it scores).
    """
    from offerlab.data.sequences import build_sequences

    torch.set_num_threads(cfg.training.num_threads)
    as_of = end_of_day(cutoff)
    same_day = cfg.data.same_day
    seqs_full = build_sequences(transactions, as_of, same_day=same_day)
    categories = list(seqs_full.categories)
    use_cal = cfg.model.use_calendar
    kw = {"use_calendar": use_cal, "age_inputs": cfg.model.age_inputs, "gap_stats": cfg.model.gap_stats}
    ex_full, stats = build_examples(seqs_full, as_of, **kw)
    if not stats.uses_amount:
        log.info("transactions carry no amounts: the timing model trains on dates alone")
    ex_train, ex_val = ex_full, None
    if cfg.training.validation_days > 0:
        v_start = as_of - pd.Timedelta(days=cfg.training.validation_days)
        seqs_train = build_sequences(transactions, v_start, categories=categories or None, same_day=same_day)
        ex_train, _ = build_examples(seqs_train, v_start, stats, **kw)
        ex_val, _ = build_examples(seqs_full, as_of, stats, validation_start=v_start, **kw)
    models, info = [], {"best_epochs": [], "val_loss": [], "events_processed": 0, "train_seconds": 0.0}
    for seed in cfg.training.seeds:
        pl.seed_everything(seed, workers=True, verbose=False)
        model = _new_model(cfg, ex_train, stats)
        best = _BestState()
        callbacks: list = [_Reshuffle()]
        if ex_val is not None:
            callbacks += [best, pl.callbacks.EarlyStopping("val_loss", patience=cfg.training.patience),
                          *(extra_callbacks or [])]
        trainer = _trainer(cfg, cfg.training.max_epochs, callbacks, progress)
        t0 = time.perf_counter()
        trainer.fit(model, _loader(ex_train, cfg, True, seed), _loader(ex_val, cfg, False, seed) if ex_val else None)
        info["train_seconds"] += time.perf_counter() - t0
        info["events_processed"] += ex_train.n_events * (trainer.current_epoch + 0)
        epochs = trainer.current_epoch
        if ex_val is not None:
            info["best_epochs"].append(best.epoch + 1)
            info["val_loss"].append(best.best)
            if cfg.training.refit:
                pl.seed_everything(seed, workers=True, verbose=False)
                model = _new_model(cfg, ex_full, stats)
                epochs = best.epoch + 1
                trainer = _trainer(cfg, epochs, [_Reshuffle()], progress)
                t0 = time.perf_counter()
                trainer.fit(model, _loader(ex_full, cfg, True, seed))
                info["train_seconds"] += time.perf_counter() - t0
                info["events_processed"] += ex_full.n_events * epochs
            else:
                model.load_state_dict(best.state)
        models.append(model.cpu().eval())
    info["events_per_second"] = info["events_processed"] / max(info["train_seconds"], 1e-9)
    info["n_train_events"] = ex_full.n_events
    info["n_customers"] = ex_full.n_customers
    info["uses_amount"] = stats.uses_amount
    predictor = TimingPredictor(models, stats, categories, same_day, use_cal, age_inputs=cfg.model.age_inputs)
    c = cfg.counts
    if c.enabled:
        calib = transactions[transactions["timestamp"] <= as_of]
        predictor.count_head, head_info = fit_count_head(
            predictor, calib, as_of, c.windows, c.hidden, c.steps, c.lr, members=c.members,
            seed=cfg.training.seeds[0] if cfg.training.seeds else 0)
        info.update(head_info)
    return predictor, info


@torch.no_grad()
def holdout_nll(predictor: TimingPredictor, transactions: pd.DataFrame, cutoff: str | pd.Timestamp,
                holdout_end: str | pd.Timestamp, cfg: TimingConfig) -> float:
    """Negative log-likelihood per holdout purchase (gap and category), given each history up to `cutoff`.

    The registry's `eval_nll`: every member scores the purchases in (cutoff, holdout_end] and the open gap
    at the end (censored) exactly as the validation loss scores its window; members are averaged. It does
    not depend on `category_weight`, so configs that differ in it stay comparable.
    """
    end = end_of_day(holdout_end)
    seqs = predictor.sequences(transactions[transactions["timestamp"] <= end], end)
    ex, _ = build_examples(seqs, end, predictor.stats, use_calendar=predictor.use_calendar,
                           age_inputs=predictor.age_inputs, validation_start=end_of_day(cutoff))
    loader = _loader(ex, cfg, False, 0)
    total = np.zeros(2)
    for model in predictor.models:
        for batch in loader:
            o = model.batch_nll(batch)
            total += [float(o["gap_nll_sum"] + o.get("cat_nll_sum", 0.0)), float(o["n_gaps"])]
    return float(total[0] / max(total[1], 1.0))


class NeuralTPP:
    """Our model behind the peers' interface (`fit(transactions, cutoff)`, `predict(horizon, within)`)."""

    name = "offerlab"

    def __init__(self, cfg: TimingConfig, progress: bool | None = None, callbacks: list | None = None):
        self.cfg = cfg
        self.progress = progress
        self.callbacks = callbacks

    def fit(self, transactions: pd.DataFrame, cutoff: str | pd.Timestamp) -> NeuralTPP:
        self.predictor, self.fit_info = fit_timing(transactions, cutoff, self.cfg, self.progress, self.callbacks)
        self.state = self.predictor.encode(transactions, end_of_day(cutoff))
        return self

    def predict(self, horizon_days: float, within_days: float = 30.0) -> pd.DataFrame:
        p = self.predictor
        p_any = p.prob_any(self.state, horizon_days)
        t0 = time.perf_counter()
        counts = p.expected_counts(self.state, horizon_days, self.cfg.prediction.n_samples, seed=0)
        self.fit_info["simulate_seconds"] = time.perf_counter() - t0
        return pd.DataFrame({
            "expected_count": counts,
            "p_any": p_any,
            "p_within": p.prob_any(self.state, within_days),
            "risk_score": p_any,
        }, index=pd.Index(self.state.customer_ids, name="customer_id"))


# ------------------------------------------------------------------------------------------------------
# the MLflow training job
# ------------------------------------------------------------------------------------------------------
def calibration_plots(pred: pd.DataFrame, holdout: pd.DataFrame, horizon: float):
    """Two figures: mean actual vs predicted holdout purchases by bins of the prediction, and the
    reliability curve of P(purchase within 30 days)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = holdout.reindex(pred.index)
    figs = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = pd.qcut(pred["expected_count"].rank(method="first"), 10, labels=False)
    g = pd.DataFrame({"pred": pred["expected_count"], "true": h["count"], "bin": bins}).groupby("bin").mean()
    ax.plot(g["pred"], g["true"], "o-", label="customers by decile of prediction")
    lim = float(max(g["pred"].max(), g["true"].max()) * 1.05)
    ax.plot([0, lim], [0, lim], "k--", lw=1, label="perfect")
    ax.set(xlabel=f"predicted purchases in {horizon:.0f} days", ylabel="actual (mean)", title="holdout counts")
    ax.legend()
    figs["holdout_counts.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 4))
    bought = (h["first_days"] <= 30).astype(float)
    bins = pd.qcut(pred["p_within"].rank(method="first"), 10, labels=False)
    g = pd.DataFrame({"p": pred["p_within"], "y": bought, "bin": bins}).groupby("bin").mean()
    ax.plot(g["p"], g["y"], "o-", label="deciles")
    lim = float(max(g["p"].max(), g["y"].max()) * 1.05)
    ax.plot([0, lim], [0, lim], "k--", lw=1)
    ax.set(xlabel="predicted P(purchase within 30 days)", ylabel="observed rate", title="30-day calibration")
    figs["calibration_30d.png"] = fig
    return figs


def run_training(cfg: TimingConfig, config_path: Path | None = None, progress: bool | None = True,
                 workdir: Path | None = None) -> dict:
    """Train on the calibration period, score the holdout, log everything to MLflow; returns a summary."""
    return train_and_log(cfg, config_path, progress, workdir)[0]


def train_and_log(cfg: TimingConfig, config_path: Path | None = None, progress: bool | None = True,
                  workdir: Path | None = None, run_name: str | None = None, callbacks: list | None = None
                  ) -> tuple[dict, NeuralTPP, pd.DataFrame]:
    """`run_training`, also returning the fitted model and the transactions (for the main job's scoring)."""
    import tempfile

    import matplotlib.pyplot as plt
    import mlflow

    from offerlab.timing.bench import (
        apply_returns,
        load_bench_data,
        load_bench_lines,
        load_bench_returns,
        oracle_block,
        split_dates,
    )
    from offerlab.timing.metrics import evaluate_predictions, holdout_truth, horizon_days
    from offerlab.timing.pyfunc import log_pyfunc
    from offerlab.tracking import data_fingerprint, start_run, table_summary

    d = cfg.data
    tx, truth = load_bench_data(d.dataset, d.data_path, d.mapping, d.synth_dir, d.customers, d.seed,
                                spec=d.spec, spec_set=d.spec_set)
    cal, end = split_dates(d.dataset, tx, d.calibration_end, d.holdout_end)
    returns = load_bench_returns(d)
    calib, tx = apply_returns(tx, returns, cal)
    horizon = horizon_days(cal, end)
    run_name = run_name or cfg.mlflow.run_name or f"timing-{d.dataset}"
    from offerlab.registry import EVAL_FINGERPRINT_TAG

    eval_fp = f"{data_fingerprint(tx[tx['timestamp'] <= end_of_day(end)])}@{pd.Timestamp(cal).date()}"
    with start_run("timing", run_name, workdir=workdir, tags={EVAL_FINGERPRINT_TAG: eval_fp}) as run:
        mlflow.log_params({k: str(v) for k, v in flatten(cfg.model_dump(mode="json", exclude={"trainer_profiles"})).items()})
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
        if config_path is not None and Path(config_path).is_file():
            mlflow.log_artifact(str(config_path), "config")
        mlflow.set_tag("data_fingerprint", data_fingerprint(calib))
        summary = table_summary(calib, "calibration")
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        model = NeuralTPP(cfg, progress, callbacks).fit(calib, cal)
        pred = model.predict(horizon, 30.0)
        holdout = holdout_truth(tx, cal, end, pred.index, d.same_day)
        metrics = evaluate_predictions(pred, holdout, horizon)
        metrics["eval_nll"] = holdout_nll(model.predictor, tx, cal, end, cfg)
        info = model.fit_info
        fit_metrics = {"events_per_second": info["events_per_second"], "train_seconds": info["train_seconds"],
                       "simulate_seconds": info.get("simulate_seconds", 0.0)}
        mlflow.log_metrics({**metrics, **fit_metrics})
        oracle = None
        if truth is not None:
            oracle = oracle_block(model, tx, truth, cal, end, pred, holdout)
            mlflow.log_metrics({f"oracle.{k}": float(v) for k, v in oracle.items()})
        for name, fig in calibration_plots(pred, holdout, horizon).items():
            mlflow.log_figure(fig, name)
            plt.close(fig)
        basket, basket_metrics = None, None
        lines = load_bench_lines(d.dataset, d.synth_dir, d.customers, d.seed, spec=d.spec, spec_set=d.spec_set)
        if lines is not None and cfg.basket.enabled:
            from offerlab.timing.basket import fit_and_score
            from offerlab.timing.returns import lines_net_of_returns

            lines = lines_net_of_returns(lines, returns, end_of_day(cal))  # features and labels: returns by the cut

            basket, basket_metrics = fit_and_score(lines, cal, end, cfg.basket.settings(cfg.training.seeds[0]
                                                                                         if cfg.training.seeds else 0))
            mlflow.log_metrics({f"basket.{k}": float(v) for k, v in basket_metrics.items()})
        model.basket = basket  # the main job scores with it
        model_uri = None
        if cfg.mlflow.log_model:
            with tempfile.TemporaryDirectory() as tmp:
                name = "offerlab-timing" if cfg.mlflow.register_model else None
                model_uri = log_pyfunc(model.predictor, Path(tmp), registered_model_name=name,
                                       basket=basket, returns=d.returns).model_uri
    summary = {"run_id": run.info.run_id, "metrics": metrics, "training": fit_metrics, "model_uri": model_uri,
               "oracle": oracle, "basket": basket_metrics}
    return summary, model, tx
