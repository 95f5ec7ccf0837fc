"""What every in-memory image data module shares: a seeded train/val split, batch loaders, and
the facts about the images that a model needs (channels, size, normalisation)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler

from ssl_lightning.data.in_memory import InMemoryImages, keep_batch
from ssl_lightning.data.label_budget import sample_per_class
from ssl_lightning.errors import ConfigError


class InMemoryDataModule(LightningDataModule, ABC):
    """Images kept in memory as uint8; batches carry ``(images uint8 (B, C, H, W), labels (B,))``.

    Validation is a seeded random part of the train split; the test split is only loaded for
    ``setup("test")``, i.e. final evaluation. The loaders do no augmentation: methods make their
    views on the device (see ``ssl_lightning.augment``).

    Subclasses set the class attributes below and implement ``load_split``.
    """

    num_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean and std of the train split, in [0, 1] units
    std: tuple[float, ...]

    def __init__(
        self,
        batch_size: int = 256,
        val_size: int = 5000,
        train_size: int | None = None,
        labels_per_class: int | None = None,
        label_seed: int = 0,
        drop_last: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            batch_size: images per batch.
            val_size: images held out of the train split for validation.
            train_size: use only this many of the remaining train images (None: all of them).
            labels_per_class: train on only this many images of each class, drawn stratified
                under ``label_seed`` from the train images (None: all of them).
            label_seed: seed of the ``labels_per_class`` draw.
            drop_last: drop the incomplete last train batch (contrastive losses need full ones).
            num_workers: DataLoader worker processes; 0 is fastest for in-memory data.
            seed: seed of the train/val split and of the train subset.
        """
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.val_size = val_size
        self.train_size = train_size
        self.labels_per_class = labels_per_class
        self.label_seed = label_seed
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: InMemoryImages | None = None
        self.val_set: InMemoryImages | None = None
        self.test_set: InMemoryImages | None = None

    def class_names(self, labels: Tensor) -> list[str]:
        """The name of each label's class (its number where the dataset has no ``classes``)."""
        names = getattr(self, "classes", None)
        return [names[i] if names else str(i) for i in labels.tolist()]

    @abstractmethod
    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of the train or the test split."""

    def split_indices(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Positions of the train and the validation images in the train split, whose labels are
        ``labels``: a seeded ``val_size`` hold-out, then ``train_size`` and ``labels_per_class``."""
        n = len(labels)
        if not 0 < self.val_size < n:
            raise ConfigError(f"val_size must be between 1 and {n - 1} (the train split's size), got {self.val_size}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        if self.train_size is not None:
            if not 0 < self.train_size <= len(train_idx):
                raise ConfigError(f"train_size must be between 1 and {len(train_idx)} (train split minus val_size), got {self.train_size}")
            train_idx = train_idx[: self.train_size]
        if self.labels_per_class is not None:
            train_idx = train_idx[sample_per_class(labels[train_idx], self.labels_per_class, self.label_seed)]
        return train_idx, val_idx

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self.train_set is None:
            images, labels = self.load_split(train=True)
            train_idx, val_idx = self.split_indices(labels)
            self.train_set = InMemoryImages(images[train_idx], labels[train_idx])
            self.val_set = InMemoryImages(images[val_idx], labels[val_idx])
        if stage in ("test", "predict") and self.test_set is None:
            self.test_set = InMemoryImages(*self.load_split(train=False))

    def _loader(self, dataset: InMemoryImages | None, train: bool) -> StatefulDataLoader:
        assert dataset is not None, "call setup() first"
        if train and self.drop_last and len(dataset) < self.batch_size:
            raise ConfigError(f"the train set has {len(dataset)} images, fewer than batch_size={self.batch_size}; lower batch_size")
        # torchdata's loader and sampler save their position and shuffle order in Lightning's
        # checkpoints, so a run resumed mid-epoch sees exactly the batches the interrupted run had
        # left. Shuffling and worker seeds use their own generators, not the global RNG, whose state
        # then depends only on the training steps (what ExactResume saves and restores).
        return StatefulDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed)) if train else None,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            collate_fn=keep_batch,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader(self.test_set, train=False)
