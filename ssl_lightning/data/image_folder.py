"""Your own images: a folder (with class folders or without labels) or a file list, held in memory
or decoded in DataLoader workers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info

from ssl_lightning.data.base import ImageDataModule
from ssl_lightning.data.image_files import CHANNEL_MODES, FileSource, ImageFiles, LabelMode
from ssl_lightning.data.source import ImageSource
from ssl_lightning.errors import ConfigError

# Per-channel statistics used when none are given: ImageNet's for colour, mid-grey for grayscale.
DEFAULT_STATS = {3: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), 1: ((0.5,), (0.25,))}
SKIPPED_LIST = "skipped_images.txt"


class ImageFolderDataModule(ImageDataModule):
    """Images from ``data_dir`` (any depth) or a ``file_list``, and optionally a test folder or list.

    Each image is decoded, converted to ``num_channels`` (greyscale, RGBA and palette images
    included; the log counts the conversions), its shorter side resized to ``image_size`` and
    centre-cropped to a square: at setup, when held in memory, or batch by batch in DataLoader
    workers, when streamed (``in_memory``). Validation is a seeded part of the train images.

    Labels (``labels``): "folders" reads ``data_dir/<class>/<image>``; "none" pretrains without
    labels; "auto" picks "folders" when every image sits in one of at least two class folders one
    level down (or the file list has a ``label`` column), "none" otherwise, and logs the choice.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        labels: LabelMode = "auto",
        file_list: str | None = None,
        test_dir: str | None = None,
        test_file_list: str | None = None,
        image_size: int = 32,
        num_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        skip_unreadable: bool = False,
        **kwargs,
    ) -> None:
        """
        Args:
            data_dir: the folder of train images; with ``file_list``, where its relative paths start.
            labels: "auto", "folders" or "none" (see the class docstring).
            file_list: a ``.txt`` file of image paths (one a line) or a ``.csv`` file with a ``path``
                column and an optional ``label`` column, instead of reading ``data_dir``.
            test_dir: a folder of test images, read as ``data_dir`` is (None: no test split).
            test_file_list: a file list of test images, read as ``file_list`` is.
            image_size: side of the square images the model sees.
            num_channels: 3 (RGB) or 1 (grayscale); images are converted to it.
            mean: per-channel mean the encoder subtracts (None: ImageNet's for RGB, 0.5 for
                grayscale).
            std: per-channel standard deviation the encoder divides by (None: ImageNet's for
                RGB, 0.25 for grayscale).
            skip_unreadable: skip files that cannot be read, counting them and listing them in
                ``skipped_images.txt`` in the run folder (False: stop at the first, naming it).
            **kwargs: batch size, split sizes, ``in_memory`` and loader settings (see ``ImageDataModule``).
        """
        super().__init__(**kwargs)
        if num_channels not in DEFAULT_STATS:
            raise ConfigError(f"num_channels must be 1 or 3, got {num_channels}")
        if image_size < 1:
            raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
        if data_dir is None and file_list is None:
            raise ConfigError("set data.data_dir to a folder of images, or data.file_list to a list of image paths")
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.num_channels = num_channels
        self.image_size = image_size
        default_mean, default_std = DEFAULT_STATS[num_channels]
        self.mean = tuple(mean) if mean is not None else default_mean
        self.std = tuple(std) if std is not None else default_std
        self.skip_unreadable = skip_unreadable
        self.file_list = file_list
        self.files = list_files(file_list, data_dir, labels)  # fails now, before any training
        # The test images are labelled like the train images: with the same class names, or not at all.
        test_labels = labels if self.files.classes is not None else "none"
        self.test_files = list_files(test_file_list, test_dir, test_labels, self.files.classes) if test_dir or test_file_list else None
        self.classes = self.files.classes
        self.num_classes = len(self.classes) if self.classes is not None else None
        chosen = ("labels=auto chose " if labels == "auto" else f"labels={labels}: ") + self.files.how
        rank_zero_info(f"ImageFolderDataModule: {len(self.files.paths):,} train images; {chosen}")

    def source(self, train: bool) -> ImageSource:
        files = self.files if train else self.test_files
        if files is None:
            raise ConfigError("this ImageFolderDataModule has no test split: set data.test_dir (or data.test_file_list) "
                              "to test images of the same classes")
        files, unreadable, converted = files.check(self.num_channels, self.skip_unreadable)
        if converted:
            counts = ", ".join(f"{n:,} {mode}" for mode, n in converted.most_common())
            rank_zero_info(f"ImageFolderDataModule: converting to {CHANNEL_MODES[self.num_channels]}: {counts} images")
        split = "train" if train else "test"
        if unreadable:
            self._report_skipped(unreadable, split)
        report = (lambda paths: self._report_skipped(paths, split)) if self.skip_unreadable else None
        return FileSource(files, self.num_channels, self.image_size, on_unreadable=report)

    def _report_skipped(self, unreadable: list[Path], split: str) -> None:
        """Logs the count, and lists the files in the run folder (where there is a run)."""
        run_folder = getattr(self.trainer, "log_dir", None) if self.trainer is not None else None
        where = "no run folder to list them in"
        if run_folder:
            listing = Path(run_folder) / SKIPPED_LIST
            listing.parent.mkdir(parents=True, exist_ok=True)
            with open(listing, "a") as file:
                file.writelines(f"{split}\t{path}\n" for path in unreadable)
            where = f"listed in {listing}"
        rank_zero_info(f"ImageFolderDataModule: skipped {len(unreadable):,} unreadable {split} image(s) "
                       f"(skip_unreadable=true; {where}; first: {unreadable[0]})")


def list_files(file_list: str | None, folder: str | None, labels: LabelMode, classes: list[str] | None = None) -> ImageFiles:
    """The images of ``file_list`` (relative to ``folder``), or else of ``folder``."""
    if file_list:
        return ImageFiles.from_list(Path(file_list).expanduser(), Path(folder).expanduser() if folder else None, labels, classes)
    return ImageFiles.from_folder(Path(folder).expanduser(), labels, classes)
