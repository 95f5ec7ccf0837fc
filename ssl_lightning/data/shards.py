"""Datasets written as litdata shards by ``ssl-lightning prepare``, read back by litdata's
``StreamingDataset``: from a local folder or cloud storage, split across processes and nodes, with
a loader position that checkpoints save and resumed runs continue from.

A sharded dataset is a folder::

    SHARDS/metadata.json        the facts a model needs (channels, size, mean, std, classes)
    SHARDS/train/               litdata's index.json and chunk-*.bin, plus labels.npy
    SHARDS/val/                 the same for the validation hold-out
    SHARDS/test/                (when prepare was given a test folder)

litdata is imported only where shards are read, so importing ``ssl_lightning`` stays fast.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ssl_lightning.data.base import ImageData
from ssl_lightning.errors import ConfigError, DataNotFoundError

METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.npy"  # each split's labels in shard order, so they are known without reading the shards
FORMAT = "ssl-lightning shards"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShardsMetadata:
    """What ``metadata.json`` holds."""

    num_channels: int
    image_size: int
    mean: tuple[float, ...]  # per channel, measured on the train split while writing, in [0, 1] units
    std: tuple[float, ...]
    classes: tuple[str, ...] | None  # None: the images have no labels
    sizes: dict[str, int]  # images per split ("train", "val" and maybe "test")

    def to_json(self) -> str:
        """The text of ``metadata.json``, with the format's name and version."""
        return json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> ShardsMetadata:
        """Reads ``metadata.json``'s text; a file of another format or version is refused in one
        line that names ``where``."""
        try:
            fields = json.loads(text)
            if fields.pop("format") != FORMAT or fields.pop("version") != FORMAT_VERSION:
                raise ValueError("another format or version")
            classes = fields.pop("classes")
            return cls(**{**fields, "mean": tuple(fields["mean"]), "std": tuple(fields["std"]),
                          "classes": tuple(classes) if classes is not None else None})
        except (ValueError, KeyError, TypeError) as err:
            raise DataNotFoundError(f"{where} is not the metadata of an ssl-lightning sharded dataset ({err}); "
                                    "write the dataset again with ssl-lightning prepare") from err


def is_remote(input_dir: str) -> bool:
    """Whether litdata reads ``input_dir`` through a downloader (s3://, gs://, ..., or local: for a
    local folder read as if it were remote) rather than as a local folder."""
    return "://" in input_dir or input_dir.startswith("local:")


def read_file(input_dir: str, name: str) -> bytes:
    """The bytes of the file ``name`` under ``input_dir``: read directly from a local folder; from
    cloud storage, downloaded with litdata's downloader for that storage (its credentials and options)."""
    if not is_remote(input_dir):
        path = Path(input_dir) / name
        if not path.is_file():
            raise DataNotFoundError(f"no sharded dataset at {input_dir} ({name} is missing); write one with "
                                    f"ssl-lightning prepare --data_dir FOLDER --output_dir {input_dir} --image_size N")
        return path.read_bytes()
    from litdata.streaming.downloader import get_downloader

    url = f"{input_dir.rstrip('/')}/{name}"
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(name).name
        try:
            get_downloader(input_dir, tmp, []).download_file(url, str(local))
            return local.read_bytes()
        except Exception as err:  # each storage's client raises its own errors
            raise DataNotFoundError(f"cannot read {url} ({type(err).__name__}: {err}); check input_dir and the "
                                    "storage's credentials") from err


class ShardedImages(Dataset):
    """One split of a sharded dataset, read by position (for validation, testing and feature
    extraction): ``(uint8 image (C, S, S), int64 label)``, in the order the shards hold them.

    Each process (the main one, each DataLoader worker) opens the shards on its first read.
    """

    def __init__(self, input_dir: str, labels: Tensor, cache_dir: str | None = None) -> None:
        self.input_dir = input_dir
        self.labels = labels  # (N,) int64, -1 where there is none
        self.cache_dir = cache_dir
        self._reader: Any = None
        self._reader_pid: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if self._reader is None or self._reader_pid != os.getpid():  # a forked worker opens its own
            from litdata import StreamingDataset

            self._reader = StreamingDataset(self.input_dir, cache_dir=self.cache_dir)
            self._reader_pid = os.getpid()
        item = self._reader[index]
        return item["image"], self.labels[index]


def stack_items(items: list[dict[str, Any]]) -> tuple[Tensor, Tensor]:
    """A batch from shard items: uint8 images (B, C, S, S) and int64 labels (B,)."""
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items], dtype=torch.long)


