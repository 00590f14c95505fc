"""The PD network (wide & deep, Lightning) and `CreditModel`: a calibrated ensemble of it.

Why this shape: credit tables are small (German credit: 1,000 rows) and mostly additive in the
log-odds, so the network is a linear ("wide") part on one-hot categories and numeric quantile bins
— a logistic scorecard learned by gradient descent — plus a small MLP over category embeddings and
the scaled numerics for interactions, both under L2 penalties. Several members are trained, each on the
training rows minus one inner fold (early-stopped on that fold), and their logits are averaged.

Calibration is cross-fitted (`calibration_rows: crossfit`, the default): every training row is held out
by exactly one inner fold, so the pooled held-out logits calibrate on all rows while all rows also train
members (on German credit's 800 training rows per fold, setting 20 % aside cost ~0.009 AUC). The map is
fitted on single members' held-out logits but applied to the average of all members, which is less
noisy and deserves a steeper slope: `EnsembleRescaled` stretches the average by var(member) /
var(average) first (checked out of sample: pooled single-member slope x stretch = the average's slope).
`calibration: none` keeps the average as it is: members early-stopped on log loss are close to calibrated,
and on a few hundred rows a fitted map adds more error than it removes. The earlier scheme (`holdout`:
a stratified `calibration_fraction` of the rows set aside and scored by the whole averaged ensemble)
remains for members on random feature subspaces, where the stretch does not hold. Options: a
piecewise-linear numeric encoding (`ple`), random feature subspaces per member (`feature_fraction`) and,
with `select_from`, the blend of all candidates as one more option (`blend`); none helped on German
credit, so all are off by default.
"""

from __future__ import annotations

import copy
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from offerlab.credit.calibration import EnsembleRescaled, ensemble_stretch, make_calibrator
from offerlab.credit.data import Encoded, FeatureEncoder
from offerlab.credit.monitoring import PopulationProfile

log = logging.getLogger(__name__)


class NetConfig(BaseModel):
    """Network, regularisation and ensemble settings."""

    model_config = ConfigDict(extra="forbid")
    emb_dim: int = Field(4, ge=1, description="embedding width cap per categorical field")
    hidden: list[int] = Field(default_factory=lambda: [16], description="MLP widths; [] = wide part only")
    dropout: float = Field(0.2, ge=0, lt=1)
    lr: float = Field(0.01, gt=0)
    l2_wide: float = Field(1e-3, ge=0, description="L2 penalty on the linear part's weights")
    l2_deep: float = Field(1e-3, ge=0, description="L2 penalty on the MLP and embedding weights")
    batch_size: int = Field(128, ge=8)
    patience: int = Field(15, ge=1, description="epochs without validation improvement before stopping")
    members: int = Field(5, ge=1, description="inner folds of the training rows; one member set per fold")
    seeds_per_fold: int = Field(1, ge=1, description="members per inner fold (different seeds), averaged")
    n_bins: int = Field(5, ge=2, description="quantile bins per numeric feature in the linear part")
    calibration: Literal["platt", "temperature", "isotonic", "none"] = "platt"
    calibration_rows: Literal["crossfit", "holdout"] = Field(
        "crossfit",
        description="crossfit: the map is fitted on the inner folds' held-out logits, so every training row "
                    "trains members and calibrates; holdout: on a set-aside share (calibration_fraction)",
    )
    calibration_fraction: float = Field(
        0.2, gt=0, le=0.5,
        description="holdout only: share of the training rows set aside (stratified) to fit the calibration map "
                    "on the averaged ensemble's logits; the members never train or early-stop on them",
    )
    ple: bool = Field(False, description="also feed a piecewise-linear numeric encoding to both parts")
    feature_fraction: float = Field(1.0, gt=0, le=1, description="share of features each member sees (random subspace); "
                                    "below 1 calibrate with calibration_rows: holdout")
    blend: bool = Field(
        False, description="with select_from: the average of all candidates' members is one more option, kept "
                           "when its inner cross-validated AUC is the best",
    )
    select_from: list[dict] = Field(
        default_factory=list,
        description="candidate overrides of these settings; fit keeps the one with the best inner cross-validated "
                    "AUC (chosen on the training rows only). Empty: use these settings as they are",
    )

    @field_validator("select_from")
    @classmethod
    def _candidates_valid(cls, v: list[dict]) -> list[dict]:
        fixed = {"select_from", "blend", "members", "n_bins", "calibration", "calibration_rows",
                 "calibration_fraction"}  # shared by all candidates
        for i, over in enumerate(v):
            bad = sorted(set(over) & fixed)
            if bad:
                raise ValueError(f"select_from[{i}] may not override {bad}: every candidate shares them")
            NetConfig(**over)  # each candidate must be a valid setting on its own
        return v

    def candidates(self) -> list[NetConfig]:
        """The settings `fit` chooses among (just this one when `select_from` is empty)."""
        base = self.model_dump(exclude={"select_from", "blend"})
        return [NetConfig(**{**base, **over}) for over in self.select_from] or [NetConfig(**base)]


