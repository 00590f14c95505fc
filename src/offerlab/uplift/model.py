"""Multi-treatment uplift network (TARNet / DragonNet style) and the `UpliftModel` that wraps it.

A shared representation phi(x) feeds, per treatment level, a head for the conversion logit and a head
for the log expected revenue given conversion, plus a propensity head (softmax over levels). Each
treated level's head is parameterised as control head + effect head, and the effect heads carry a
penalty on their spread across customers: heterogeneity is shrunk towards one common effect per
level unless the data insist, which keeps uplift (a small difference of two large predictions)
from being dominated by noise. Uplift of a level = prediction under that level - under control.
Optionally (`uplift_loss_weight`) a direct loss fits each level's conversion uplift to the transformed
outcome (or the lower-variance R-loss, `uplift_loss`), which targets the small difference itself rather than
two large predictions (used on Hillstrom). Each member may early-stop on the mean Qini of its own validation rows
(`early_stop: val_qini`) instead of the outcome loss, and may see its numeric inputs also through a
piecewise-linear encoding over training quantile bins (`numeric_bins`), computed inside the net so the
`FeatureEncoder` (and serving, which replicates it) is unchanged.

The propensity head is trained as in DragonNet (it shapes phi towards what predicts assignment);
known propensities (a randomised log) are used as given, otherwise the head's estimate is used,
both for optional inverse-propensity weighting of the outcome losses and for off-policy evaluation.

A targeted log (the CRM chose who got which level: `data.assignment == "targeted"`, or "unknown" and
`propensity.assignment_check` says so) takes a doubly robust path instead (`_fit_targeted`):
1. propensities e(x) cross-fitted by a gradient-boosted classifier (`propensity.cross_fitted_propensity`);
2. customers with any level below `min_propensity` are outside the common support: flagged and trimmed;
3. first stage: the ensemble is fitted on the kept rows with e(x) in place of the arm shares (the direct
   uplift loss, when on, and the stabilised inverse-propensity weights of the outcome losses, `ipw_weighting`);
   the members' validation rows are disjoint folds, so each row has an out-of-fold prediction mu_l(x);
4. second stage (DR-learner, Kennedy 2023, in residual form): per level and outcome (conversion and revenue,
   what the policy's profit consumes) a ridge regression of the cross-fitted AIPW correction
   1[T = l] (y - mu_l(x)) / e_l(x) on the features, added to mu_l(x). Its mean over the rows is the AIPW
   estimate of E[Y(l)], unbiased if either mu or e is right; the ridge (penalty by generalised cross-validation)
   lets the correction vary with x only as far as the noisy residuals support.
What was done is in `fit_report` (assignment, propensity source, trimmed rows, objective) and logged at INFO.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from offerlab.uplift.data import CampaignData, FeatureEncoder
from offerlab.uplift.propensity import MIN_PROPENSITY

log = logging.getLogger(__name__)


class NetConfig(BaseModel):
    """Network and optimisation settings (trainer settings live in `TrainerConfig`)."""

    model_config = ConfigDict(extra="forbid")
    hidden: list[int] = Field(default_factory=lambda: [64, 32], description="shared representation widths")
    head_hidden: int = 16
    dropout: float = Field(0.1, ge=0, lt=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(1024, ge=8)
    patience: int = Field(4, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    propensity_weight: float = Field(0.1, ge=0, description="DragonNet propensity loss weight")
    revenue_weight: float = Field(1.0, ge=0)
    effect_spread_penalty: float = Field(0.0, ge=0, description="shrinks each level's effect towards a constant")
    uplift_loss_weight: float = Field(0.0, ge=0, description="weight of a direct loss on each level's conversion "
                                      "uplift: squared error to the transformed outcome, unbiased in a randomised log")
    uplift_loss: Literal["transformed_outcome", "r_loss"] = Field(
        "transformed_outcome", description="the direct uplift loss: squared error to the transformed outcome, or "
        "the R-loss (Nie & Wager) on the outcome residual, which weights rows by (t - q)^2 and has lower variance")
    revenue_spread_penalty: float = Field(0.0, ge=0, description="the same for the revenue-given-conversion effect "
                                          "(a discount scales every basket alike, so a large value is a safe prior)")
    ensemble: int = Field(3, ge=1, description="members trained from different seeds and validation splits")
    early_stop: Literal["val_loss", "val_qini"] = Field(
        "val_loss", description="what each member's early stopping and best-epoch pick watch on its validation rows: "
        "the outcome loss, or the mean Qini of the levels' conversion uplift (the ranking the campaign uses)")
    numeric_bins: int = Field(0, ge=0, description="piecewise-linear encoding of each numeric input over this many "
                              "training quantile bins, inside the net (the encoder and serving are unchanged); 0 = off")
    propensity: Literal["auto", "known", "estimate"] = "auto"
    ipw_weighting: bool = Field(False, description="weight outcome losses by 1/propensity (observational logs)")
    # a targeted (non-randomised) log: see the module docstring
    propensity_folds: int = Field(5, ge=2, description="folds of the cross-fitted propensities of a targeted log")
    min_propensity: float = Field(MIN_PROPENSITY, gt=0, lt=0.5, description="a targeted log's customers with any "
                                  "level's estimated probability below this are outside the common support: trimmed")
    max_ipw_weight: float = Field(20.0, ge=1, description="cap on the stabilised inverse-propensity weight "
                                  "(arm share / e) of a targeted log's outcome losses")
    dr_correction: bool = Field(True, description="targeted logs: add the DR-learner second stage (a ridge fit of "
                                "the cross-fitted AIPW residuals) to each level's conversion and revenue")


class TrainerConfig(BaseModel):
    """Lightning Trainer settings: CPU, GPU or DDP is a config change only."""

    model_config = ConfigDict(extra="forbid")
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str | int = "32-true"
    max_epochs: int = Field(30, ge=1)
    enable_progress_bar: bool = False
    deterministic: bool = False
    num_threads: int = Field(1, ge=1, description="torch CPU threads; 1 is fastest for these small nets on a busy CPU")


def _level_pairs(conv_logits: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What both direct uplift losses compare, per level l against control: conversion probabilities p (N, L),
    uplift tau (N, L-1), indicators 1[T=l] (N, L-1) and 1[T=0] (N, 1), and q = e_l / (e_l + e_0)."""
    p = torch.sigmoid(conv_logits)
    lv = torch.arange(1, p.shape[1], device=t.device)
    q = e[:, 1:] / (e[:, 1:] + e[:, :1]).clamp_min(1e-6)
    return p, p[:, 1:] - p[:, :1], (t[:, None] == lv).float(), (t == 0).float()[:, None], q


