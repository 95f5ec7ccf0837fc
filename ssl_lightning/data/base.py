"""What every image data module shares: a seeded train/val split, the choice between holding the
images in memory and decoding them in DataLoader workers, batch loaders, and the facts about the
images that a model needs (channels, size, normalisation, classes)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler

from ssl_lightning.data.in_memory import InMemoryImages, keep_batch
from ssl_lightning.data.label_budget import sample_per_class
from ssl_lightning.data.source import UNLABELLED, ImageSource, TensorSource
from ssl_lightning.data.subset import LabelledSubset
from ssl_lightning.errors import ConfigError

GB = 1e9


class ImageData(LightningDataModule, ABC):
    """What every data module of ours tells a model and downstream code: the images' channels,
    size and normalisation, the classes (``num_classes`` None: no labels), and the datasets
    ``train_set``, ``val_set``, ``test_set`` (each with ``.labels``) that ``eval_dataloader`` reads."""

    num_channels: int
    image_size: int
    num_classes: int | None  # None: the data has no labels
    classes: Sequence[str] | None = None  # class names, where the dataset has them
    mean: tuple[float, ...]  # per-channel mean and std of the train split, in [0, 1] units
    std: tuple[float, ...]
    train_set: Dataset | None = None
    val_set: Dataset | None = None
    test_set: Dataset | None = None

    def image_paths(self, split: Literal["train", "val", "test"]) -> list[str] | None:
        """The files of a split's images, in the dataset's order, once set up; None where its
        images do not come from files (an archive, shards)."""
        return None

    @property
    def labelled(self) -> bool:
        return self.num_classes is not None

    @property
    def labelled_set(self) -> Dataset | None:
        """The labelled training images that label budgets are drawn from (``train_set`` unless
        the module pretrains on other images than it has labels for)."""
        return self.train_set

    def class_names(self, labels: Tensor) -> list[str]:
        """The name of each label's class (its number where the dataset has no ``classes``)."""
        names = self.classes
        return [names[i] if names else str(i) for i in labels.tolist()]

    @abstractmethod
    def eval_dataloader(self, dataset: Dataset) -> DataLoader:
        """Sequential batches of any of this module's datasets, none dropped: for feature extraction."""

    def take(self, dataset: Dataset, count: int) -> tuple[Tensor, Tensor]:
        """The first ``count`` images (uint8 (n, C, H, W)) and labels (n,) of one of this module's datasets."""
        first = LabelledSubset(dataset, torch.arange(min(count, len(dataset))))  # any dataset, item by item
        images, labels = zip(*self.eval_dataloader(first))
        return torch.cat(images), torch.cat(labels)


