"""Encoder features saved to one file: ``ssl-lightning predict`` (``FeatureWriter``) and
``ssl-lightning embed`` (``save_features``) write the same layout, read back with ``load_features``.

The file is a ``torch.save`` dict: ``features`` float32 (N, F), ``labels`` int64 (N,) (-1 where
the data has no labels), ``index`` int64 (N,) (each image's position in the split), ``split``
and ``source`` (what encoded them), and where the images come from files (an image folder or a
file list), ``paths``: each image's file, in the same order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor

from ssl_lightning.data.base import ImageData
from ssl_lightning.errors import ConfigError

DEFAULT_DIR = Path("predictions")  # in the working directory


def refuse_existing(path: Path) -> Path:
    if path.exists():
        raise ConfigError(f"{path} already exists; choose another output file (it is never overwritten)")
    return path


def unused_path(path: Path) -> Path:
    """``path``, or where it exists the first free ``<stem>-1<suffix>``, ``<stem>-2<suffix>`` ..."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def save_features(path: Path, features: Tensor, labels: Tensor, split: str, source: str, paths: list[str] | None = None) -> Path:
    """Writes (N, F) ``features`` and (N,) ``labels`` of a split's images, in order, to a new file
    ``path``, with the images' files where there are (``ImageData.image_paths``)."""
    if paths is not None and len(paths) != len(features):
        raise ValueError(f"{len(paths)} paths for {len(features)} images")
    refuse_existing(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"features": features.float().cpu(), "labels": labels.long().cpu(), "index": torch.arange(len(features)),
                "split": split, "source": source, **({"paths": paths} if paths is not None else {})}, path)
    return path


def load_features(path: str | Path) -> dict[str, Any]:
    """What ``save_features`` wrote: {"features", "labels", "index", "split", "source"}, and
    "paths" where the images come from files."""
    return torch.load(path, map_location="cpu", weights_only=True)


class FeatureWriter(BasePredictionWriter):
    """``ssl-lightning predict``: the encoder features (``EncoderMethod.predict_step``) of the data
    module's predict split (its test images), with their labels, saved to one file.

    Args:
        path: the file to write; refused if it exists. None: ``predictions/<method>-test.pt`` in the
            working directory, numbered (``-1``, ``-2`` ...) where that exists.
    """

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.path = None if path is None else Path(path)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        if trainer.world_size > 1:
            raise ConfigError("predict writes one file from one process; run it with --trainer.devices=1")
        if self.path is not None:
            refuse_existing(self.path)  # before any image is encoded

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions: Any, batch_indices: Any) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions  # one dataloader
        path = self.path or unused_path(DEFAULT_DIR / f"{type(pl_module).__name__.lower()}-test.pt")
        features = torch.cat([batch["features"] for batch in batches])
        labels = torch.cat([batch["labels"] for batch in batches])
        data = trainer.datamodule
        paths = data.image_paths("test") if isinstance(data, ImageData) else None
        save_features(path, features, labels, "test", str(trainer.ckpt_path or "the model's initial weights"), paths)
        print(f"ssl-lightning: wrote features {tuple(features.shape)} and labels of the test split to {path}")
