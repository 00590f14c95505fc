"""The PD network (wide & deep, Lightning) and `CreditModel`: a calibrated ensemble of it.

Why this shape: credit tables are mostly additive in the log-odds, so the network is a linear ("wide")
part on one-hot categories and numeric quantile bins — a logistic scorecard learned by gradient
descent — plus a small MLP over category embeddings and the scaled numerics for interactions, both
under L2 penalties. Several members are trained, each on the training rows minus one inner fold
(early-stopped on that fold), and their logits are averaged.

Why it is fast: the members are not trained one after the other. `CreditEnsembleNet` holds every
member's weights stacked along a leading member axis, and one forward pass (batched matrix products,
one `embedding_bag` for the wide part) gives all members' logits for a batch. Every batch is drawn
from all training rows and each member's loss is masked to the rows outside its own inner fold, so
member m still sees exactly its own training rows; each member is validated on its own fold after
every epoch and keeps its best epoch's weights (early stopping per member; the fit ends when all have
stopped). The rows stay in memory as tensors (a sampler hands out index batches; no per-row
Dataset), and the batch size and learning rate grow with the rows (`max_steps_per_epoch`), so an
epoch over 200,000 rows is a few dozen optimiser steps. On many rows fewer inner folds suffice
(`scale_rows`, `members_at_scale`): each member then trains on fewer rows, but every row is still
held out by exactly one fold, so calibration is still fitted on out-of-fold logits of all rows.

Calibration is cross-fitted (`calibration_rows: crossfit`, the default): the pooled held-out logits
calibrate on all rows while all rows also train members (on German credit's 800 training rows per
fold, setting 20 % aside cost ~0.009 AUC). The map is fitted on single members' held-out logits but
applied to the average of all members, which is less noisy and deserves a steeper slope:
`EnsembleRescaled` stretches the average by var(member) / var(average) first (checked out of sample:
pooled single-member slope x stretch = the average's slope). `calibration: none` keeps the average as
it is: members early-stopped on log loss are close to calibrated, and on a few hundred rows a fitted
map adds more error than it removes. The earlier scheme (`holdout`: a stratified
`calibration_fraction` of the rows set aside and scored by the whole averaged ensemble) remains for
members on random feature subspaces, where the stretch does not hold. Options: a piecewise-linear
numeric encoding (`ple`), random feature subspaces per member (`feature_fraction`) and, with
`select_from`, the blend of all candidates as one more option (`blend`); none helped on German
credit, so all are off by default.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from contextlib import contextmanager
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
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from offerlab.credit.calibration import EnsembleRescaled, ensemble_stretch, make_calibrator
from offerlab.credit.data import Encoded, FeatureEncoder
from offerlab.credit.monitoring import PopulationProfile

log = logging.getLogger(__name__)
PREDICT_CHUNK = 65_536  # rows per forward pass when scoring (bounds the activations' memory)


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
    max_steps_per_epoch: int | None = Field(
        50, ge=1,
        description="at most this many optimiser steps per epoch: on more rows than batch_size x this, the batch "
                    "grows to rows / this and the learning rate by the square root of that growth (at most lr_max); "
                    "null: batch_size and lr as they are, whatever the rows",
    )
    lr_max: float = Field(0.03, gt=0, description="cap of the grown learning rate (max_steps_per_epoch)")
    patience: int = Field(15, ge=1, description="epochs without validation improvement before a member stops")
    members: int = Field(5, ge=1, description="inner folds of the training rows; one member set per fold")
    scale_rows: int | None = Field(
        100_000, ge=1,
        description="from this many training rows on, members_at_scale inner folds instead of members (null: never)",
    )
    members_at_scale: int = Field(3, ge=2, description="inner folds on scale_rows or more training rows")
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
    threads: int | None = Field(
        1, ge=1, description="torch CPU threads while fitting (null: torch's default); one, since the stacked "
                             "members' ops are small and two threads on two shared cores ran ~10x slower under load")
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
        fixed = {"select_from", "blend", "members", "scale_rows", "members_at_scale", "n_bins", "calibration",
                 "calibration_rows", "calibration_fraction", "threads"}  # shared by all candidates
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

    def inner_folds(self, rows: int) -> int:
        """Inner folds (member sets) for this many training rows."""
        return self.members_at_scale if self.scale_rows is not None and rows >= self.scale_rows else self.members

    def step_size(self, rows: int) -> tuple[int, float]:
        """(batch size, learning rate) for this many rows per member: grown where the rows are many."""
        if self.max_steps_per_epoch is None or rows <= self.batch_size * self.max_steps_per_epoch:
            return self.batch_size, self.lr
        batch = math.ceil(rows / self.max_steps_per_epoch)
        return batch, min(self.lr * math.sqrt(batch / self.batch_size), max(self.lr_max, self.lr))


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


# -- the stacked network ----------------------------------------------------------------------------
class _Rows(Dataset):
    """Training rows as in-memory tensors, indexed by a whole batch of row numbers at a time."""

    def __init__(self, widx: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor, y: torch.Tensor, fold: torch.Tensor):
        self.widx, self.cat, self.cont, self.y, self.fold = widx, cat, cont, y, fold

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.widx[idx], self.cat[idx], self.cont[idx], self.y[idx], self.fold[idx]


class _Batches(Sampler):
    """Each epoch a fresh permutation of the rows, cut into index batches (one DataLoader item per step)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0
        self.drop_last = n > batch_size and n % batch_size < batch_size // 2  # no tiny, noisy last step

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self):
        # a generator per epoch from (seed, epoch), not one kept: a torch.Generator pickles its state as a
        # temporary tensor, which ddp_spawn shares by a file descriptor that is gone before the worker reads it
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        yield from torch.randperm(self.n, generator=generator).split(self.batch_size)[: len(self)]