def _overridden(cfg: NetConfig) -> set[str]:
    return {k for over in cfg.select_from for k in over}


class TrainerConfig(BaseModel):
    """Lightning trainer settings: CPU, GPU or DDP is a matter of this block alone."""

    model_config = ConfigDict(extra="forbid")
    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str | int = "32-true"
    max_epochs: int = Field(200, ge=1)
    enable_progress_bar: bool = False
    deterministic: bool = False


class CreditNet(pl.LightningModule):
    """logit = wide([one-hot, bins, numerics]) + MLP([embeddings, numerics])."""

    def __init__(self, cardinalities: list[int], n_num: int, n_wide: int, cfg: dict, prior_logit: float = 0.0,
                 n_ple: int = 0):
        super().__init__()
        self.save_hyperparameters()
        c = NetConfig(**cfg)
        self.cfg = c
        dims = [min(c.emb_dim, (k + 2) // 2) for k in cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(k + 1, d) for k, d in zip(cardinalities, dims, strict=True))
        self.n_ple = n_ple if c.ple else 0
        self.wide = nn.Linear(n_wide + n_num + self.n_ple, 1)
        nn.init.zeros_(self.wide.weight)
        nn.init.constant_(self.wide.bias, prior_logit)
        layers: list[nn.Module] = []
        width = sum(dims) + n_num + self.n_ple
        for h in c.hidden:
            layers += [nn.Linear(width, h), nn.SiLU(), nn.Dropout(c.dropout)]
            width = h
        self.deep = None
        if c.hidden:
            out = nn.Linear(width, 1)
            nn.init.zeros_(out.weight)  # start as the pure linear model; the MLP adds only what pays
            nn.init.zeros_(out.bias)
            self.deep = nn.Sequential(*layers, out)
        # which inputs this member may use (random subspace); all by default
        self.register_buffer("keep_cat", torch.ones(len(cardinalities)))
        self.register_buffer("keep_num", torch.ones(n_num))
        self.register_buffer("keep_wide", torch.ones(n_wide))
        self.register_buffer("keep_ple", torch.ones(self.n_ple))

    def restrict_features(self, keep: np.ndarray, index: dict[str, np.ndarray]) -> None:
        """Use only the features flagged in `keep` (bool per feature); `index` maps columns to features."""
        for name in ("cat", "num", "wide", "ple"):
            buf = getattr(self, f"keep_{name}")
            if len(buf):
                buf.copy_(torch.as_tensor(keep[index[name]][: len(buf)], dtype=buf.dtype))

    def forward(self, cat: torch.Tensor, num: torch.Tensor, wide: torch.Tensor, ple: torch.Tensor) -> torch.Tensor:
        num = num * self.keep_num
        cont = torch.cat([num, ple * self.keep_ple], dim=1) if self.n_ple else num
        logit = self.wide(torch.cat([wide * self.keep_wide, cont], dim=1)).squeeze(-1)
        if self.deep is not None:
            embs = [e(cat[:, j]) * self.keep_cat[j] for j, e in enumerate(self.embeddings)]
            logit = logit + self.deep(torch.cat([*embs, cont], dim=1)).squeeze(-1)
        return logit

    def _penalty(self) -> torch.Tensor:
        pen = self.cfg.l2_wide * self.wide.weight.pow(2).sum()
        if self.deep is not None:
            deep_w = [m.weight for m in self.deep if isinstance(m, nn.Linear)] + [e.weight for e in self.embeddings]
            pen = pen + self.cfg.l2_deep * sum(w.pow(2).sum() for w in deep_w)
        return pen

    def training_step(self, batch, batch_idx):
        *x, y = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self(*x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, batch_size=len(y))
        return loss + self._penalty()

    def validation_step(self, batch, batch_idx):
        *x, y = batch
        loss = nn.functional.binary_cross_entropy_with_logits(self(*x), y)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr)


class KeepBestWeights(pl.Callback):
    """Early stopping that keeps the best epoch's weights in memory (no checkpoint files)."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.wait = patience, float("inf"), None, 0

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics["val_loss"])
        if loss < self.best - 1e-5:
            self.best, self.wait = loss, 0
            self.state = copy.deepcopy(module.state_dict())
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.state is not None:
            module.load_state_dict(self.state)


def _tensors(e: Encoded, y: np.ndarray | None = None) -> list[torch.Tensor]:
    ple = e.ple if e.ple is not None else np.zeros((len(e.cat), 0), np.float32)
    out = [torch.as_tensor(e.cat), torch.as_tensor(e.num), torch.as_tensor(e.wide), torch.as_tensor(ple)]
    if y is not None:
        out.append(torch.as_tensor(np.asarray(y, dtype=np.float32)))
    return out


def _subset(e: Encoded, idx: np.ndarray) -> Encoded:
    return Encoded(cat=e.cat[idx], num=e.num[idx], wide=e.wide[idx], ple=None if e.ple is None else e.ple[idx])


@dataclass
class _InnerFit:
    """One setting's members on the inner folds (one group per fold) and their cross-fitted held-out logits."""

    held: np.ndarray  # per row: mean logit of the members of the fold that held it out (NaN: none did)
    groups: list[list[CreditNet]] = field(default_factory=list)

    def auc(self, y: np.ndarray) -> float:
        mask = ~np.isnan(self.held)
        return float(roc_auc_score(y[mask], self.held[mask]))

    @staticmethod
    def average(fits: list[_InnerFit]) -> _InnerFit:
        """The blend of several settings trained on the same folds: held-out logits averaged, members pooled."""
        return _InnerFit(held=np.mean([f.held for f in fits], axis=0),
                         groups=[[net for f in fits for net in f.groups[k]] for k in range(len(fits[0].groups))])


class CreditModel:
    """Calibrated PD ensemble over application features (see module doc). sklearn-like fit / predict_pd.

    `decide(applications, transactions)` adds score, grade, reasons and terms (see `offerlab.credit`).
    """

    name = "offerlab"

    def __init__(self, net: NetConfig | dict | None = None, trainer: TrainerConfig | dict | None = None, seed: int = 0):
        self.net_cfg = net if isinstance(net, NetConfig) else NetConfig(**(net or {}))
        self.trainer_cfg = trainer if isinstance(trainer, TrainerConfig) else TrainerConfig(**(trainer or {}))
        self.seed = seed
        self.members: list[CreditNet] = []
        self.decision = None  # the DecisionConfig that `decide` uses (attached by train)

    # -- training -------------------------------------------------------------------------------
    def _inner_splits(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        k = self.net_cfg.members
        if k == 1:
            tr, va = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=self.seed)
            return [(tr, va)]
        return list(StratifiedKFold(k, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y))

    def _fit_member(self, cfg: NetConfig, enc: Encoded, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
                    seed: int, callbacks: list | None = None) -> CreditNet:
        pl.seed_everything(seed, workers=True, verbose=False)
        prior = float(np.log(y[tr].mean() / (1 - y[tr].mean())))
        net = CreditNet(self.encoder.cardinalities, enc.num.shape[1], enc.wide.shape[1],
                        cfg.model_dump(exclude={"select_from", "blend"}), prior, n_ple=enc.ple.shape[1])
        frac = cfg.feature_fraction
        if frac < 1:
            n_feat = len(self.encoder.categorical) + len(self.encoder.numeric)
            chosen = np.random.default_rng(seed).permutation(n_feat)[: max(1, round(frac * n_feat))]
            keep = np.zeros(n_feat, dtype=bool)
            keep[chosen] = True
            net.restrict_features(keep, self.encoder.feature_index())
        train_dl = DataLoader(TensorDataset(*_tensors(_subset(enc, tr), y[tr])), batch_size=cfg.batch_size,
                              shuffle=True, drop_last=len(tr) > cfg.batch_size)
        val_dl = DataLoader(TensorDataset(*_tensors(_subset(enc, va), y[va])), batch_size=8192)
        trainer = pl.Trainer(**self.trainer_cfg.model_dump(), logger=False, enable_checkpointing=False,
                             enable_model_summary=False, callbacks=[KeepBestWeights(cfg.patience), *(callbacks or [])],
                             num_sanity_val_steps=0)
        trainer.fit(net, train_dl, val_dl)
        net._trainer = None  # keep the fitted member picklable and light
        return net.cpu().eval()

    def _fit_members(self, cfg: NetConfig, enc: Encoded, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                     callbacks: list | None = None) -> _InnerFit:
        """Members per inner split and their cross-fitted held-out logits (NaN where no split holds out)."""
        out = _InnerFit(held=np.full(len(y), np.nan))
        for k, (tr, va) in enumerate(splits):
            out.groups.append([self._fit_member(cfg, enc, y, tr, va, self.seed * 1000 + 100 * s + k, callbacks)
                               for s in range(cfg.seeds_per_fold)])
            out.held[va] = np.mean([self._member_logit(net, _subset(enc, va)) for net in out.groups[-1]], axis=0)
        return out

    def fit(self, X: pd.DataFrame, y: np.ndarray, callbacks: list | None = None) -> CreditModel:
        """Fit encoder, ensemble members (inner folds) and the calibration map.

        Cross-fit (default): members train on all training rows, each set on all but one inner fold, and the
        map is fitted on the pooled held-out logits, then carried over to the average of all members
        (`EnsembleRescaled`). Holdout: members train outside a stratified calibration
        split, and the map is fitted on that split as scored by the averaged ensemble. With `select_from`,
        each candidate setting trains its own members on the same inner folds; the candidate (or, with
        `blend`, the average of all of them) whose held-out logits rank best (AUC) is kept (`self.selection`
        lists them all). No row outside the training rows plays a part in the choice.
        """
        y = np.asarray(y, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise ValueError("training labels hold one class only; need defaults and non-defaults")
        self.encoder = FeatureEncoder(n_bins=self.net_cfg.n_bins).fit(X)
        enc = self.encoder.transform(X)
        crossfit = self.net_cfg.calibration_rows == "crossfit"
        fit_idx, cal_idx = np.arange(len(y)), np.arange(0)
        if not crossfit:
            fit_idx, cal_idx = train_test_split(fit_idx, test_size=self.net_cfg.calibration_fraction,
                                                stratify=y, random_state=self.seed + 7919)
        enc_fit, y_fit = _subset(enc, fit_idx), y[fit_idx]
        splits = self._inner_splits(y_fit)
        overridden = _overridden(self.net_cfg)
        candidates = self.net_cfg.candidates()
        options = [(cfg.model_dump(include=overridden), self._fit_members(cfg, enc_fit, y_fit, splits, callbacks))
                   for cfg in candidates]
        if self.net_cfg.blend and len(options) > 1:
            options.append(({"blend": True}, _InnerFit.average([fitted for _, fitted in options])))
        self.selection = [{"inner_auc": fitted.auc(y_fit), **settings} for settings, fitted in options]
        best = int(np.argmax([s["inner_auc"] for s in self.selection]))
        self.chosen = candidates[best] if best < len(candidates) else self.net_cfg
        fitted = options[best][1]
        self.members = [net for nets in fitted.groups for net in nets]
        if crossfit:
            self.calibrator = self._crossfit_calibrator(fitted, enc_fit, y_fit)
            self.calibration_rows = int((~np.isnan(fitted.held)).sum())
        else:
            self.calibrator = make_calibrator(self.net_cfg.calibration).fit(
                self._ensemble_logit(_subset(enc, cal_idx)), y[cal_idx])
            self.calibration_rows = len(cal_idx)
        self.feature_columns = list(X.columns)
        # for PSI later; the score's PSI is taken on the PD (the same bins: the points scale is monotone in it)
        self.profile = PopulationProfile().fit(X, self.predict_pd(X))
        return self

    def _crossfit_calibrator(self, fitted: _InnerFit, enc: Encoded, y: np.ndarray):
        """The map fitted on held-out logits (one inner fold's members each), carried over to all members' mean.

        `calibration: none` keeps the members' mean logit as it is (members early-stopped on log loss).
        """
        mask = ~np.isnan(fitted.held)
        inner = make_calibrator(self.net_cfg.calibration).fit(fitted.held[mask], y[mask])
        if self.net_cfg.calibration == "none":
            return inner
        unit_logits = np.stack([np.mean([self._member_logit(n, enc) for n in nets], axis=0) for nets in fitted.groups])
        stretch, center = ensemble_stretch(unit_logits)
        return EnsembleRescaled(inner, stretch, center)

    def monitor(self, applications: pd.DataFrame, transactions: pd.DataFrame | None = None) -> pd.DataFrame:
        """PSI of new applications against the training population, per feature and for the score.

        Status per row: stable (< 0.10), moderate (0.10-0.25) or significant (>= 0.25) shift.
        """
        X = self.features(applications, transactions)
        return self.profile.psi(X, self.predict_pd(X))

    # -- prediction -----------------------------------------------------------------------------
    @staticmethod
    @torch.no_grad()
    def _member_logit(net: CreditNet, enc: Encoded) -> np.ndarray:
        return net(*_tensors(enc)).double().numpy()

    def raw_logit(self, X: pd.DataFrame) -> np.ndarray:
        """Mean of the members' logits (before calibration)."""
        if not self.members:
            raise RuntimeError("the model is not fitted; call fit first")
        return self._ensemble_logit(self.encoder.transform(X))

    def _ensemble_logit(self, enc: Encoded) -> np.ndarray:
        return np.mean([self._member_logit(m, enc) for m in self.members], axis=0)

    def predict_logit(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated log-odds of default."""
        return self.calibrator.transform_logit(self.raw_logit(X))

    def predict_pd(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of default per row of application features."""
        return self.calibrator.transform(self.raw_logit(X))

    # -- applications in, offers out --------------------------------------------------------------
    def features(self, applications: pd.DataFrame, transactions: pd.DataFrame | None = None) -> pd.DataFrame:
        """Feature rows for raw applications; behaviour features need `transactions` (or `beh_*` columns)."""
        from offerlab.credit.data import BEHAVIOUR_PREFIX, application_features

        needs_behaviour = any(c.startswith(BEHAVIOUR_PREFIX) for c in self.feature_columns)
        has_behaviour = any(c.startswith(BEHAVIOUR_PREFIX) for c in applications.columns)
        if needs_behaviour and not has_behaviour and transactions is None:
            raise ValueError(
                "this model uses purchase-history features: pass the transactions table (or beh_* columns)"
            )
        share = BEHAVIOUR_PREFIX + "cat_share_"
        categories = [c.removeprefix(share) for c in self.feature_columns if c.startswith(share)]
        X = application_features(applications, transactions if needs_behaviour and not has_behaviour else None,
                                 categories=categories or None)
        self.encoder.check_columns(X)
        return X[self.feature_columns]

    def decide(self, applications: pd.DataFrame, transactions: pd.DataFrame | None = None, config=None,
               features: pd.DataFrame | None = None) -> pd.DataFrame:
        """PD, score, grade, reasons (<= 4) and credit terms per application (see `offerlab.credit`).

        `features` skips feature building when the caller already has them (same rows and order).
        """
        from offerlab.credit.decision import DecisionConfig, decide

        config = config or self.decision or DecisionConfig()
        X = features[self.feature_columns] if features is not None else self.features(applications, transactions)
        return decide(self, applications, X, config)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Pickle the fitted model (encoder, members on CPU, calibrator, decision config)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(self, f)
        return path

    @staticmethod
    def load(path: str | Path) -> CreditModel:
        with open(path, "rb") as f:
            model = pickle.load(f)
        if not isinstance(model, CreditModel):
            raise ValueError(f"{path} does not hold a CreditModel")
        return model
