"""Image files as users have them: a folder of class folders, a folder of images at any depth, or
a text/CSV list of paths; each image decoded, converted to the configured channels, resized and
centre-cropped to a fixed square, with no randomness."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import Tensor
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize
from tqdm import tqdm

from ssl_lightning.data.source import UNLABELLED, ImageSource
from ssl_lightning.errors import ConfigError, DataNotFoundError

LabelMode = Literal["auto", "folders", "none"]
CHANNEL_MODES = {3: "RGB", 1: "L"}


class ImageFiles:
    """Paths (N,) with labels (N,) (``UNLABELLED`` without) and class names (None without)."""

    def __init__(self, paths: list[Path], labels: list[int] | None, classes: list[str] | None, how: str) -> None:
        self.paths = paths
        self.labels = torch.tensor(labels if labels is not None else [UNLABELLED] * len(paths), dtype=torch.long)
        self.classes = classes
        self.how = how  # a phrase for the log: where the labels came from

    @classmethod
    def from_folder(cls, folder: Path, labels: LabelMode, classes: Sequence[str] | None = None) -> ImageFiles:
        """Every image under ``folder`` (sorted). ``labels``: "folders" reads ``folder/<class>/<image>``,
        "none" takes images at any depth without labels, "auto" is "folders" when every image sits
        in one of at least two class folders one level down, "none" otherwise. ``classes``: the
        class names a test folder must use (those of the train folder)."""
        if not folder.is_dir():
            raise DataNotFoundError(f"image folder not found: {folder}; set data.data_dir to a folder of images")
        paths = sorted(Path(root) / name for root, _, names in os.walk(folder, followlinks=True) for name in names
                       if name.lower().endswith(IMG_EXTENSIONS))
        if not paths:
            raise DataNotFoundError(f"no images in {folder} (looked at every depth for files ending in {', '.join(IMG_EXTENSIONS)})")
        depths = {len(p.relative_to(folder).parts) for p in paths}
        folder_names = sorted({p.relative_to(folder).parts[0] for p in paths if len(p.relative_to(folder).parts) == 2})
        in_class_folders = depths == {2}
        if labels == "auto":
            labels = "folders" if in_class_folders and (len(folder_names) >= 2 or classes is not None) else "none"
        if labels == "none":
            return cls(paths, None, None, f"no labels (images at any depth of {folder})")
        if not in_class_folders:
            raise ConfigError(f"labels='folders' needs every image in {folder}/<class>/, but some are at another depth; "
                              "move them into class folders, or set data.labels=none to pretrain without labels")
        classes = list(classes) if classes is not None else folder_names
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(folder_names) - set(index))
        if unknown:
            raise ConfigError(f"{folder} has class folders {unknown} that the train folder lacks; use the same class folders")
        return cls(paths, [index[p.parent.name] for p in paths], classes, f"{len(classes)} classes from the folders of {folder}")

    @classmethod
    def from_list(cls, list_file: Path, root: Path | None, labels: LabelMode, classes: Sequence[str] | None = None) -> ImageFiles:
        """The images a ``.txt`` (one path a line) or ``.csv`` (a ``path`` column and an optional
        ``label`` column of class names) file lists; relative paths start at ``root`` (default: the
        list's folder). Labels come from the ``label`` column unless ``labels`` is "none"."""
        if not list_file.is_file():
            raise DataNotFoundError(f"file list not found: {list_file}; set data.file_list to a .txt or .csv file of image paths")
        if labels == "folders":
            raise ConfigError("labels='folders' reads class folders; a file list takes its labels from its 'label' column "
                              "(set data.labels=auto, or none to ignore them)")
        root = root or list_file.parent
        names: list[str] | None = None
        if list_file.suffix.lower() == ".csv":
            with open(list_file, newline="") as file:
                rows = list(csv.DictReader(file))
            if not rows or "path" not in rows[0]:
                raise ConfigError(f"{list_file} needs a header row with a 'path' column (and optionally 'label')")
            entries = [row["path"] for row in rows]
            if "label" in rows[0] and labels == "auto":
                names = [row["label"] for row in rows]
        else:
            entries = [line.strip() for line in list_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not entries:
            raise DataNotFoundError(f"{list_file} lists no images")
        paths = [p if p.is_absolute() else root / p for p in map(Path, entries)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataNotFoundError(f"{len(missing)} of the {len(paths)} files in {list_file} do not exist (first: {missing[0]}); "
                                    f"paths are relative to {root}: fix the list or set data.data_dir to their folder")
        if names is None:
            return cls(paths, None, None, f"no labels ({list_file})")
        classes = list(classes) if classes is not None else sorted(set(names))
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise ConfigError(f"{list_file} has labels {unknown[:5]} that the train list lacks; use the same class names")
        return cls(paths, [index[n] for n in names], classes, f"{len(classes)} classes from the label column of {list_file}")

    def check(self, num_channels: int, skip_unreadable: bool) -> tuple[ImageFiles, list[Path], Counter]:
        """Reads every file's header (no pixels): the readable files, the unreadable ones (an error
        unless ``skip_unreadable``) and a count of the colour modes that will be converted."""
        target = CHANNEL_MODES[num_channels]
        keep, unreadable, converted = [], [], Counter()
        for i, path in enumerate(tqdm(self.paths, desc="checking images", unit="img", disable=len(self.paths) < 1000)):
            try:
                with Image.open(path) as image:
                    mode = image.mode
            except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
                if not skip_unreadable:
                    raise unreadable_error(path, err) from err
                unreadable.append(path)
                continue
            keep.append(i)
            if mode != target:
                converted[mode] += 1
        files = ImageFiles([self.paths[i] for i in keep], self.labels[keep].tolist(), self.classes, self.how)
        if not files.paths:
            raise DataNotFoundError(f"none of the {len(self.paths)} images can be read (first: {self.paths[0]})")
        return files, unreadable, converted


def unreadable_error(path: Path, err: BaseException, skipping: bool = False) -> DataNotFoundError:
    if skipping:  # only a file decoded after setup gets here: streamed, or written by prepare
        return DataNotFoundError(f"cannot read image {path} ({type(err).__name__}): its header reads but its data does not, "
                                 "and skip_unreadable skips such files only when images are held in memory; remove or replace it")
    return DataNotFoundError(f"cannot read image {path} ({type(err).__name__}); remove or replace the file, "
                             "or skip such files with skip_unreadable=true (data.skip_unreadable in a fit, --skip_unreadable in prepare)")


class FileSource(ImageSource):
    """``ImageFiles`` decoded one at a time: converted to ``num_channels``, the shorter side
    resized to ``image_size`` (antialiased), centre-cropped to a square."""

    def __init__(self, files: ImageFiles, num_channels: int, image_size: int,
                 on_unreadable: Callable[[list[Path]], None] | None = None) -> None:
        """``on_unreadable``: given, ``load_all`` skips files that fail to decode and reports them
        to it; None: such a file is an error."""
        self.paths = files.paths
        self.labels = files.labels
        self.num_channels = num_channels
        self.image_size = image_size
        self.on_unreadable = on_unreadable

    def load_all(self, description: str = "decoding") -> Tensor:
        """Every image; with ``on_unreadable``, those that decode (``paths`` and ``labels`` then
        lose the others)."""
        if self.on_unreadable is None:
            return super().load_all(description)
        images, keep = [], []
        for i in tqdm(range(len(self)), desc=description, unit="img", disable=len(self) < 1000):
            try:
                images.append(self.decode(i))
                keep.append(i)
            except DataNotFoundError:
                pass
        if len(keep) < len(self):
            self.on_unreadable([path for i, path in enumerate(self.paths) if i not in set(keep)])
            self.paths, self.labels = [self.paths[i] for i in keep], self.labels[keep]
        if not images:
            raise DataNotFoundError(f"none of the {len(self)} images can be decoded")
        return torch.stack(images)

    def name(self, index: int) -> str:
        return str(self.paths[index])

    def decode(self, index: int) -> Tensor:
        path, mode = self.paths[index], CHANNEL_MODES[self.num_channels]
        # Pillow rather than torchvision.io: 1.3x slower on full-size JPEGs here, but torchvision's
        # image decoding is deprecated since 0.29 (scripts/benchmark.py data measures both).
        try:
            with Image.open(path) as file:
                file.draft(mode, (self.image_size, self.image_size))  # JPEG: decode at a reduced scale, >= the size
                image = pil_to_tensor(file.convert(mode))  # (C, H, W) uint8
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise unreadable_error(path, err, skipping=self.on_unreadable is not None) from err
        image = resize(image, [self.image_size], antialias=True)  # shorter side = image_size
        return center_crop(image, [self.image_size, self.image_size])  # (C, S, S) uint8
