"""The progress bar of training runs."""

from __future__ import annotations

from typing import Any

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar, showing the step metrics ``step_metrics`` as of the first step and
    the last logging step (every ``log_every_n_steps`` steps). Lightning reads metrics logged with
    ``prog_bar=True`` to the host at every step, and each read makes the host wait for the GPU to
    finish the step; so the methods leave their step metrics out of ``prog_bar`` and this bar reads
    them when the logger does.

    Args:
        step_metrics: names of logged step metrics to show, where the method logs them.
        refresh_rate: as Lightning's (steps between redraws).
    """

    def __init__(self, step_metrics: tuple[str, ...] = ("train/loss", "train/acc_top5"), refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.step_metrics = step_metrics
        self._latest: dict[str, float] = {}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0 or trainer.global_step == 1 or trainer.fast_dev_run:
            logged = trainer.callback_metrics
            self._latest = {name: float(logged[name]) for name in self.step_metrics if name in logged}
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | str | float]:
        return {**super().get_metrics(trainer, pl_module), **self._latest}
