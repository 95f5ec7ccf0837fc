"""scikit-learn's bundled handwritten digits (UCI optdigits): 1,797 8x8 grayscale images of 10
classes, offline. A small transfer target: models see them at their own 8x8, and an encoder
trained at another size resizes them itself."""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_lightning.data.base import ImageDataModule
from ssl_lightning.errors import ConfigError


class DigitsDataModule(ImageDataModule):
    """The digits as uint8 (N, 1, 8, 8) images. The dataset has no test split of its own: a seeded,
    stratified ``test_size`` share is set aside once (the same for every seed of the train/val
    split), and validation is held out of the rest (``val_size``)."""

    can_stream = False  # read whole from one archive: always held in memory

    num_channels = 1
    image_size = 8
    num_classes = 10
    mean = (0.3058,)  # of the 1,437 train images, in [0, 1] units
    std = (0.3763,)

    def __init__(self, test_size: int = 360, val_size: int = 180, batch_size: int = 64, drop_last: bool = False, **kwargs) -> None:
        """
        Args:
            test_size: images set aside for testing (20% by default).
            val_size: images held out of the train split for validation.
            batch_size: images per batch.
            drop_last: drop the incomplete last train batch.
            **kwargs: the other arguments of ``ImageDataModule``.
        """
        super().__init__(val_size=val_size, batch_size=batch_size, drop_last=drop_last, **kwargs)
        if not 0 < test_size < 1796:
            raise ConfigError(f"test_size must be between 1 and 1795 (of 1,797 images), got {test_size}")
        if val_size >= 1797 - test_size:  # validation is held out of what the test split leaves
            raise ConfigError(f"val_size must be below {1797 - test_size} (1,797 images minus test_size={test_size}), got {val_size}; "
                              "lower val_size")
        self.test_size = test_size

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are counts 0..16 of the original 32x32 bitmaps' 4x4 blocks.
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # (1797, 1, 8, 8)
        labels = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
        # Every k-th image of the label-sorted shuffle: a stratified test set.
        by_class = order[torch.argsort(labels[order], stable=True)]
        step = len(labels) / self.test_size
        test = torch.zeros(len(labels), dtype=torch.bool)
        test[by_class[(torch.arange(self.test_size) * step).long()]] = True
        keep = test if not train else ~test
        return images[keep], labels[keep]
