"""torchvision's small classification datasets (CIFAR-10/100, MNIST, KMNIST, Fashion-MNIST),
downloaded by torchvision on first use and kept in memory as uint8."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from ssl_lightning.data.base import ImageDataModule
from ssl_lightning.errors import DataNotFoundError


class DatasetFacts(NamedTuple):
    """What the data module needs to know of a torchvision dataset before reading it."""

    num_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]  # of the train split, in [0, 1] units (the values commonly published)
    std: tuple[float, ...]


DATASETS: dict[str, DatasetFacts] = {
    "CIFAR10": DatasetFacts(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR100": DatasetFacts(3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "MNIST": DatasetFacts(1, 28, 10, (0.1307,), (0.3081,)),
    "KMNIST": DatasetFacts(1, 28, 10, (0.1918,), (0.3483,)),
    "FashionMNIST": DatasetFacts(1, 28, 10, (0.2860,), (0.3530,)),
}
DatasetName = Literal["CIFAR10", "CIFAR100", "MNIST", "KMNIST", "FashionMNIST"]


class TorchvisionDataModule(ImageDataModule):
    """One of ``DATASETS`` through ``torchvision.datasets``: its train split (minus a seeded
    validation hold-out) and its test split. Offline, a dataset that is not in ``root`` yet fails
    with one line that says where to put it."""

    can_stream = False  # read whole from one archive: always held in memory

    def __init__(self, name: DatasetName = "CIFAR10", root: str = "~/.cache/ssl-lightning/datasets", **kwargs) -> None:
        """
        Args:
            name: the torchvision dataset class.
            root: torchvision's folder for it (downloaded there when missing).
            **kwargs: batch size, split sizes and loader settings (see ``ImageDataModule``).
        """
        super().__init__(**kwargs)
        self.name = name
        self.root = Path(root).expanduser()
        self.num_channels, self.image_size, self.num_classes, self.mean, self.std = DATASETS[name]

    def prepare_data(self) -> None:
        self._dataset(train=True)
        self._dataset(train=False)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        dataset = self._dataset(train)
        self.classes = list(dataset.classes)
        images = torch.as_tensor(dataset.data)
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
        return images.contiguous(), torch.as_tensor(dataset.targets).long()

    def _dataset(self, train: bool):  # noqa: ANN202 (a torchvision dataset)
        import torchvision.datasets

        try:
            return getattr(torchvision.datasets, self.name)(str(self.root), train=train, download=True)
        except Exception as err:  # torchvision raises URLError, RuntimeError or OSError offline
            reason = " ".join(str(err).split())[:200]  # torchvision's messages span several lines
            raise DataNotFoundError(
                f"{self.name} is not in {self.root} and could not be downloaded ({type(err).__name__}: {reason}); "
                f"connect to the internet once, or copy torchvision's {self.name} files into {self.root}"
            ) from err