class ImageDataModule(ImageData):
    """Batches of ``(uint8 images (B, C, H, W), int64 labels (B,))``; labels are ``UNLABELLED``
    (-1) where the data has none (``num_classes`` None). The loaders do no augmentation: methods
    make their views on the device (see ``ssl_lightning.augment``).

    Validation is a seeded random part of the train split; the test split is only loaded for
    ``setup("test")``/``setup("predict")``. Images are held in memory as uint8, or decoded in
    DataLoader workers batch by batch (``in_memory``); either way every image is decoded the same
    way, with no randomness.

    A subclass sets the facts of ``ImageData`` and implements ``source`` (images decodable one at a
    time, e.g. files) or, for a dataset read whole from one archive, ``load_split``.
    """

    can_stream: ClassVar[bool] = True  # False where the dataset is one archive read whole

    def __init__(
        self,
        batch_size: int = 256,
        val_size: int = 5000,
        train_size: int | None = None,
        labels_per_class: int | None = None,
        label_seed: int = 0,
        drop_last: bool = True,
        in_memory: bool | Literal["auto"] = "auto",
        memory_budget_gb: float = 4.0,
        num_workers: int = 0,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
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
            in_memory: True: decode every image once at setup and keep it as uint8; False: decode
                each batch in DataLoader workers (data larger than memory); "auto": in memory when
                the decoded images fit in ``memory_budget_gb``, streamed otherwise.
            memory_budget_gb: how much memory the decoded images may take in memory (GB, 1e9 bytes).
            num_workers: DataLoader worker processes; 0 is fastest for in-memory data, streamed
                data wants several (each decodes whole batches).
            persistent_workers: keep the workers alive between epochs (with ``num_workers`` > 0).
            prefetch_factor: batches each worker decodes ahead (with ``num_workers`` > 0).
            seed: seed of the train/val split and of the train subset.
        """
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if in_memory not in (True, False, "auto"):
            raise ConfigError(f"in_memory must be true, false or auto, got {in_memory!r}")
        if in_memory is False and not self.can_stream:
            raise ConfigError(f"{type(self).__name__} reads its dataset whole from one archive and always holds it in memory; "
                              "in_memory=false is for image folders, file lists, STL-10 and shards")
        if memory_budget_gb <= 0:
            raise ConfigError(f"memory_budget_gb must be positive, got {memory_budget_gb}")
        if num_workers < 0 or prefetch_factor < 1:
            raise ConfigError(f"num_workers must be >= 0 and prefetch_factor >= 1, got {num_workers} and {prefetch_factor}")
        # Not mean/std: the model saves the ones it uses (linked from this module's facts), and a
        # subclass's given mean (None for "the default") would clash with them when Lightning merges
        # the two modules' hyperparameters.
        self.save_hyperparameters(ignore=["mean", "std"])
        self.batch_size = batch_size
        self.val_size = val_size
        self.train_size = train_size
        self.labels_per_class = labels_per_class
        self.label_seed = label_seed
        self.drop_last = drop_last
        self.in_memory = in_memory
        self.memory_budget_gb = memory_budget_gb
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.seed = seed
        self.holds_in_memory: bool | None = None  # decided at the first setup
        self.paths: dict[str, list[str]] = {}  # image_paths' answers, filled by setup

    def source(self, train: bool) -> ImageSource:
        """The images of the train or the test split (default: from ``load_split``)."""
        return TensorSource(*self.load_split(train))

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of the train or the test split; a
        subclass implements this or ``source``."""
        source = self.source(train)
        return source.load_all(), source.labels

    def split_indices(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Positions of the train and the validation images in the train split, whose labels are
        ``labels``: a seeded ``val_size`` hold-out, then ``train_size`` and ``labels_per_class``."""
        n = len(labels)
        if not 0 < self.val_size < n:
            raise ConfigError(f"val_size must be between 1 and {n - 1} (the train split's size), got {self.val_size}; "
                              "lower val_size (configs made for Fashion-MNIST hold out 5000)")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]
        if self.train_size is not None:
            if not 0 < self.train_size <= len(train_idx):
                raise ConfigError(f"train_size must be between 1 and {len(train_idx)} (train split minus val_size), got {self.train_size}")
            train_idx = train_idx[: self.train_size]
        if self.labels_per_class is not None:
            if (labels == UNLABELLED).any():
                raise ConfigError(f"labels_per_class needs labelled data, but {type(self).__name__} has no labels; "
                                  "leave data.labels_per_class unset or give a labelled data module")
            train_idx = train_idx[sample_per_class(labels[train_idx], self.labels_per_class, self.label_seed)]
        return train_idx, val_idx

    def decide_in_memory(self, num_images: int) -> bool:
        """Whether ``num_images`` decoded images are held in memory (``in_memory``; for "auto",
        whether they fit in ``memory_budget_gb``). Logs the decision and the estimate."""
        image_bytes = self.num_channels * self.image_size**2
        budget = self.memory_budget_gb * GB
        if self.holds_in_memory is None:
            size = num_images * image_bytes
            if self.in_memory == "auto":
                self.holds_in_memory = size <= budget or not self.can_stream
            else:
                self.holds_in_memory = bool(self.in_memory)
            how = "held in memory" if self.holds_in_memory else f"streamed (decoded in {self.num_workers} DataLoader worker(s))"
            rank_zero_info(f"{type(self).__name__}: {num_images:,} images of {self.num_channels}x{self.image_size}x{self.image_size} "
                           f"take {size / GB:.3g} GB decoded (budget {self.memory_budget_gb:g} GB, in_memory={self.in_memory}): {how}")
        return self.holds_in_memory

    def make_dataset(self, source: ImageSource, indices: Tensor) -> Dataset:
        """The images of ``source`` at ``indices``: decoded now and held (``InMemoryImages``) or
        streamed, as ``decide_in_memory`` chose: a ``LabelledSubset`` of the source, whose images
        are decoded when a batch asks for them, in the DataLoader's worker processes (deterministic
        decoding, a fixed resize and centre crop: the random views are made later, on the device)."""
        if self.decide_in_memory(len(source)):
            images = source.load_all(description=f"decoding {type(self).__name__}")
            labels = source.labels  # read after load_all, which may skip images
            if not torch.equal(indices, torch.arange(len(source))):  # an index copies: only where it selects
                images, labels = images[indices], labels[indices]
            return InMemoryImages(images, labels)
        return LabelledSubset(source, indices)

    def check_memory_budget(self) -> None:
        """Fails early where ``memory_budget_gb`` cannot hold one batch, whichever way images are held."""
        batch_bytes = self.batch_size * self.num_channels * self.image_size**2
        if batch_bytes > self.memory_budget_gb * GB:
            raise ConfigError(f"memory_budget_gb={self.memory_budget_gb:g} cannot hold one batch of {self.batch_size} images "
                              f"({batch_bytes / GB:.3g} GB); raise data.memory_budget_gb or lower data.batch_size")

    def setup(self, stage: str) -> None:
        self.check_memory_budget()
        if stage in ("fit", "validate") and self.train_set is None:
            source = self.source(train=True)
            if self.decide_in_memory(len(source)):  # one decoding pass for both parts, before the split:
                images = source.load_all(description=f"decoding {type(self).__name__}")  # it may skip images
                source = TensorSource(images, source.labels, source.paths)
            train_idx, val_idx = self.split_indices(source.labels)
            self.train_set = self.make_dataset(source, train_idx)
            self.val_set = self.make_dataset(source, val_idx)
            if source.paths is not None:
                self.paths.update((split, [str(source.paths[i]) for i in idx]) for split, idx in (("train", train_idx), ("val", val_idx)))
        if stage in ("test", "predict") and self.test_set is None:
            source = self.source(train=False)
            self.test_set = self.make_dataset(source, torch.arange(len(source)))
            if source.paths is not None:  # read after make_dataset, whose decoding may skip images
                self.paths["test"] = [str(path) for path in source.paths]

    def image_paths(self, split: Literal["train", "val", "test"]) -> list[str] | None:
        return self.paths.get(split)

    def _loader(self, dataset: Dataset | None, train: bool) -> StatefulDataLoader:
        assert dataset is not None, "call setup() first"
        if train and self.drop_last and len(dataset) < self.batch_size:
            raise ConfigError(f"the train set has {len(dataset)} images, fewer than batch_size={self.batch_size}; lower batch_size")
        workers = self.num_workers > 0
        # torchdata's loader and sampler save their position and shuffle order in Lightning's
        # checkpoints (with workers too), so a run resumed mid-epoch sees exactly the batches the
        # interrupted run had left. Shuffling and worker seeds use their own generators, not the
        # global RNG, whose state then depends only on the training steps (what ExactResume saves).
        return StatefulDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed)) if train else None,
            drop_last=train and self.drop_last,
            num_workers=self.num_workers,
            # In memory a batch is one tensor index (InMemoryImages.__getitems__); streamed images
            # are decoded one by one and stacked by the default collate.
            collate_fn=keep_batch if isinstance(dataset, InMemoryImages) else None,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers and self.persistent_workers,
            prefetch_factor=self.prefetch_factor if workers else None,
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

    def eval_dataloader(self, dataset: Dataset) -> StatefulDataLoader:
        return self._loader(dataset, train=False)

    def take(self, dataset: Dataset, count: int) -> tuple[Tensor, Tensor]:
        if isinstance(dataset, InMemoryImages):  # already one tensor: a slice
            return dataset.images[:count], dataset.labels[:count]
        return super().take(dataset, count)
