"""A tiny Lightning regression used to test the tuning machinery on its own (the families have their own tests)."""

import os
import signal

import lightning.pytorch as pl
import mlflow
import torch

from offerlab import tracking

TOY_CONFIG = {"model": {"hidden": 8, "lr": 0.01}, "trainer": {"max_epochs": 4}}
TOY_SPACE = {
    "direction": "minimize",
    "metric": "val_loss",
    "sampler": {"name": "tpe", "seed": 3, "n_startup_trials": 2},
    "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    "params": {"model.hidden": {"type": "int", "low": 2, "high": 16}, "model.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}},
}


class Toy(pl.LightningModule):
    def __init__(self, hidden: int, lr: float):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
        self.lr = lr

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def training_step(self, batch, _):
        return self._loss(batch)

    def validation_step(self, batch, _):
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def toy_objective(cfg: dict, callbacks: list) -> float:
    if os.environ.get("TOY_KILL_AT_RUN") and len(os.listdir(os.environ["TOY_MARK_DIR"])) >= int(os.environ["TOY_KILL_AT_RUN"]):
        os.kill(os.getpid(), signal.SIGKILL)  # a worker dying mid-trial
    if os.environ.get("TOY_MARK_DIR"):
        open(os.path.join(os.environ["TOY_MARK_DIR"], str(len(os.listdir(os.environ["TOY_MARK_DIR"])))), "w").close()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=g)
    y = torch.sin(x[:, 0]) + x[:, 1] ** 2
    ds = torch.utils.data.TensorDataset(x, y)
    dl = torch.utils.data.DataLoader(ds, batch_size=64)
    model = Toy(cfg["model"]["hidden"], cfg["model"]["lr"])
    trainer = pl.Trainer(max_epochs=cfg["trainer"]["max_epochs"], callbacks=callbacks, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with tracking.start_run("timing", "toy-trial", nested=True):
        trainer.fit(model, dl, dl)
        val = float(trainer.callback_metrics["val_loss"])
        mlflow.log_metric("val_loss", val)
    return val
