"""How tables and output folders name what they show: an encoder's source and a data module's images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ssl_lightning.data.image_folder import ImageFolderDataModule
from ssl_lightning.data.shards import ShardedDataModule

# Folder names that say which split a folder holds, not what it holds: root/train is named after root.
SPLIT_FOLDERS = ("train", "training", "val", "valid", "validation", "test", "unlabeled", "unlabelled", "images")


def source_name(source: str) -> str:
    """How tables and folders name a source: a checkpoint file by its method (lower case), a
    shipped or torchvision weights name as it is."""
    return checkpoint_name(Path(source)).lower() if Path(source).is_file() else str(source)


def checkpoint_name(path: Path) -> str:
    """A shipped checkpoint's name, else the method's name stored in the checkpoint, else the run
    folder's (checkpoints/<name>/version_N/...)."""
    if not path.is_file():
        return str(path)  # a shipped name (load_encoder has checked it)
    method = torch.load(path, map_location="cpu", weights_only=True).get("method")
    if method:
        return method
    parts = path.resolve().parts
    return parts[-4] if len(parts) >= 4 and parts[-2] == "checkpoints" else path.stem


def data_name(data: Any) -> str:
    """How folders name a data module's images, in lower case: an image folder by its folder
    (``bees/train`` -> ``bees``) or a file list by its file, sharded data by its folder, a
    torchvision dataset by its name (``cifar10``), any other module by its class
    (``DigitsDataModule`` -> ``digits``)."""
    name = getattr(data, "name", None) or type(data).__name__.removesuffix("DataModule")
    if isinstance(data, ShardedDataModule):
        name = data.input_dir.rstrip("/").rsplit("/", 1)[-1] or name
    elif isinstance(data, ImageFolderDataModule):
        file_list = data.hparams.get("file_list")
        if file_list:
            name = Path(file_list).stem
        elif data.data_dir is not None:
            folder = data.data_dir.resolve()
            name = (folder.parent if folder.name.lower() in SPLIT_FOLDERS else folder).name or name
    return re.sub(r"[^\w.-]+", "-", str(name)).lower()
