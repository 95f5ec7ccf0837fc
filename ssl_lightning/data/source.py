"""Where a split's images come from: an ``ImageSource`` decodes one image at a time and knows
every label without decoding, so the same source serves data held in memory and data streamed
through DataLoader workers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

UNLABELLED = -1  # the label of an image that has none; pretraining never reads labels


class ImageSource(ABC):
    """The N images of one split. ``decode(i)`` gives image i as (C, S, S) uint8 at the split's
    fixed size, with no randomness (views are made on the device); ``labels`` is (N,) int64."""

    labels: Tensor
    num_channels: int
    image_size: int
    paths: Sequence[Path] | None = None  # each image's file, where the images come from files

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """(image ``index`` decoded, its label): a source is a dataset, decoded item by item."""
        return self.decode(index), self.labels[index]

    @abstractmethod
    def decode(self, index: int) -> Tensor:
        """Image ``index`` as (C, S, S) uint8."""

    def name(self, index: int) -> str:
        """What an error message calls image ``index`` (a path where there is one)."""
        return f"image #{index}"

    @property
    def nbytes(self) -> int:
        """Bytes of all images decoded: N * C * S * S."""
        return len(self) * self.num_channels * self.image_size**2

    def load_all(self, description: str = "decoding") -> Tensor:
        """Every image, (N, C, S, S) uint8, decoded one by one (with a progress bar past 1,000)."""
        images = torch.empty(len(self), self.num_channels, self.image_size, self.image_size, dtype=torch.uint8)
        for i in tqdm(range(len(self)), desc=description, unit="img", disable=len(self) < 1000):
            images[i] = self.decode(i)
        return images


class TensorSource(ImageSource):
    """Images already decoded: uint8 (N, C, S, S) and labels (N,), and the files they were decoded
    from, where there are files."""

    def __init__(self, images: Tensor, labels: Tensor, paths: Sequence[Path] | None = None) -> None:
        if images.dim() != 4 or images.shape[-1] != images.shape[-2] or len(images) != len(labels):
            raise ValueError(f"expected square images (N, C, S, S) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.paths = paths
        self.num_channels, self.image_size = images.shape[1], images.shape[-1]

    def decode(self, index: int) -> Tensor:
        return self.images[index]

    def load_all(self, description: str = "decoding") -> Tensor:
        return self.images
