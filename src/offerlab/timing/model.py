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
        """Summed censored gap NLL and category NLL over the weighted steps of a padded batch.

        The heads run only on the steps that count (weight > 0): padding and, in validation, the history
        before the window cost the GRU pass but nothing after it. A batch without `elapsed_start` (no left
        truncation anywhere: training) skips that survival term, which is exactly zero then.
        """
        h, _ = self.encode(batch["inputs"], batch["category"], batch.get("static"))
        w = batch["weight"]
        used = w > 0
        h, w = h[used], w[used]
        censored = batch["censored"][used]
        e0 = batch.get("elapsed_start")
        gap_nll = censored_gap_nll(self.gap_distribution(h), batch["target_gap"][used], censored,
                                   None if e0 is None else e0[used])
        out = {"gap_nll_sum": (gap_nll * w).sum(), "n_gaps": w.sum()}
        if self.category_head is not None:
            tgt = batch["target_category"][used]
            known = (tgt > 0) & ~censored
            logits = self.category_logits(h[known])
            out["cat_nll_sum"] = nn.functional.cross_entropy(logits, tgt[known] - 1, reduction="sum") \
                if len(logits) else logits.sum() * 0
            out["n_cats"] = known.sum().to(out["cat_nll_sum"].dtype)
        return out

    def _stage_start(self) -> None:
        self._sums = torch.zeros(4, dtype=torch.float64, device=self.device)

    def _accumulate(self, o: dict[str, torch.Tensor]) -> None:
        zero = torch.zeros((), device=self.device)
        self._sums += torch.stack([o["gap_nll_sum"], o["n_gaps"], o.get("cat_nll_sum", zero),
                                   o.get("n_cats", zero)]).detach().double()

    def _stage_end(self, stage: str) -> None:
        """Per-gap NLL over the whole epoch (exact sums, reduced across DDP ranks), logged once per epoch:
        logging every step cost more than the loss head."""
        s = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        gap = s[0] / s[1].clamp_min(1.0)
        cat = s[2] / s[3].clamp_min(1.0)
        loss = gap + self.hparams.category_weight * cat * s[3] / s[1].clamp_min(1.0)
        self.log_dict({f"{stage}_gap_nll": gap.float(), f"{stage}_cat_nll": cat.float(), f"{stage}_loss": loss.float()},
                      prog_bar=stage == "val", sync_dist=False)

    def on_train_epoch_start(self) -> None:
        self._stage_start()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        o = self.batch_nll(batch)
        self._accumulate(o)
        n = o["n_gaps"].clamp_min(1.0)
        loss = o["gap_nll_sum"] / n
        if "cat_nll_sum" in o:
            loss = loss + self.hparams.category_weight * o["cat_nll_sum"] / n
        return loss

    def on_train_epoch_end(self) -> None:
        self._stage_end("train")

    def on_validation_epoch_start(self) -> None:
        self._val_saved, self._sums = getattr(self, "_sums", None), None
        self._stage_start()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._accumulate(self.batch_nll(batch))

    def on_validation_epoch_end(self) -> None:
        self._stage_end("val")
        self._sums = self._val_saved  # validation runs inside the training epoch: keep its sums

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """CPU batches are already where they go: skip Lightning's per-tensor walk over the dict."""
        if device.type == "cpu":
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self):
        """AdamW, fused (one kernel over all parameters: a third of the per-step optimizer cost on CPU)."""
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                                 fused=True)
