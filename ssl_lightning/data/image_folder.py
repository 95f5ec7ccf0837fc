"""Any folder of images in torchvision's ``ImageFolder`` layout (``root/<class>/<image>``), decoded
once, resized and kept in memory as uint8."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize
from tqdm import tqdm

from ssl_lightning.data.base import InMemoryDataModule
from ssl_lightning.errors import ConfigError, DataNotFoundError

# Per-channel statistics used when none are given: ImageNet's for colour, mid-grey for grayscale.
DEFAULT_STATS = {3: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), 1: ((0.5,), (0.25,))}


class ImageFolderDataModule(InMemoryDataModule):
    """Images from ``data_dir/<class>/*.png|jpg|...`` (and optionally a test folder of the same
    classes). Each image is decoded, converted to ``num_channels``, resized so its shorter side is
    ``image_size`` and centre-cropped to a square, once, at setup; the data must fit in memory.

    The class folders give the labels, which pretraining never uses (they serve online evaluation,
    the probe and the supervised baseline). Validation is a seeded part of ``data_dir``.
    """

    def __init__(
        self,
        data_dir: str,
        test_dir: str | None = None,
        image_size: int = 32,
        num_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        """
        Args:
            data_dir: the train folder, one sub-folder per class.
            test_dir: a test folder with the same class sub-folders (None: no test split).
            image_size: side of the square images the model sees.
            num_channels: 3 (RGB) or 1 (grayscale); images are converted to it.
            mean, std: per-channel normalisation the encoder applies (None: ImageNet's for RGB,
                0.5/0.25 for grayscale).
            **kwargs: batch size, split sizes and loader settings (see ``InMemoryDataModule``).
        """
        super().__init__(**kwargs)
        if num_channels not in DEFAULT_STATS:
            raise ConfigError(f"num_channels must be 1 or 3, got {num_channels}")
        if image_size < 8:
            raise ConfigError(f"image_size must be at least 8 pixels, got {image_size}")
        self.data_dir = Path(data_dir).expanduser()
        self.test_dir = Path(test_dir).expanduser() if test_dir else None
        self.num_channels = num_channels
        self.image_size = image_size
        default_mean, default_std = DEFAULT_STATS[num_channels]
        self.mean = tuple(mean) if mean is not None else default_mean
        self.std = tuple(std) if std is not None else default_std
        mean, std = self.mean, self.std  # saved as used: Lightning checks them against the model's
        self.save_hyperparameters()
        self.classes, self.class_to_idx = list_classes(self.data_dir)  # fails now, before any training
        self.num_classes = len(self.classes)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        folder = self.data_dir if train else self.test_dir
        if folder is None:
            raise ConfigError("this ImageFolderDataModule has no test split: set data.test_dir to a folder of the same classes")
        files = list_images(folder, self.class_to_idx)
        mode = "RGB" if self.num_channels == 3 else "L"
        images = torch.empty(len(files), self.num_channels, self.image_size, self.image_size, dtype=torch.uint8)
        for i, (path, _) in enumerate(tqdm(files, desc=f"decoding {folder}", unit="img", disable=len(files) < 1000)):
            images[i] = self._decode(Path(path), mode)
        return images, torch.tensor([label for _, label in files], dtype=torch.long)

    def _decode(self, path: Path, mode: str) -> Tensor:
        try:
            with Image.open(path) as file:
                image = pil_to_tensor(file.convert(mode))  # (C, H, W) uint8
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise DataNotFoundError(f"cannot read image {path} ({type(err).__name__}); remove or replace the file") from err
        image = resize(image, [self.image_size], antialias=True)  # shorter side = image_size
        return center_crop(image, [self.image_size, self.image_size])


def list_classes(folder: Path) -> tuple[list[str], dict[str, int]]:
    if not folder.is_dir():
        raise DataNotFoundError(f"image folder not found: {folder}; set data.data_dir to a folder with one sub-folder per class")
    try:
        return find_classes(str(folder))
    except FileNotFoundError as err:
        raise DataNotFoundError(f"{folder} has no class sub-folders; put the images in {folder}/<class name>/") from err


def list_images(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    if not folder.is_dir():
        raise DataNotFoundError(f"image folder not found: {folder}")
    try:
        return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:  # no image at all, or a class folder without images
        raise DataNotFoundError(f"{folder}: {err}; image files end in {', '.join(IMG_EXTENSIONS)}") from err