class ShardedDataModule(ImageData):
    """A dataset written by ``ssl-lightning prepare``: batches of ``(uint8 images (B, C, S, S),
    int64 labels (B,))``, labels ``-1`` where the images have none.

    Training streams the train shards with litdata: shuffled (chunks, then images within them, a new
    order each epoch under ``seed``), each process of a multi-process or multi-node run reading its
    own disjoint part, and the loader's position saved in checkpoints so a resumed run continues
    where it stopped. Validation, testing and feature extraction read their split in order.

    The facts a model needs (channels, image size, mean and std of the train split, classes) come
    from the dataset's ``metadata.json``, written with the shards.
    """

    def __init__(
        self,
        input_dir: str,
        batch_size: int = 256,
        drop_last: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        """
        Args:
            input_dir: the folder ``ssl-lightning prepare`` wrote (``--output_dir``), or its copy in
                cloud storage (``s3://bucket/path``, ``gs://...``; litdata reads those).
            batch_size: images per batch (per process).
            drop_last: give each process only full train batches, all processes the same number
                (contrastive losses need full batches); the images left over change each epoch.
            num_workers: DataLoader worker processes.
            seed: seed of the train shuffle.
            cache_dir: where litdata keeps chunks downloaded from cloud storage (None: litdata's
                default); local folders are read in place.
        """
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.input_dir = input_dir if is_remote(input_dir) else str(Path(input_dir).expanduser())
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.seed = seed
        self.cache_dir = cache_dir
        self.metadata = ShardsMetadata.from_json(read_file(self.input_dir, METADATA_FILE).decode(),
                                                 f"{self.input_dir}/{METADATA_FILE}")
        self.num_channels = self.metadata.num_channels
        self.image_size = self.metadata.image_size
        self.mean, self.std = self.metadata.mean, self.metadata.std
        self.classes: Sequence[str] | None = self.metadata.classes
        self.num_classes = len(self.classes) if self.classes is not None else None
        self.train_set: ShardedImages | None = None
        self.val_set: ShardedImages | None = None
        self.test_set: ShardedImages | None = None

    def split_dir(self, split: str) -> str:
        """Where a split's shards are; a split the dataset was written without is refused."""
        if split not in self.metadata.sizes:
            raise ConfigError(f"the sharded dataset {self.input_dir} has no {split} split; write it again with "
                              f"ssl-lightning prepare{' --test_dir FOLDER' if split == 'test' else ''}")
        return f"{self.input_dir.rstrip('/')}/{split}"

    def split(self, split: str) -> ShardedImages:
        """The images of ``split`` ("train", "val" or "test"), read by position."""
        folder = self.split_dir(split)
        labels = np.load(io.BytesIO(read_file(self.input_dir, f"{split}/{LABELS_FILE}")), allow_pickle=False)
        return ShardedImages(folder, torch.from_numpy(labels).long(), self.cache_dir)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_set is None:
            self.train_set, self.val_set = self.split("train"), self.split("val")
        if stage in ("test", "predict") and self.test_set is None:
            self.test_set = self.split("test")

    def train_dataloader(self) -> DataLoader:
        from litdata import StreamingDataset

        from ssl_lightning.data.streaming_loader import ResumableStreamingLoader

        dataset = StreamingDataset(self.split_dir("train"), cache_dir=self.cache_dir, shuffle=True,
                                   drop_last=self.drop_last, seed=self.seed)
        world_size = dataset.distributed_env.world_size
        if world_size > 1 and not self.drop_last:
            raise ConfigError("drop_last=false works in one process only: with several, the last one would get the "
                              "left-over images and the processes unequal numbers of batches; keep drop_last true")
        if self.drop_last and self.metadata.sizes["train"] < self.batch_size * world_size:
            raise ConfigError(f"the train split has {self.metadata.sizes['train']} images, fewer than batch_size={self.batch_size} "
                              f"for each of {world_size} process(es); lower batch_size")
        # persistent_workers stays off (the DataLoader default): workers start each epoch from the
        # dataset as this process holds it, with the position a checkpoint restored.
        return ResumableStreamingLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=stack_items,
            pin_memory=torch.cuda.is_available(),
            # The workers' seeds come from this generator, not from the global one, whose state then
            # depends only on the training steps (what ExactResume saves and restores).
            generator=torch.Generator().manual_seed(self.seed),
        )

    def eval_dataloader(self, dataset: ShardedImages) -> DataLoader:
        """Every image of ``dataset``, in order (no shuffle, no dropped batch)."""
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self._ready(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self._ready(self.test_set))

    def predict_dataloader(self) -> DataLoader:
        return self.eval_dataloader(self._ready(self.test_set))

    @staticmethod
    def _ready(dataset: ShardedImages | None) -> ShardedImages:
        assert dataset is not None, "call setup() first"
        return dataset
