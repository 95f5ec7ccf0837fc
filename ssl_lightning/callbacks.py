"""Callbacks that make training visible in TensorBoard."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from ssl_lightning.methods.base import ViewBatch


class LogViewPairs(Callback):
    """Logs a grid of augmented view pairs (image n's two views side by side) at the first
    validation, so one can see what the network is asked to match.

    Args:
        num_pairs: how many images' view pairs to show.
    """

    def __init__(self, num_pairs: int = 16) -> None:
        self.num_pairs = num_pairs
        self._done = False

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # Only two-view methods have pairs to show (the supervised baseline validates on plain images).
        if self._done or batch_idx != 0 or not isinstance(trainer.logger, TensorBoardLogger) or not isinstance(batch, ViewBatch):
            return
        x1, x2 = batch.x1[: self.num_pairs], batch.x2[: self.num_pairs]
        pairs = torch.stack([x1, x2], dim=1).flatten(0, 1)  # (2n, C, H, W): view 1, view 2, view 1, ...
        grid = make_grid(pairs.detach().float().cpu(), nrow=8, padding=2, pad_value=1.0)
        trainer.logger.experiment.add_image("views/pairs", grid, global_step=trainer.global_step)
        self._done = True


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the latest state.

    Lightning 2.6 refreshes ``last.ckpt`` only when a top-k checkpoint is saved at the same step
    (so it goes stale once the monitored metric stops improving), and writes it at the end of
    training even under ``fast_dev_run``. Both are corrected here.
    """

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def _refresh_last(self, trainer: Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
