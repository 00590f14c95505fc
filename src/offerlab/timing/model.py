"""Neural temporal point process for purchase timing (intensity-free, Shchur et al. 2020) as a Lightning module.

A GRU reads the purchase sequence (log gaps, log amounts, category embeddings, calendar cycles); after
every purchase its state gives a log-normal mixture (plus a "never again" mass) over the time to the
next purchase and a categorical distribution over the next category. The loss is the exact censored
log-likelihood: observed gaps by their density, the open gap to the as-of date by its survival.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

from offerlab.timing.distributions import LogNormalMixture, censored_gap_nll


class TimingModel(pl.LightningModule):
    """GRU encoder -> per-step log-normal mixture over the next gap + categorical over the next category."""

    def __init__(self, n_inputs: int, n_categories: int = 0, n_static: int = 0, hidden: int = 32,
                 n_components: int = 3, category_dim: int = 8, cure: bool = True, lr: float = 3e-3,
                 weight_decay: float = 1e-5, category_weight: float = 1.0, log_gap_mean: float = 3.0,
                 log_gap_std: float = 1.0, feature_stats: dict | None = None, use_calendar: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.category_embedding = nn.Embedding(n_categories + 1, category_dim)
        self.static_to_h0 = nn.Linear(n_static, hidden) if n_static else None
        self.gru = nn.GRU(n_inputs + category_dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        k = n_components
        self.gap_head = nn.Linear(hidden, 3 * k + 1)
        self.category_head = nn.Linear(hidden, n_categories) if n_categories else None
        with torch.no_grad():  # start near the data: means spread around the typical log gap
            self.gap_head.weight.mul_(0.1)
            bias = self.gap_head.bias
            bias.zero_()
            bias[k:2 * k] = log_gap_mean + log_gap_std * torch.linspace(-1, 1, k)
            bias[2 * k:3 * k] = float(torch.log(torch.tensor(max(log_gap_std, 0.3))))
            bias[3 * k] = -2.0

    # -- encoder ---------------------------------------------------------------------------------------
    def step_features(self, inputs: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        return torch.cat([inputs, self.category_embedding(category)], -1)

    def initial_state(self, batch_size: int, static: torch.Tensor | None = None) -> torch.Tensor | None:
        if self.static_to_h0 is None or static is None:
            return None
        return torch.tanh(self.static_to_h0(static)).unsqueeze(0)

    def encode(self, inputs: torch.Tensor, category: torch.Tensor, static: torch.Tensor | None = None,
               h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, F) inputs -> per-step states (B, L, H) and the final state (1, B, H)."""
        if h0 is None:
            h0 = self.initial_state(inputs.shape[0], static)
        out, h_last = self.gru(self.step_features(inputs, category), h0)
        return self.dropout(out), h_last

    def gap_distribution(self, h: torch.Tensor) -> LogNormalMixture:
        k = self.hparams.n_components
        p = self.gap_head(h)
        logits, mu, log_sigma = p[..., :k], p[..., k:2 * k], p[..., 2 * k:3 * k].clamp(-4.0, 3.0)
        never = p[..., 3 * k] if self.hparams.cure else None
        return LogNormalMixture(logits, mu, log_sigma, never)

    def category_logits(self, h: torch.Tensor) -> torch.Tensor | None:
        return None if self.category_head is None else self.category_head(h)

    # -- loss ------------------------------------------------------------------------------------------
    def batch_nll(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Summed censored gap NLL and category NLL over the weighted steps of a padded batch."""
        h, _ = self.encode(batch["inputs"], batch["category"], batch.get("static"))
        dist = self.gap_distribution(h)
        w = batch["weight"]
        gap_nll = censored_gap_nll(dist, batch["target_gap"], batch["censored"], batch["elapsed_start"])
        out = {"gap_nll_sum": (gap_nll * w).sum(), "n_gaps": w.sum()}
        logits = self.category_logits(h)
        if logits is not None:
            tgt = batch["target_category"]
            known = (tgt > 0) & (w > 0) & ~batch["censored"]
            ce = nn.functional.cross_entropy(logits[known], tgt[known] - 1, reduction="sum") if known.any() \
                else logits.sum() * 0
            out["cat_nll_sum"] = ce
            out["n_cats"] = known.sum().to(ce.dtype)
        return out

    def _loss(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        o = self.batch_nll(batch)
        n = o["n_gaps"].clamp_min(1.0)
        gap = o["gap_nll_sum"] / n
        loss = gap
        bs = int(batch["lengths"].shape[0])
        if "cat_nll_sum" in o:
            cat = o["cat_nll_sum"] / o["n_cats"].clamp_min(1.0)
            loss = loss + self.hparams.category_weight * cat * (o["n_cats"] / n)
            self.log(f"{stage}_cat_nll", cat, batch_size=bs, on_epoch=True, on_step=False)
        self.log(f"{stage}_gap_nll", gap, batch_size=bs, on_epoch=True, on_step=False, prog_bar=stage == "val")
        self.log(f"{stage}_loss", loss, batch_size=bs, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._loss(batch, "train")

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(4, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        o = self.batch_nll(batch)
        zero = torch.zeros((), device=self.device)
        self._val_sums += torch.stack([o["gap_nll_sum"], o["n_gaps"], o.get("cat_nll_sum", zero),
                                       o.get("n_cats", zero)]).double()

    def on_validation_epoch_end(self) -> None:
        """Per-gap NLL over the whole validation window (exact sums, reduced across DDP ranks)."""
        s = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        gap = s[0] / s[1].clamp_min(1.0)
        cat = s[2] / s[3].clamp_min(1.0)
        loss = gap + self.hparams.category_weight * cat * s[3] / s[1].clamp_min(1.0)
        self.log_dict({"val_gap_nll": gap.float(), "val_cat_nll": cat.float(), "val_loss": loss.float()},
                      prog_bar=True, sync_dist=False)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
