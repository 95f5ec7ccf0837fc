"""The TensorBoard logger of ssl-lightning's runs: every scalar in a group (``train/``, ``val/``, ``lr/`` ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import TensorBoardLogger

# Lightning adds the epoch counter to every logged step under this name.
LIGHTNING_EPOCH, EPOCH_TAG = "epoch", "train/epoch"


class GroupedTensorBoardLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger``, with the epoch counter Lightning logs as ``epoch`` written
    as ``train/epoch``: next to the training curves, not a group of its own in TensorBoard."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        super().log_metrics({EPOCH_TAG if name == LIGHTNING_EPOCH else name: value for name, value in metrics.items()}, step)