def _seen(rows: int) -> torch.Tensor:
    """(1, rows, 1) mask that zeroes row 0 (the unseen level) of a stacked embedding table."""
    mask = torch.ones(1, rows, 1)
    mask[0, 0] = 0.0
    return mask


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class CreditEnsembleNet(pl.LightningModule):
    """Several members of the wide & deep PD net as one module; every weight carries the member as an axis.

    Member m: logit = wide_m(one-hot categories and numeric bins, numerics) + MLP_m([embeddings, numerics]).
    The wide part is one weight per (level or bin, member), summed by `embedding_bag` over a row's fields
    (an unseen level points at row 0, the padding row, which adds nothing: the one-hot row of zeros); an
    unseen level's embedding is zero too; the MLP's layers are
    (member, in, out) weights applied by batched matrix products. Member m trains on the rows whose inner fold
    is not `member_fold[m]` and is validated on the rows of that fold.
    """

    def __init__(self, cat_sizes: list[int], bin_sizes: list[int], n_num: int, n_ple: int, cfg: dict,
                 member_fold: list[int], prior_logit: float = 0.0, seed: int = 0, keep: np.ndarray | None = None,
                 ple_feature: np.ndarray | None = None):
        super().__init__()
        c = NetConfig(**cfg)
        self.cfg = c
        m = len(member_fold)
        self.n_members = m
        g = torch.Generator().manual_seed(seed)
        self.use_ple = bool(c.ple and n_ple)
        n_cont = n_num + (n_ple if self.use_ple else 0)
        widths = list(cat_sizes) + list(bin_sizes)
        self.n_cat = len(cat_sizes)
        self.register_buffer("member_fold", torch.as_tensor(member_fold, dtype=torch.long))
        # row 0 of the wide table is the padding row (unseen levels); field j's block starts at offset j
        self.register_buffer("wide_offset", torch.tensor(1 + np.concatenate([[0], np.cumsum(widths)[:-1]]),
                                                         dtype=torch.long))
        self.register_buffer("best_epoch", torch.full((m,), -1, dtype=torch.long))  # per member (set by the fit)
        self.wide = nn.Parameter(torch.zeros(1 + sum(widths), m))  # (levels, members): embedding_bag's layout
        self.wide_cont = nn.Parameter(torch.zeros(m, n_cont))
        self.bias = nn.Parameter(torch.full((m,), float(prior_logit)))
        self.deep = bool(c.hidden)
        dims = [min(c.emb_dim, (k + 2) // 2) for k in cat_sizes] if self.deep else []
        self.embeddings = nn.ParameterList(nn.Parameter(torch.randn((m, k + 1, d), generator=g) * _seen(k + 1))
                                           for k, d in zip(cat_sizes, dims, strict=False))
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        layer_widths = [sum(dims) + n_cont, *c.hidden]
        for a, b in zip(layer_widths[:-1], layer_widths[1:], strict=True):  # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(_uniform((m, a, b), 1 / math.sqrt(a), g)))
            self.biases.append(nn.Parameter(_uniform((m, 1, b), 1 / math.sqrt(a), g)))
        if self.deep:  # the output starts at zero: the pure linear model; the MLP adds only what pays
            self.out_w = nn.Parameter(torch.zeros(m, layer_widths[-1], 1))
            self.out_b = nn.Parameter(torch.zeros(m, 1, 1))
        self._masks(keep, len(cat_sizes), widths, n_num, n_ple, ple_feature)
        self.rows: _Rows | None = None
        self.val_folds: list[torch.Tensor] = []
        self.val_member_loss: torch.Tensor | None = None

    def _masks(self, keep: np.ndarray | None, n_cat: int, widths: list[int], n_num: int, n_ple: int,
               ple_feature: np.ndarray | None) -> None:
        """Random feature subspaces: which inputs each member may use (None: all of them)."""
        self.restricted = keep is not None
        if keep is None:
            for name in ("keep_wide", "keep_cat", "keep_cont"):
                self.register_buffer(name, None)
            return
        keep = torch.as_tensor(keep, dtype=torch.float32)  # (members, features): categoricals, then numerics
        wide_feature = np.concatenate([[0], np.repeat(np.arange(len(widths)), widths)])  # the padding row: any
        cont_feature = np.arange(n_cat, n_cat + n_num)
        if self.use_ple:
            cont_feature = np.concatenate([cont_feature, np.asarray(ple_feature, dtype=np.int64)[:n_ple]])
        self.register_buffer("keep_wide", keep[:, wide_feature].T.contiguous())
        self.register_buffer("keep_cat", keep[:, :n_cat].contiguous())
        self.register_buffer("keep_cont", keep[:, cont_feature].contiguous())

    # -- inputs and forward pass ----------------------------------------------------------------
    def inputs(self, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(wide indices, category codes, continuous inputs) tensors of encoded rows."""
        cat = torch.as_tensor(enc.cat, dtype=torch.long)
        off = self.wide_offset.cpu()
        widx = torch.cat([torch.where(cat > 0, cat - 1 + off[: self.n_cat], 0),
                          torch.as_tensor(enc.bins, dtype=torch.long) + off[self.n_cat:]], dim=1)
        cont = torch.as_tensor(enc.num, dtype=torch.float32)
        if self.use_ple:
            cont = torch.cat([cont, torch.as_tensor(enc.ple, dtype=torch.float32)], dim=1)
        return widx, cat, cont

    def forward(self, widx: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor,
                members: slice = slice(None)) -> torch.Tensor:
        """(members, rows) logits; `members` picks a contiguous range of them."""
        wide = self.wide[:, members]
        if self.restricted:
            wide = wide * self.keep_wide[:, members]
        logit = F.embedding_bag(widx, wide, mode="sum", padding_idx=0).T + self.bias[members, None]  # (m, rows)
        xc = cont.unsqueeze(0)  # (1, rows, n_cont), broadcast over members
        if self.restricted:
            xc = xc * self.keep_cont[members].unsqueeze(1)
            logit = logit + (xc @ self.wide_cont[members].unsqueeze(-1)).squeeze(-1)
        else:
            logit = logit + (cont @ self.wide_cont[members].T).T
        if not self.deep:
            return logit
        m = len(range(self.n_members)[members])
        embs = [e[members].index_select(1, cat[:, j]) for j, e in enumerate(self.embeddings)]  # (m, rows, d_j)
        if self.restricted:
            embs = [v * self.keep_cat[members, j, None, None] for j, v in enumerate(embs)]
        h = torch.cat([*embs, xc.expand(m, -1, -1)], dim=-1)
        for w, b in zip(self.weights, self.biases, strict=True):
            h = F.dropout(F.silu(torch.baddbmm(b[members], h, w[members])), self.cfg.dropout, self.training)
        return logit + torch.baddbmm(self.out_b[members], h, self.out_w[members]).squeeze(-1)

    def penalty(self) -> torch.Tensor:
        pen = self.cfg.l2_wide * (self.wide.pow(2).sum() + self.wide_cont.pow(2).sum())
        if self.deep:
            deep = [*self.weights, self.out_w, *self.embeddings]
            pen = pen + self.cfg.l2_deep * sum(w.pow(2).sum() for w in deep)
        return pen

    def member_axis(self, name: str) -> int:
        return 1 if name == "wide" else 0

    def fold_members(self, k: int) -> slice:
        """The members validated on inner fold k (contiguous: members are ordered by fold)."""
        idx = torch.nonzero(self.member_fold.cpu() == k).ravel()
        return slice(int(idx[0]), int(idx[-1]) + 1)

    @torch.no_grad()
    def member_logits(self, enc: Encoded, members: slice = slice(None)) -> np.ndarray:
        """(members, rows) float64 logits of encoded rows, scored in chunks in eval mode."""
        was_training = self.training
        self.eval()
        widx, cat, cont = self.inputs(enc)
        out = [self(*(t[i:i + PREDICT_CHUNK].to(self.device) for t in (widx, cat, cont)), members=members).cpu()
               for i in range(0, len(widx), PREDICT_CHUNK)]
        self.train(was_training)
        m = len(range(self.n_members)[members])
        return torch.cat(out, dim=1).double().numpy() if out else np.zeros((m, 0))

    # -- Lightning hooks ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        widx, cat, cont, y, fold = batch
        logit = self(widx, cat, cont)
        mask = (fold.unsqueeze(0) != self.member_fold.unsqueeze(1)).to(logit.dtype)  # member m: rows outside its fold
        bce = F.binary_cross_entropy_with_logits(logit, y.unsqueeze(0).expand_as(logit), reduction="none")
        loss = (bce * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        self.log("train_loss", loss.mean(), on_epoch=True, on_step=False, batch_size=len(y))
        return loss.sum() + self.penalty()

    def validation_step(self, batch, batch_idx):
        """Every member's loss on its own inner fold (the whole validation in one step, on every rank)."""
        rows, losses = self.rows, torch.zeros(self.n_members, device=self.device)
        for k, va in enumerate(self.val_folds):
            sl = self.fold_members(k)
            total = torch.zeros(sl.stop - sl.start, device=self.device)
            for i in range(0, len(va), PREDICT_CHUNK):
                idx = va[i:i + PREDICT_CHUNK]
                widx, cat, cont, y, _ = (t.to(self.device) for t in rows[idx])
                logit = self(widx, cat, cont, members=sl)
                total += F.binary_cross_entropy_with_logits(logit, y.unsqueeze(0).expand_as(logit),
                                                            reduction="none").sum(1)
            losses[sl] = total / max(len(va), 1)
        self.val_member_loss = losses.detach().cpu()
        self.log("val_loss", losses.mean(), on_epoch=True, prog_bar=True, batch_size=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.fit_lr)


class KeepBestMembers(pl.Callback):
    """Early stopping per member, with each member's best epoch's weights kept in memory (no checkpoints).

    A member stops counting once `patience` epochs pass without improving its own validation loss; its
    weights at its best epoch are restored at the end. The fit ends when every member has stopped.
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.best: torch.Tensor | None = None
        self.wait: torch.Tensor | None = None
        self.state: dict[str, torch.Tensor] = {}

    def on_validation_end(self, trainer: pl.Trainer, module: CreditEnsembleNet) -> None:
        if trainer.sanity_checking or module.val_member_loss is None:
            return
        loss = module.val_member_loss
        if self.best is None:
            self.best = torch.full_like(loss, float("inf"))
            self.wait = torch.zeros(len(loss), dtype=torch.long)
            self.state = {n: p.detach().clone() for n, p in module.named_parameters()}
        active = self.wait < self.patience
        better = active & (loss < self.best - 1e-5)
        if better.any():
            idx = torch.nonzero(better).ravel()
            for name, p in module.named_parameters():
                ax = module.member_axis(name)
                self.state[name].index_copy_(ax, idx.to(p.device), p.detach().index_select(ax, idx.to(p.device)))
            module.best_epoch[idx.to(module.best_epoch.device)] = trainer.current_epoch
        self.best = torch.where(better, loss, self.best)
        self.wait = torch.where(better, torch.zeros_like(self.wait), self.wait + active.long())
        if bool((self.wait >= self.patience).all()):
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, module: CreditEnsembleNet) -> None:
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in self.state:
                    p.copy_(self.state[name])


class EpochProgress(pl.Callback):
    """Moves a tqdm bar one step per epoch; a fit that stops early moves it past the epochs it did not need."""

    def __init__(self, bar, max_epochs: int):
        self.bar, self.max_epochs, self.done = bar, max_epochs, 0

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.done += 1
        self.bar.update(1)

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.bar.update(max(self.max_epochs - self.done, 0))
        self.done = 0


@contextmanager
def _torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class _InnerFit:
    """One setting's stacked members on the inner folds and their cross-fitted held-out logits."""

    held: np.ndarray  # per row: mean logit of the members of the fold that held it out (NaN: none did)
    stacks: list[CreditEnsembleNet] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def auc(self, y: np.ndarray) -> float:
        mask = ~np.isnan(self.held)
        return float(roc_auc_score(y[mask], self.held[mask]))

    @staticmethod
    def average(fits: list[_InnerFit]) -> _InnerFit:
        """The blend of several settings trained on the same folds: held-out logits averaged, members pooled."""
        return _InnerFit(held=np.mean([f.held for f in fits], axis=0), stacks=[s for f in fits for s in f.stacks])


class CreditModel:
    """Calibrated PD ensemble over application features (see module doc). sklearn-like fit / predict_pd.

    `decide(applications, transactions)` adds score, grade, reasons and terms (see `offerlab.credit`).
    """

    name = "offerlab"

    def __init__(self, net: NetConfig | dict | None = None, trainer: TrainerConfig | dict | None = None, seed: int = 0):
        self.net_cfg = net if isinstance(net, NetConfig) else NetConfig(**(net or {}))
        self.trainer_cfg = trainer if isinstance(trainer, TrainerConfig) else TrainerConfig(**(trainer or {}))
        self.seed = seed
        self.stacks: list[CreditEnsembleNet] = []
        self.decision = None  # the DecisionConfig that `decide` uses (attached by train)

    @property
    def n_members(self) -> int:
        return sum(s.n_members for s in self.stacks)

    # -- training -------------------------------------------------------------------------------
    def _inner_splits(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        k = self.net_cfg.inner_folds(len(y))
        if k == 1:
            tr, va = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=self.seed)
            return [(tr, va)]
        return list(StratifiedKFold(k, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y))

    def n_fits(self) -> int:
        """Stacked fits `fit` runs (one per candidate setting): what a progress bar counts epochs of."""
        return len(self.net_cfg.candidates())

    def _fit_members(self, cfg: NetConfig, enc: Encoded, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                     callbacks: list | None = None) -> _InnerFit:
        """All members of one setting (inner folds x seeds) as one stacked fit, and their held-out logits."""
        t0 = time.perf_counter()
        fold = np.full(len(y), -1, dtype=np.int64)
        for k, (_, va) in enumerate(splits):
            fold[va] = k
        member_fold = np.repeat(np.arange(len(splits)), cfg.seeds_per_fold).tolist()
        seed = self.seed * 1000
        pl.seed_everything(seed, workers=True, verbose=False)
        keep = None
        n_feat = len(self.encoder.categorical) + len(self.encoder.numeric)
        if cfg.feature_fraction < 1:
            rng = np.random.default_rng(seed)
            keep = np.zeros((len(member_fold), n_feat), dtype=bool)
            for m in range(len(member_fold)):
                keep[m, rng.permutation(n_feat)[: max(1, round(cfg.feature_fraction * n_feat))]] = True
        prior = float(np.log(y.mean() / (1 - y.mean())))
        net = CreditEnsembleNet(list(enc.cat_sizes), list(enc.bin_sizes), enc.num.shape[1], enc.ple.shape[1],
                                cfg.model_dump(exclude={"select_from", "blend"}), member_fold, prior, seed, keep,
                                self.encoder.feature_index()["ple"])
        # torch-owned copies (not views of numpy arrays): ddp_spawn moves them to shared memory
        widx, cat, cont = (t.clone() for t in net.inputs(enc))
        net.rows = _Rows(widx, cat, cont, torch.tensor(y, dtype=torch.float32), torch.tensor(fold))
        net.val_folds = [torch.tensor(va) for _, va in splits]
        batch, net.fit_lr = cfg.step_size(len(splits[0][0]))
        train_dl = DataLoader(net.rows, sampler=_Batches(len(y), batch, seed), batch_size=None)
        val_dl = DataLoader([0], batch_size=None)  # one step: validation_step scores every fold itself
        trainer = pl.Trainer(**{**self.trainer_cfg.model_dump(), "enable_progress_bar": False}, logger=False,
                             enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                             callbacks=[KeepBestMembers(cfg.patience), *(callbacks or [])])
        with _torch_threads(cfg.threads):
            trainer.fit(net, train_dl, val_dl)
        epochs = trainer.current_epoch
        net.rows, net.val_folds, net._trainer = None, [], None  # keep the fitted stack picklable and light
        net = net.cpu().eval()
        held = np.full(len(y), np.nan)
        for k, (_, va) in enumerate(splits):
            held[va] = net.member_logits(enc.subset(va), net.fold_members(k)).mean(axis=0)
        report = {"members": net.n_members, "rows": len(y), "batch_size": batch, "lr": round(net.fit_lr, 6),
                  "epochs": int(epochs), "best_epoch": net.best_epoch.tolist(),
                  "seconds": round(time.perf_counter() - t0, 2)}
        return _InnerFit(held=held, stacks=[net], report=report)

    def fit(self, X: pd.DataFrame, y: np.ndarray, callbacks: list | None = None) -> CreditModel:
        """Fit encoder, ensemble members (inner folds) and the calibration map.

        Cross-fit (default): members train on all training rows, each set on all but one inner fold, and the
        map is fitted on the pooled held-out logits, then carried over to the average of all members
        (`EnsembleRescaled`). Holdout: members train outside a stratified calibration
        split, and the map is fitted on that split as scored by the averaged ensemble. With `select_from`,
        each candidate setting trains its own members on the same inner folds; the candidate (or, with
        `blend`, the average of all of them) whose held-out logits rank best (AUC) is kept (`self.selection`
        lists them all). No row outside the training rows plays a part in the choice. `self.fit_report` holds
        each candidate's rows, batch size, learning rate, epochs and seconds.
        """
        t0 = time.perf_counter()
        y = np.asarray(y, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise ValueError("training labels hold one class only; need defaults and non-defaults")
        candidates = self.net_cfg.candidates()
        self.encoder = FeatureEncoder(n_bins=self.net_cfg.n_bins, ple=any(c.ple for c in candidates)).fit(X)
        enc = self.encoder.transform(X)
        t_enc = time.perf_counter() - t0
        crossfit = self.net_cfg.calibration_rows == "crossfit"
        fit_idx, cal_idx = np.arange(len(y)), np.arange(0)
        if not crossfit:
            fit_idx, cal_idx = train_test_split(fit_idx, test_size=self.net_cfg.calibration_fraction,
                                                stratify=y, random_state=self.seed + 7919)
        enc_fit, y_fit = enc.subset(fit_idx), y[fit_idx]
        splits = self._inner_splits(y_fit)
        overridden = _overridden(self.net_cfg)
        options = [(cfg.model_dump(include=overridden), self._fit_members(cfg, enc_fit, y_fit, splits, callbacks))
                   for cfg in candidates]
        if self.net_cfg.blend and len(options) > 1:
            options.append(({"blend": True}, _InnerFit.average([fitted for _, fitted in options])))
        self.selection = [{"inner_auc": fitted.auc(y_fit), **settings} for settings, fitted in options]
        best = int(np.argmax([s["inner_auc"] for s in self.selection]))
        self.chosen = candidates[best] if best < len(candidates) else self.net_cfg
        fitted = options[best][1]
        self.stacks = fitted.stacks
        t_cal = time.perf_counter()
        logits = [(s.member_logits(enc), s.member_fold.numpy()) for s in self.stacks]  # every training row, once
        raw = sum(lg.sum(axis=0) for lg, _ in logits) / self.n_members
        if crossfit:  # fit_idx is every row: `enc` is `enc_fit`
            self.calibrator = self._crossfit_calibrator(fitted.held, y, logits)
            self.calibration_rows = int((~np.isnan(fitted.held)).sum())
        else:
            self.calibrator = make_calibrator(self.net_cfg.calibration).fit(raw[cal_idx], y[cal_idx])
            self.calibration_rows = len(cal_idx)
        t_cal = time.perf_counter() - t_cal
        self.feature_columns = list(X.columns)
        # for PSI later; the score's PSI is taken on the PD (the same bins: the points scale is monotone in it)
        t_prof = time.perf_counter()
        self.profile = PopulationProfile().fit(X, self.calibrator.transform(raw))
        self.fit_report = {"rows": len(y), "inner_folds": len(splits), "encode_seconds": round(t_enc, 2),
                           "candidates": [f.report for _, f in options if f.report],
                           "calibration_seconds": round(t_cal, 2),
                           "profile_seconds": round(time.perf_counter() - t_prof, 2),
                           "seconds": round(time.perf_counter() - t0, 2)}
        return self

    def _crossfit_calibrator(self, held: np.ndarray, y: np.ndarray, logits: list[tuple[np.ndarray, np.ndarray]]):
        """The map fitted on held-out logits (one inner fold's members each), carried over to all members' mean.

        `logits`: per stack, its (members, rows) logits on every training row and each member's inner fold.
        `calibration: none` keeps the members' mean logit as it is (members early-stopped on log loss).
        """
        mask = ~np.isnan(held)
        inner = make_calibrator(self.net_cfg.calibration).fit(held[mask], y[mask])
        if self.net_cfg.calibration == "none":
            return inner
        folds = np.unique(np.concatenate([f for _, f in logits]))
        fold_means = np.stack([np.concatenate([lg[f == k] for lg, f in logits]).mean(axis=0) for k in folds])
        stretch, center = ensemble_stretch(fold_means)  # units: each inner fold's members' mean logit
        return EnsembleRescaled(inner, stretch, center)

    def monitor(self, applications: pd.DataFrame, transactions: pd.DataFrame | None = None) -> pd.DataFrame:
        """PSI of new applications against the training population, per feature and for the score.

        Status per row: stable (< 0.10), moderate (0.10-0.25) or significant (>= 0.25) shift.
        """
        X = self.features(applications, transactions)
        return self.profile.psi(X, self.predict_pd(X))

    # -- prediction -----------------------------------------------------------------------------
    def _ensemble_logit(self, enc: Encoded) -> np.ndarray:
        """Mean of all members' logits on encoded rows (before calibration)."""
        if not self.stacks:
            raise RuntimeError("the model is not fitted; call fit first")
        return sum(s.member_logits(enc).sum(axis=0) for s in self.stacks) / self.n_members

    def encoded_logit(self, enc: Encoded) -> np.ndarray:
        """Calibrated log-odds of default of encoded rows (`FeatureEncoder.transform` or the serving fast path)."""
        return self.calibrator.transform_logit(self._ensemble_logit(enc))

    def raw_logit(self, X: pd.DataFrame) -> np.ndarray:
        """Mean of the members' logits (before calibration)."""
        if not self.stacks:
            raise RuntimeError("the model is not fitted; call fit first")
        return self._ensemble_logit(self.encoder.transform(X))

    def predict_logit(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated log-odds of default."""
        return self.calibrator.transform_logit(self.raw_logit(X))

    def predict_pd(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of default per row of application features."""
        return self.calibrator.transform(self.raw_logit(X))

    def occlusion_logits(self, X: pd.DataFrame, groups: dict[str, list[str]]) -> tuple[np.ndarray, dict]:
        """Calibrated logit of each row and, per feature group, with that group set to the typical applicant's.

        Done on the encoded arrays (encoding is column by column, so replacing a feature's encoded columns by
        the reference row's is the same as encoding the occluded frame): one encoding for every group.
        """
        if not self.stacks:
            raise RuntimeError("the model is not fitted; call fit first")
        enc_cols = self.encoder.categorical + self.encoder.numeric
        enc = self.encoder.transform(X)
        ref = self.encoder.transform(self.encoder.reference_row(enc_cols))
        n_cat, ple_feature = len(self.encoder.categorical), self.encoder.feature_index()["ple"]
        position = {c: j for j, c in enumerate(enc_cols)}
        occluded = {}
        for name, cols in groups.items():
            feats = [position[c] for c in cols]
            e = Encoded(enc.cat.copy(), enc.num.copy(), enc.bins.copy(), enc.ple.copy(), enc.cat_sizes, enc.bin_sizes)
            cats = [j for j in feats if j < n_cat]
            nums = [j - n_cat for j in feats if j >= n_cat]
            e.cat[:, cats] = ref.cat[0, cats]
            e.num[:, nums], e.bins[:, nums] = ref.num[0, nums], ref.bins[0, nums]
            ple = np.isin(ple_feature, feats)
            e.ple[:, ple] = ref.ple[0, ple]
            occluded[name] = self.encoded_logit(e)
        return self.encoded_logit(enc), occluded

    # -- applications in, offers out --------------------------------------------------------------
    @property
    def behaviour_features(self) -> dict[str, list[str]]:
        """The return / payment-mix (`ret_*`, built from transactions and returns) and repayment (`rep_*`) feature
        columns this model uses: what a caller must supply the tables for."""
        from offerlab.credit.data import REPAYMENT_PREFIX, RETURN_PREFIX

        cols = getattr(self, "feature_columns", [])
        return {"returns": [c for c in cols if c.startswith(RETURN_PREFIX)],
                "repayments": [c for c in cols if c.startswith(REPAYMENT_PREFIX)]}

    def features(self, applications: pd.DataFrame, transactions: pd.DataFrame | None = None, *,
                 returns: pd.DataFrame | None = None, repayments: pd.DataFrame | None = None) -> pd.DataFrame:
        """Feature rows for raw applications; behaviour features need `transactions` (or `beh_*` columns), return
        features `returns` (and payment_method on the transactions), repayment features `repayments`."""
        from offerlab.credit.data import BEHAVIOUR_PREFIX, RETURN_RATES, application_features

        needs_behaviour = any(c.startswith(BEHAVIOUR_PREFIX) for c in self.feature_columns)
        has_behaviour = any(c.startswith(BEHAVIOUR_PREFIX) for c in applications.columns)
        if needs_behaviour and not has_behaviour and transactions is None:
            raise ValueError(
                "this model uses purchase-history features: pass the transactions table (or beh_* columns)"
            )
        used = self.behaviour_features
        given = set(applications.columns)
        if used["repayments"] and not set(used["repayments"]) <= given and repayments is None:
            raise ValueError("this model uses repayment features (rep_*): pass the repayments table")
        if any(c.removeprefix("ret_") in RETURN_RATES for c in used["returns"]) and not set(
                used["returns"]) <= given and returns is None:
            raise ValueError("this model uses return features (ret_*): pass the returns table")
        share = BEHAVIOUR_PREFIX + "cat_share_"
        categories = [c.removeprefix(share) for c in self.feature_columns if c.startswith(share)]
        methods = [c.removeprefix("ret_pay_share_") for c in used["returns"] if c.startswith("ret_pay_share_")]
        tx = transactions if needs_behaviour and not has_behaviour else None
        X = application_features(applications, tx, categories=categories or None,
                                 returns=returns if used["returns"] and tx is not None else None,
                                 repayments=repayments if used["repayments"] else None, methods=methods or None)
        if tx is not None and not used["returns"]:
            X = X.drop(columns=[c for c in X.columns if c.startswith("ret_")])
        self.encoder.check_columns(X)
        return X[self.feature_columns]

    def decide(self, applications: pd.DataFrame, transactions: pd.DataFrame | None = None, config=None,
               features: pd.DataFrame | None = None, *, returns: pd.DataFrame | None = None,
               repayments: pd.DataFrame | None = None) -> pd.DataFrame:
        """PD, score, grade, reasons (<= 4) and credit terms per application (see `offerlab.credit`).

        `features` skips feature building when the caller already has them (same rows and order).
        """
        from offerlab.credit.decision import DecisionConfig, decide

        config = config or self.decision or DecisionConfig()
        X = features if features is not None else self.features(applications, transactions, returns=returns,
                                                                 repayments=repayments)
        return decide(self, applications, X, config)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Pickle the fitted model (encoder, member stacks on CPU, calibrator, decision config)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump(self, f)
        return path

    @staticmethod
    def load(path: str | Path) -> CreditModel:
        with open(path, "rb") as f:
            try:
                model = pickle.load(f)
            except AttributeError as e:  # a class this version no longer has (members before the stacked net)
                raise ValueError(f"{path} holds a credit model from an earlier version ({e}); train it again") from None
        if not isinstance(model, CreditModel) or not hasattr(model, "stacks"):
            raise ValueError(f"{path} does not hold a CreditModel of this version")
        return model
