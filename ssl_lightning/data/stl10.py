"""STL-10 (Coates et al., AISTATS 2011): 96x96 colour images of 10 classes, 5,000 labelled train
images, 8,000 test images and 100,000 unlabelled images, read from the dataset's binary files.

Hand-written reader: torchvision's ``STL10`` reads a whole split into memory (2.8 GB for the
unlabelled one) and checks every file's md5 on each construction; a memory map reads only the
images asked for, in whichever process asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import resize
from tqdm import tqdm

from ssl_lightning.data.base import ImageDataModule
from ssl_lightning.data.source import UNLABELLED, ImageSource
from ssl_lightning.errors import ConfigError, DataNotFoundError

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE  # one image: 3 channels of 96x96 bytes, each channel stored column by column
FOLDER = "stl10_binary"  # what the dataset's archive extracts to
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")  # class_names.txt
SPLIT_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"), "unlabeled": ("unlabeled_X.bin",)}
PretrainSplit = Literal["unlabeled", "train+unlabeled", "train"]


def image_count(path: Path) -> int:
    """How many images an ``*_X.bin`` file holds (its size must be a whole number of images)."""
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DataNotFoundError(f"{path} is not an STL-10 image file: {size:,} bytes is not a whole number of "
                                f"{IMAGE_BYTES:,}-byte 3x96x96 images; download {URL} again")
    return size // IMAGE_BYTES


def read_labels(path: Path, count: int) -> Tensor:
    """The labels of a ``*_y.bin`` file (one byte per image, classes 1..10) as int64 0..9, shape (count,)."""
    labels = np.fromfile(path, dtype=np.uint8)
    if len(labels) != count or labels.min(initial=1) < 1 or labels.max(initial=1) > len(CLASSES):
        raise DataNotFoundError(f"{path} does not fit its images: expected {count:,} labels in 1..{len(CLASSES)}, found "
                                f"{len(labels):,} bytes with values {labels.min(initial=0)}..{labels.max(initial=0)}; "
                                f"download {URL} again")
    return torch.from_numpy(labels.astype(np.int64) - 1)


class STL10Images(ImageSource):
    """The images of one or more ``*_X.bin`` files, one after the other, read through memory maps.

    Each image is stored as 3 planes of 96x96 bytes, each plane column by column; ``decode`` gives
    it as (3, S, S) uint8 in the usual row order, resized (antialiased) where ``image_size`` < 96.
    The maps open lazily in each process, so DataLoader workers read the files themselves.
    """

    num_channels = 3

    def __init__(self, files: Sequence[Path], labels: Tensor, image_size: int = SIDE) -> None:
        """
        Args:
            files: ``*_X.bin`` files; their images are numbered in this order.
            labels: (N,) int64 for all their images (``UNLABELLED`` where there is none).
            image_size: side of the decoded images (96 keeps them as stored).
        """
        self.files = list(files)
        counts = [image_count(f) for f in self.files]
        if sum(counts) != len(labels):
            raise ValueError(f"{sum(counts)} images in {self.files} but {len(labels)} labels")
        self.starts = np.cumsum([0, *counts])  # (F + 1,) first image number of each file, then N
        self.labels = labels
        self.image_size = image_size
        self._maps: list[np.memmap] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}  # workers open their own maps; a pickled map would copy the data

    def _stored(self, start: int, stop: int) -> np.ndarray:
        """Images ``start`` to ``stop`` (within one file) as stored: (n, 3, 96, 96) with the last two
        axes (column, row)."""
        if self._maps is None:
            self._maps = [np.memmap(f, dtype=np.uint8, mode="r", shape=(n, 3, SIDE, SIDE))
                          for f, n in zip(self.files, np.diff(self.starts).tolist())]
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        return self._maps[k][start - self.starts[k] : stop - self.starts[k]]

    def _to_images(self, stored: np.ndarray) -> Tensor:
        images = torch.from_numpy(np.ascontiguousarray(stored.transpose(0, 1, 3, 2)))  # (n, 3, H, W)
        return images if self.image_size == SIDE else resize(images, [self.image_size, self.image_size], antialias=True)

    def decode(self, index: int) -> Tensor:
        return self._to_images(self._stored(index, index + 1))[0]  # (3, S, S)

    def name(self, index: int) -> str:
        k = int(np.searchsorted(self.starts, index, side="right")) - 1
        return f"image #{index - self.starts[k]} of {self.files[k]}"

    def load_all(self, description: str = "decoding") -> Tensor:
        """Every image, (N, 3, S, S) uint8, read a chunk of 1,000 at a time (a whole file read at once
        would need a second copy of it)."""
        images = torch.empty(len(self), 3, self.image_size, self.image_size, dtype=torch.uint8)
        chunks = [(s, min(s + 1000, stop)) for start, stop in zip(self.starts[:-1], self.starts[1:]) for s in range(start, stop, 1000)]
        for start, stop in tqdm(chunks, desc=description, unit="chunk", disable=len(chunks) < 10):
            images[start:stop] = self._to_images(self._stored(start, stop))
        return images


class STL10DataModule(ImageDataModule):
    """STL-10 from ``root/stl10_binary/`` (the folder the dataset's archive extracts to; torchvision
    downloads it there when online).

    - ``train_set`` (what ``fit`` trains on), by ``pretrain_split``: the 100,000 unlabelled images
      (labels -1), those plus the labelled train images, or the labelled train images alone (the
      supervised baseline);
    - ``val_set``: a seeded ``val_size`` hold-out of the 5,000 labelled train images;
    - ``labelled_set``: the rest of them, which label budgets are drawn from (``train_size`` and
      ``labels_per_class`` apply here; the unlabelled images are always used whole);
    - ``test_set``: the 8,000 test images.
    """

    num_channels = 3
    num_classes = 10
    classes = CLASSES
    # The UvA tutorial's Normalize((0.5,), (0.5,)): [0, 1] to [-1, 1], not the data's own statistics.
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(
        self,
        root: str = "~/.cache/ssl-lightning/datasets",
        pretrain_split: PretrainSplit = "unlabeled",
        image_size: int = SIDE,
        val_size: int = 500,
        **kwargs,
    ) -> None:
        """
        Args:
            root: the folder that holds ``stl10_binary/`` (or that folder itself).
            pretrain_split: "unlabeled", "train+unlabeled" or "train" (see the class docstring).
            image_size: side of the images the model sees: 96 as stored, or smaller (resized).
            val_size: labelled train images held out for validation (10% of them by default).
            **kwargs: batch size, ``in_memory`` and loader settings (see ``ImageDataModule``).
        """
        super().__init__(val_size=val_size, **kwargs)
        if pretrain_split not in ("unlabeled", "train+unlabeled", "train"):
            raise ConfigError(f"pretrain_split must be 'unlabeled', 'train+unlabeled' or 'train', got {pretrain_split!r}")
        if not 8 <= image_size <= SIDE:
            raise ConfigError(f"STL-10 images are {SIDE}x{SIDE}; image_size can shrink them (8 to {SIDE}), got {image_size}")
        self.root = Path(root).expanduser()
        self.pretrain_split = pretrain_split
        self.image_size = image_size
        self._labelled_set: Dataset | None = None

    @property
    def folder(self) -> Path:
        """Where the binary files are: ``root/stl10_binary``, or ``root`` if it holds them itself."""
        return self.root if (self.root / SPLIT_FILES["train"][0]).is_file() else self.root / FOLDER

    def missing_files(self) -> list[str]:
        """The files this module's splits need that ``folder`` lacks (the unlabelled images only
        where ``pretrain_split`` uses them)."""
        splits = ["train", "test"] + (["unlabeled"] if self.pretrain_split != "train" else [])
        return [name for split in splits for name in SPLIT_FILES[split] if not (self.folder / name).is_file()]

    def prepare_data(self) -> None:
        missing = self.missing_files()
        if not missing:
            return
        from torchvision.datasets import STL10

        try:  # torchvision downloads and extracts the whole archive (2.6 GB), then reads the train split
            STL10(str(self.root), split="train", download=True)
        except Exception as err:  # torchvision raises URLError, RuntimeError or OSError offline
            raise self._not_found(missing, f" and could not be downloaded ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from err

    def _not_found(self, missing: list[str], why: str = "") -> DataNotFoundError:
        return DataNotFoundError(
            f"STL-10 is not in {self.folder} (missing {', '.join(missing)}){why}; download {URL} and extract it "
            f"into {self.root} (it holds the {FOLDER} folder), or set data.init_args.root to the folder that holds {FOLDER}/"
        )

    def split_source(self, split: str) -> STL10Images:
        """The images and labels of "train", "test" or "unlabeled" (labels -1)."""
        files = [self.folder / name for name in SPLIT_FILES[split]]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise self._not_found(missing)
        count = image_count(files[0])
        labels = read_labels(files[1], count) if len(files) == 2 else torch.full((count,), UNLABELLED)
        return STL10Images(files[:1], labels, self.image_size)

    def source(self, train: bool) -> ImageSource:
        """The labelled train split (what validation and label budgets come from) or the test split."""
        names = self.folder / "class_names.txt"
        if names.is_file():
            self.classes = tuple(names.read_text().splitlines())
        return self.split_source("train" if train else "test")

    @property
    def labelled_set(self) -> Dataset | None:
        """The labelled train images that are not validation (what label budgets are drawn from)."""
        return self._labelled_set if self.pretrain_split != "train" else self.train_set

    def setup(self, stage: str) -> None:
        if stage not in ("fit", "validate") or self.train_set is not None or self.pretrain_split == "train":
            super().setup(stage)
            return
        labelled, unlabelled = self.split_source("train"), self.split_source("unlabeled")
        # Held in memory or streamed as all the images fit's sets decode together would take.
        self.decide_in_memory(len(labelled) + len(unlabelled))
        super().setup(stage)  # val_set and the labelled rest
        self._labelled_set = self.train_set
        if self.pretrain_split == "unlabeled":
            self.train_set = self.make_dataset(unlabelled, torch.arange(len(unlabelled)))
            return
        both = STL10Images(labelled.files + unlabelled.files, torch.cat([labelled.labels, unlabelled.labels]), self.image_size)
        train_idx, _ = self.split_indices(labelled.labels)  # the labelled images that are not validation
        self.train_set = self.make_dataset(both, torch.cat([train_idx, len(labelled) + torch.arange(len(unlabelled))]))