def transformed_outcome_loss(conv_logits: torch.Tensor, t: torch.Tensor, y: torch.Tensor, e: torch.Tensor
                             ) -> torch.Tensor:
    """Mean squared error of each level's predicted conversion uplift to the transformed outcome
    Z = y (1[T=l] / q - 1[T=0] / (1 - q)), q = e_l / (e_l + e_0), over the rows of level l or control.
    E[Z | x] is the true uplift, so this targets the difference directly instead of two separate fits."""
    _, tau, t_l, t_0, q = _level_pairs(conv_logits, t, e)
    z = y[:, None] * (t_l / q.clamp_min(1e-3) - t_0 / (1 - q).clamp_min(1e-3))
    pair = t_l + t_0
    return ((pair * (tau - z) ** 2).sum(dim=0) / pair.sum(dim=0).clamp_min(1.0)).sum()


def r_loss(conv_logits: torch.Tensor, t: torch.Tensor, y: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """R-loss of each level's conversion uplift tau_l over the rows of level l or control, summed over levels:
    sum ((y - m) - (1[T=l] - q) tau_l)^2 / sum (1[T=l] - q)^2, with m = q p_l + (1 - q) p_0 the pair's outcome
    mean (held fixed: only tau learns from this loss) and q = e_l / (e_l + e_0). In a randomised log its
    minimiser is the true uplift, like the transformed outcome's, with residuals instead of raw outcomes."""
    p, tau, t_l, t_0, q = _level_pairs(conv_logits, t, e)
    pair = t_l + t_0
    m = (q * p[:, 1:] + (1 - q) * p[:, :1]).detach()
    resid = y[:, None] - m - (t_l - q) * tau
    return ((pair * resid**2).sum(dim=0) / (pair * (t_l - q) ** 2).sum(dim=0).clamp_min(1e-6)).sum()


class MultiTreatmentNet(pl.LightningModule):
    """phi(x) -> conversion logits, log revenue-given-conversion and propensity logits over L levels."""

    def __init__(self, n_features: int, n_levels: int, cfg: dict, revenue_head: bool = True, n_numeric: int = 0):
        super().__init__()
        self.save_hyperparameters()
        c = NetConfig(**cfg)
        self.c, self.n_levels, self.revenue_head = c, n_levels, revenue_head
        self.n_ple = n_numeric if c.numeric_bins else 0
        if self.n_ple:  # bin edges of the piecewise-linear encoding (set by `set_bin_edges`, saved with the net)
            self.register_buffer("bin_edges", torch.zeros(self.n_ple, c.numeric_bins + 1))
        layers, width = [], n_features + self.n_ple * c.numeric_bins
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.ELU(), nn.Dropout(c.dropout)]
            width = h
        self.rep = nn.Sequential(*layers)

        def head() -> nn.Module:
            return nn.Sequential(nn.Linear(width, c.head_hidden), nn.ELU(), nn.Linear(c.head_hidden, 1))

        self.conv_base = head()
        self.conv_effect = nn.ModuleList([head() for _ in range(n_levels - 1)])
        if revenue_head:
            self.rev_base = head()
            self.rev_effect = nn.ModuleList([head() for _ in range(n_levels - 1)])
        self.prop = nn.Linear(width, n_levels)

    @staticmethod
    def _levels(base: nn.Module, effects: nn.ModuleList, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = base(z)
        eff = torch.cat([e(z) for e in effects], dim=1) if len(effects) else b[:, :0]
        return torch.cat([b, b + eff], dim=1), eff

    def set_bin_edges(self, x: np.ndarray) -> None:
        """Quantile edges of the first `n_ple` (numeric) columns of the training matrix."""
        if self.n_ple:
            q = np.linspace(0.0, 1.0, self.c.numeric_bins + 1)
            self.bin_edges.copy_(torch.as_tensor(np.quantile(x[:, : self.n_ple], q, axis=0).T, dtype=torch.float32))

    def piecewise_linear(self, x: torch.Tensor) -> torch.Tensor:
        """Gorishniy et al. (2022) encoding: per bin, the share of it that x has passed (0 below, 1 above).
        Gives the net the step-like splits boosted trees make on a number (tied edges act as a step)."""
        lo, hi = self.bin_edges[:, :-1], self.bin_edges[:, 1:]
        enc = ((x[:, : self.n_ple, None] - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)
        return torch.cat([x, enc.flatten(1)], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.rep(self.piecewise_linear(x) if self.n_ple else x)
        out = {"prop_logits": self.prop(z)}
        out["conv_logits"], out["conv_effect"] = self._levels(self.conv_base, self.conv_effect, z)
        if self.revenue_head:
            out["log_rev"], out["rev_effect"] = self._levels(self.rev_base, self.rev_effect, z)
        return out

    def _losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self(batch["x"])
        t, w = batch["t"], batch["w"]
        rows = torch.arange(len(t), device=t.device)
        bce = nn.functional.binary_cross_entropy_with_logits(out["conv_logits"][rows, t], batch["y"], reduction="none")
        losses = {"conv": (w * bce).sum() / w.sum()}
        losses["prop"] = nn.functional.cross_entropy(out["prop_logits"], t)
        zero = bce.sum() * 0
        spread = out["conv_effect"].var(dim=0).sum() if out["conv_effect"].shape[1] and len(t) > 1 else zero
        rev_spread = zero
        if self.revenue_head:
            conv = batch["y"] > 0
            eta = out["log_rev"][rows, t]
            pois = torch.exp(eta) - batch["r"] * eta  # Poisson deviance with log link: calibrated means
            wc = w * conv
            losses["rev"] = (wc * pois).sum() / wc.sum().clamp_min(1.0)
            if out["rev_effect"].shape[1] and len(t) > 1:
                rev_spread = out["rev_effect"].var(dim=0).sum()
        losses["spread"] = spread + rev_spread
        c = self.c
        if c.uplift_loss_weight > 0 and self.n_levels > 1:
            fn = r_loss if c.uplift_loss == "r_loss" else transformed_outcome_loss
            losses["uplift"] = fn(out["conv_logits"], t, batch["y"], batch["e"])
        else:
            losses["uplift"] = zero
        losses["total"] = (losses["conv"] + c.propensity_weight * losses["prop"] + c.effect_spread_penalty * spread
                           + (c.effect_spread_penalty + c.revenue_spread_penalty) * rev_spread
                           + (c.revenue_weight * losses["rev"] if self.revenue_head else 0.0)
                           + c.uplift_loss_weight * losses["uplift"])
        return losses

    def training_step(self, batch, batch_idx):
        losses = self._losses(batch)
        self.log("train_loss", losses["total"], prog_bar=True, batch_size=len(batch["t"]))
        return losses["total"]

    def validation_step(self, batch, batch_idx):
        losses = self._losses(batch)
        val = losses["conv"] + (self.c.revenue_weight * losses["rev"] if self.revenue_head else 0.0)
        n = len(batch["t"])
        self.log("val_loss", val, prog_bar=True, batch_size=n)
        self.log("val_conv_loss", losses["conv"], batch_size=n)
        if self.c.early_stop == "val_qini":
            p = torch.sigmoid(self(batch["x"])["conv_logits"])
            self._val_rows.append((p[:, 1:] - p[:, :1], batch["t"], batch["y"]))

    def on_validation_epoch_start(self):
        self._val_rows: list[tuple[torch.Tensor, ...]] = []

    def on_validation_epoch_end(self):
        if self.c.early_stop != "val_qini" or not self._val_rows:
            return
        from offerlab.uplift.metrics import qini_coefficient

        tau, t, y = (torch.cat(parts).cpu().numpy() for parts in zip(*self._val_rows, strict=True))
        qini = []
        for lv in range(1, self.n_levels):
            rows = (t == lv) | (t == 0)
            if (t == lv).any() and (t == 0).any():
                qini.append(qini_coefficient(tau[rows, lv - 1], y[rows], (t[rows] == lv).astype(float)))
        # negated so that every monitor in this module is minimised
        self.log("val_neg_qini", -float(np.mean(qini)) if qini else 0.0, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.c.lr, weight_decay=self.c.weight_decay)


class _Batches(torch.utils.data.Dataset):
    """Whole-batch indexing over in-memory tensors (one gather per batch, not one per row)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, idx):
        return {k: v[idx] for k, v in self.tensors.items()}


def _loader(tensors: dict[str, torch.Tensor], batch_size: int, shuffle: bool, seed: int):
    ds = _Batches(tensors)
    gen = torch.Generator().manual_seed(seed)
    base = torch.utils.data.RandomSampler(ds, generator=gen) if shuffle else torch.utils.data.SequentialSampler(ds)
    sampler = torch.utils.data.BatchSampler(base, batch_size, drop_last=False)
    return torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=None)


class _KeepBest(pl.Callback):
    """Keep the weights of the best validation epoch in memory and restore them at the end."""

    def __init__(self, monitor: str = "val_loss"):
        self.monitor, self.best, self.state = monitor, float("inf"), None

    def on_validation_end(self, trainer, pl_module):
        v = trainer.callback_metrics.get(self.monitor)
        if v is not None and float(v) < self.best:
            self.best, self.state = float(v), copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer, pl_module):
        if self.state is not None:
            pl_module.load_state_dict(self.state)


class UpliftModel:
    """Fit / predict over a campaign: an ensemble of `MultiTreatmentNet`s with their feature encoder.

    The estimator interface shared with the baselines: `fit(data)`, `predict_levels(features)` ->
    {"conversion": (n, L), "revenue": (n, L)} expected outcomes under each level, `uplift(features)`.
    """

    name = "offerlab"

    def __init__(self, net: NetConfig | dict | None = None, trainer: TrainerConfig | dict | None = None,
                 seed: int = 0):
        self.net_cfg = net if isinstance(net, NetConfig) else NetConfig(**(net or {}))
        self.trainer_cfg = trainer if isinstance(trainer, TrainerConfig) else TrainerConfig(**(trainer or {}))
        self.seed = seed
        self.encoder: FeatureEncoder | None = None
        self.nets: list[MultiTreatmentNet] = []
        self.levels: list[str] = []
        self.discounts: dict[str, float] = {}
        self.revenue_scale = 1.0
        self.revenue_is_conversion = False
        self.known_propensity: np.ndarray | None = None
        self.history: list[dict] = []
        self.fit_report: dict = {}
        self.propensity_model = None  # a targeted log's assignment classifier, for rows the fit never saw
        # DR second stage: per outcome, (coef (L, F), intercept (L,)) of the correction added to each level
        self.dr_correction: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.returns = None  # the per-level return model (uplift.returns.ReturnModel) of a log with returned_revenue

    # ---------------------------------------------------------------------------------------- fitting
    def _tensors(self, x: np.ndarray, data: CampaignData, weights: np.ndarray, prop: np.ndarray
                 ) -> dict[str, torch.Tensor]:
        return {
            "e": torch.as_tensor(prop, dtype=torch.float32),
            "x": torch.as_tensor(x, dtype=torch.float32),
            "t": torch.as_tensor(data.treatment, dtype=torch.long),
            "y": torch.as_tensor(data.conversion, dtype=torch.float32),
            "r": torch.as_tensor(data.revenue / self.revenue_scale, dtype=torch.float32),
            "w": torch.as_tensor(weights, dtype=torch.float32),
        }

    def _propensity_for_fit(self, data: CampaignData) -> np.ndarray | None:
        mode = self.net_cfg.propensity
        if mode == "known" and data.propensity is None:
            raise ValueError("net.propensity is 'known' but the campaign log carries no usable propensity column")
        return data.propensity if mode in ("known", "auto") else None

    def _assignment(self, data: CampaignData) -> tuple[str, np.ndarray | None]:
        """How the log was assigned, as the fit treats it, and the check's propensities where it ran one.
        "unknown" without a known design is settled by `assignment_check` (arm-prediction AUC vs chance)."""
        if data.assignment != "unknown" or data.propensity is not None or self.net_cfg.propensity == "known":
            return ("targeted" if data.assignment == "targeted" else "randomised"), None
        from offerlab.uplift.propensity import assignment_check

        check = assignment_check(data.features, data.treatment, data.levels, self.net_cfg.propensity_folds, self.seed,
                                 self.net_cfg.min_propensity)
        log.info("assignment unknown: the randomisation check says %s (arm-prediction AUC %.3f, threshold %.3f)",
                 check["verdict"], check["auc"], check["threshold"])
        return check["verdict"], check["propensity"] if check["verdict"] == "targeted" else None

    def _prepare(self, data: CampaignData) -> np.ndarray:
        """Levels, encoder and revenue scale from the training log; returns the encoded feature matrix."""
        torch.set_num_threads(self.trainer_cfg.num_threads)
        self.levels, self.discounts = list(data.levels), dict(data.discounts)
        self.encoder = FeatureEncoder.fit(data.features)
        x = self.encoder.transform(data.features)
        self.revenue_is_conversion = bool(np.array_equal(data.revenue, data.conversion))
        conv_rev = data.revenue[data.conversion > 0]
        self.revenue_scale = float(conv_rev.mean()) if len(conv_rev) and conv_rev.mean() > 0 else 1.0
        self.propensity_model, self.dr_correction = None, {}
        return x

    def fit(self, data: CampaignData, callbacks: list | None = None) -> UpliftModel:
        """Train the ensemble; each member holds out its own stratified validation split for early stopping.
        A targeted log takes the doubly robust path (module docstring). Stacked campaign logs
        (`data.sources`) are reported in `fit_report["logs"]`."""
        self._fit(data, callbacks)
        self.returns = None
        if data.returned_revenue is not None:
            from offerlab.uplift.returns import ReturnModel

            self.returns = ReturnModel(self.seed).fit(data, self.encoder)
            self.fit_report["returns"] = self.returns.report
            log.info("uplift fit: return model on %d buyers (%.1f%% returned something)", self.returns.report["buyers"],
                     100 * self.returns.report["return_rate"])
        if data.sources:
            self.fit_report["logs"] = data.sources
        return self

    def _fit(self, data: CampaignData, callbacks: list | None = None) -> UpliftModel:
        from sklearn.model_selection import train_test_split

        assignment, check_prop = self._assignment(data)
        if assignment == "targeted":
            return self._fit_targeted(data, callbacks, check_prop)
        c = self.net_cfg
        x = self._prepare(data)
        prop = self._propensity_for_fit(data)
        self.known_propensity = None if prop is None else prop[0].copy()
        weights = np.ones(len(data))
        if c.ipw_weighting and prop is not None:
            weights = 1.0 / np.clip(prop[np.arange(len(data)), data.treatment], 1e-3, None)
            weights /= weights.mean()
        # assignment probabilities for the direct uplift loss: the known design, else the arms' shares
        e_fit = prop if prop is not None else np.tile(
            np.bincount(data.treatment, minlength=len(self.levels)) / len(data), (len(data), 1))
        strata = data.treatment * 2 + (data.conversion > 0)
        splits = [train_test_split(np.arange(len(data)), test_size=c.val_fraction, random_state=self.seed * 1000 + m,
                                   stratify=strata) for m in range(c.ensemble)]
        self._fit_members(x, data, weights, e_fit, splits, callbacks)
        self.fit_report = {
            "assignment": "randomised", "propensity": "known (the log's design)" if prop is not None else
            "unknown: arm shares in the uplift loss, the propensity head's estimate for evaluation",
            "trimmed": {"rows": 0, "share": 0.0}, "objective": self._objective(dr=False),
        }
        log.info("uplift fit: %s log, propensity %s, objective: %s", self.fit_report["assignment"],
                 self.fit_report["propensity"], self.fit_report["objective"])
        return self

    def _objective(self, dr: bool) -> str:
        c = self.net_cfg
        parts = ["per-level conversion likelihood (+ Poisson revenue given conversion)" if not self.revenue_is_conversion
                 else "per-level conversion likelihood"]
        if c.uplift_loss_weight > 0:
            parts.append(f"{c.uplift_loss_weight:g} x {c.uplift_loss} uplift loss")
        if dr:
            if c.ipw_weighting:
                parts[0] = f"stabilised IPW-weighted (cap {c.max_ipw_weight:g}) " + parts[0]
            parts.append("with estimated propensities; then the DR-learner second stage (ridge on the cross-fitted "
                         "AIPW residuals of conversion and revenue per level)" if c.dr_correction else
                         "with estimated propensities (no DR second stage)")
        elif c.ipw_weighting and self.known_propensity is not None:
            parts[0] = "IPW-weighted " + parts[0]
        return "; ".join(parts)

    def _fit_members(self, x: np.ndarray, data: CampaignData, weights: np.ndarray, e_fit: np.ndarray,
                     splits: list[tuple[np.ndarray, np.ndarray]], callbacks: list | None) -> None:
        """Train one member per (train rows, validation rows) split, seeded by its position."""
        c, tc = self.net_cfg, self.trainer_cfg
        self.nets, self.history = [], []
        for member, (tr, va) in enumerate(splits):
            seed = self.seed * 1000 + member
            pl.seed_everything(seed, workers=True, verbose=False)
            net = MultiTreatmentNet(x.shape[1], len(self.levels), c.model_dump(),
                                    revenue_head=not self.revenue_is_conversion, n_numeric=len(self.encoder.numeric))
            net.set_bin_edges(x[tr])
            keep = _KeepBest("val_neg_qini" if c.early_stop == "val_qini" else "val_loss")
            trainer = pl.Trainer(
                accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy, precision=tc.precision,
                max_epochs=tc.max_epochs, enable_progress_bar=tc.enable_progress_bar, deterministic=tc.deterministic,
                logger=False, enable_checkpointing=False, enable_model_summary=False,
                callbacks=[pl.callbacks.EarlyStopping(keep.monitor, patience=c.patience), keep, *(callbacks or [])],
            )
            trainer.fit(
                net,
                _loader(self._tensors(x[tr], data.subset(tr), weights[tr], e_fit[tr]), c.batch_size, True, seed),
                _loader(self._tensors(x[va], data.subset(va), weights[va], e_fit[va]), 8192, False, seed),
            )
            net.eval()
            self.nets.append(net.cpu())
            self.history.append({"member": member, "best_val_loss": keep.best, "monitor": keep.monitor,
                                 "epochs": trainer.current_epoch})

    def _fit_targeted(self, data: CampaignData, callbacks: list | None, check_prop: np.ndarray | None
                      ) -> UpliftModel:
        """Doubly robust fit of a targeted log: estimated propensities, trimming, first stage, DR second stage."""
        from sklearn.model_selection import StratifiedKFold, train_test_split

        from offerlab.uplift.propensity import PropensityModel, cross_fitted_propensity, overlap_mask

        c = self.net_cfg
        x = self._prepare(data)
        n_levels = len(self.levels)
        if data.propensity is not None:
            e, source = data.propensity, "known (the log's)"
        else:
            e = check_prop if check_prop is not None else cross_fitted_propensity(
                data.features, data.treatment, n_levels, c.propensity_folds, self.seed)
            source = f"estimated (cross-fitted, {c.propensity_folds} folds)"
            # new rows (test, serving) get the classifier fitted on every training row
            self.propensity_model = PropensityModel.fit(data.features, data.treatment, n_levels, self.seed,
                                                        encoder=self.encoder)
        self.known_propensity = None
        inside = overlap_mask(e, c.min_propensity)
        keep = np.flatnonzero(inside)
        if len(keep) < 100 or (np.bincount(data.treatment[keep], minlength=n_levels) < 10).any():
            raise ValueError(f"only {len(keep)} of {len(data)} customers have every level's propensity >= "
                             f"{c.min_propensity}: the targeted log has too little overlap to estimate effects")
        fit_data, xk, ek = data.subset(keep), x[keep], e[keep]
        t = fit_data.treatment
        weights = np.ones(len(keep))
        if c.ipw_weighting:  # stabilised: the arm's share over the row's propensity, capped, mean 1
            share = np.bincount(t, minlength=n_levels) / len(t)
            weights = np.minimum(share[t] / ek[np.arange(len(t)), t], c.max_ipw_weight)
            weights /= weights.mean()
        strata = t * 2 + (fit_data.conversion > 0)
        if c.ensemble >= 2:  # disjoint validation folds: each row has one member that never trained on it
            folds = StratifiedKFold(c.ensemble, shuffle=True, random_state=self.seed).split(xk, strata)
            splits = [(np.sort(tr), np.sort(va)) for tr, va in folds]
        else:
            splits = [train_test_split(np.arange(len(keep)), test_size=c.val_fraction, random_state=self.seed * 1000,
                                       stratify=strata)]
        self._fit_members(xk, fit_data, weights, ek, splits, callbacks)
        if c.dr_correction:
            self.dr_correction = self._dr_second_stage(xk, fit_data, ek, splits)
        n_out = int((~inside).sum())
        self.fit_report = {
            "assignment": "targeted", "propensity": source,
            "trimmed": {"rows": n_out, "share": n_out / len(data), "min_propensity": c.min_propensity,
                        "kept_by_level": dict(zip(self.levels, np.bincount(t, minlength=n_levels).tolist(),
                                                  strict=True))},
            "propensity_range": {lv: [float(e[:, j].min()), float(np.median(e[:, j])), float(e[:, j].max())]
                                 for j, lv in enumerate(self.levels)},
            "objective": self._objective(dr=True),
        }
        if self.dr_correction:
            self.fit_report["dr_mean_correction"] = {
                k: dict(zip(self.levels, np.asarray(v[2]).round(6).tolist(), strict=True))
                for k, v in self.dr_correction.items()}
            self.dr_correction = {k: v[:2] for k, v in self.dr_correction.items()}
        log.info("uplift fit: targeted log, propensity %s; trimmed %d of %d customers (%.1f%%) outside the common "
                 "support (a level below %.3g)", source, n_out, len(data), 100 * n_out / len(data), c.min_propensity)
        log.info("uplift fit objective: %s", self.fit_report["objective"])
        return self

    def _out_of_fold(self, x: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        """Per row, the conversion and revenue per level of the member whose validation rows held it (NaN where no
        member held it out)."""
        n_levels = len(self.levels)
        out = {k: np.full((len(x), n_levels), np.nan) for k in ("conversion", "revenue")}
        for net, (_, va) in zip(self.nets, splits, strict=True):
            raw = self._raw_nets([net], x[va])
            out["conversion"][va] = raw["p"]
            out["revenue"][va] = raw["p"] if self.revenue_is_conversion else raw["p"] * raw["m"]
        return out

    def _dr_second_stage(self, x: np.ndarray, data: CampaignData, e: np.ndarray,
                         splits: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, ...]]:
        """Per outcome, ridge fits of psi_l = 1[T = l] (y - mu_l(x)) / e_l(x) on x (mu out of fold), one per level.
        Returns {outcome: (coef (L, F), intercept (L,), mean psi (L,))}."""
        from sklearn.linear_model import RidgeCV

        oof = self._out_of_fold(x, splits)
        rows = np.flatnonzero(~np.isnan(oof["conversion"][:, 0]))
        outcomes = {"conversion": data.conversion} if self.revenue_is_conversion else {
            "conversion": data.conversion, "revenue": data.revenue}
        out = {}
        for name, y in outcomes.items():
            coef, icpt, mean = [], [], []
            for lv in range(len(self.levels)):
                hit = (data.treatment[rows] == lv).astype(float)
                psi = hit * (y[rows] - oof[name][rows, lv]) / e[rows, lv]
                ridge = RidgeCV(alphas=np.logspace(0, 7, 15) * len(rows) / 1e4).fit(x[rows], psi)
                coef.append(ridge.coef_)
                icpt.append(float(ridge.intercept_))
                mean.append(float(psi.mean()))
            out[name] = (np.asarray(coef), np.asarray(icpt), np.asarray(mean))
        return out

    # ------------------------------------------------------------------------------------- prediction
    def _encode(self, features: pd.DataFrame | np.ndarray) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError("the model is not fitted")
        if isinstance(features, torch.Tensor):
            return features
        x = features if isinstance(features, np.ndarray) else self.encoder.transform(features)
        return torch.as_tensor(x, dtype=torch.float32)

    def _raw(self, features: pd.DataFrame | np.ndarray, chunk: int = 65536) -> dict[str, np.ndarray]:
        return self._raw_nets(self.nets, features, chunk)

    @torch.no_grad()
    def _raw_nets(self, nets: list[MultiTreatmentNet], features: pd.DataFrame | np.ndarray, chunk: int = 65536
                  ) -> dict[str, np.ndarray]:
        """Ensemble means over `nets`: conversion probabilities p, revenue given conversion m, propensities e."""
        x = self._encode(features)
        acc: dict[str, np.ndarray] = {}
        for net in nets:
            parts: dict[str, list[np.ndarray]] = {"p": [], "m": [], "e": []}
            for s in range(0, len(x), chunk):
                out = net(x[s : s + chunk])
                parts["p"].append(torch.sigmoid(out["conv_logits"]).numpy())
                parts["e"].append(torch.softmax(out["prop_logits"], dim=1).numpy())
                if net.revenue_head:
                    parts["m"].append(torch.exp(out["log_rev"]).numpy() * self.revenue_scale)
            for k, v in parts.items():
                if v:
                    acc[k] = acc.get(k, 0) + np.concatenate(v) / len(nets)
        return acc

    def predict_levels(self, features: pd.DataFrame | np.ndarray) -> dict[str, np.ndarray]:
        """Expected conversion and revenue under each level, arrays (n, L) in `self.levels` order
        (with the DR second stage added when the model was fitted on a targeted log); with a return model also
        `returned` (expected returned revenue) and `p_return` (probability of a return) per level."""
        x = self._encode(features)
        return self._with_returns(self._levels_from_raw(self._raw_nets(self.nets, x), x), x)

    def predict_levels_members(self, features: pd.DataFrame | np.ndarray) -> list[dict[str, np.ndarray]]:
        """`predict_levels` of each ensemble member alone (the spread is the model's own uncertainty)."""
        x = self._encode(features)
        return [self._with_returns(self._levels_from_raw(self._raw_nets([net], x), x), x) for net in self.nets]

    def _with_returns(self, pred: dict[str, np.ndarray], x: torch.Tensor) -> dict[str, np.ndarray]:
        return pred if getattr(self, "returns", None) is None else self.returns.add_to(pred, x.numpy())

    def _levels_from_raw(self, raw: dict[str, np.ndarray], x: torch.Tensor) -> dict[str, np.ndarray]:
        conversion = raw["p"]
        revenue = raw["p"] if self.revenue_is_conversion else raw["p"] * raw["m"]
        if self.dr_correction:
            xf = x.numpy().astype(float)
            coef, icpt = self.dr_correction["conversion"]
            conversion = np.clip(conversion + xf @ coef.T + icpt, 0.0, 1.0)
            if self.revenue_is_conversion:
                revenue = conversion
            else:
                coef, icpt = self.dr_correction["revenue"]
                revenue = np.clip(revenue + xf @ coef.T + icpt, 0.0, None)
        return {"conversion": conversion, "revenue": revenue}

    def predict_propensity(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Assignment probabilities (n, L): the known design if the log carried one; for a targeted log the
        classifier fitted on its training rows; else the head's estimate."""
        if self.known_propensity is not None:
            return np.tile(self.known_propensity, (len(features), 1))
        if self.propensity_model is not None:
            return self.propensity_model.predict(features)
        return self._raw(features)["e"]

    def uplift(self, features: pd.DataFrame | np.ndarray, outcome: str = "conversion") -> pd.DataFrame:
        """Predicted uplift of each treated level vs control (columns = levels[1:])."""
        pred = self.predict_levels(features)[outcome]
        return pd.DataFrame(pred[:, 1:] - pred[:, :1], columns=self.levels[1:])

    def recommend(self, features: pd.DataFrame, policy, customer_id=None, budget: float | None = None
                  ) -> pd.DataFrame:
        """Which discount, if any, per customer (see `policy.recommend`)."""
        from offerlab.uplift.policy import recommend

        ids = customer_id if customer_id is not None else features.get("customer_id", np.arange(len(features)))
        return recommend(self.predict_levels(features), self.levels, policy, customer_id=ids,
                         discounts=self.discounts, budget=budget)

    # -------------------------------------------------------------------------------------- persistence
    def state(self) -> dict:
        return {
            "net_cfg": self.net_cfg.model_dump(), "trainer_cfg": self.trainer_cfg.model_dump(), "seed": self.seed,
            "encoder": self.encoder.to_dict() if self.encoder else None, "levels": self.levels,
            "discounts": self.discounts, "revenue_scale": self.revenue_scale,
            "revenue_is_conversion": self.revenue_is_conversion,
            "known_propensity": None if self.known_propensity is None else self.known_propensity.tolist(),
            "n_features": len(self.encoder.feature_names) if self.encoder else 0,
            "nets": [n.state_dict() for n in self.nets],
            "fit_report": self.fit_report, "propensity_model": self.propensity_model,
            "dr_correction": {k: [v[0].tolist(), v[1].tolist()] for k, v in self.dr_correction.items()},
            "returns": self.returns,
        }

    def save(self, path) -> None:
        torch.save(self.state(), path)

    @classmethod
    def load(cls, path) -> UpliftModel:
        s = torch.load(path, map_location="cpu", weights_only=False)
        m = cls(s["net_cfg"], s["trainer_cfg"], s["seed"])
        m.encoder = FeatureEncoder.from_dict(s["encoder"])
        m.levels, m.discounts, m.revenue_scale = s["levels"], s["discounts"], s["revenue_scale"]
        m.revenue_is_conversion = s["revenue_is_conversion"]
        m.known_propensity = None if s["known_propensity"] is None else np.asarray(s["known_propensity"])
        m.fit_report, m.propensity_model = s.get("fit_report", {}), s.get("propensity_model")
        m.dr_correction = {k: (np.asarray(v[0]), np.asarray(v[1])) for k, v in s.get("dr_correction", {}).items()}
        m.returns = s.get("returns")
        for sd in s["nets"]:
            net = MultiTreatmentNet(s["n_features"], len(m.levels), s["net_cfg"],
                                    revenue_head=not m.revenue_is_conversion, n_numeric=len(m.encoder.numeric))
            net.load_state_dict(sd)
            net.eval()
            m.nets.append(net)
        return m
