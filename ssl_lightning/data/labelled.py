"""What needs labels says so, in one line, when it gets a data module (or labels) without them."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ssl_lightning.data.source import UNLABELLED
from ssl_lightning.errors import ConfigError

LABELLED_EXAMPLE = "e.g. an ImageFolderDataModule with one sub-folder per class"
# Attributes that tell data modules of one class apart in a message (not ``hparams``: LightningCLI
# gives every data module it builds the hyperparameters of the run's ``data``).
_DESCRIBING_ATTRIBUTES = ("name", "pretrain_split", "data_dir", "file_list", "input_dir")


def is_labelled(data: Any) -> bool:
    """True where ``data`` (a data module) has labels: its ``num_classes`` is set."""
    return getattr(data, "num_classes", None) is not None


def describe(data: Any) -> str:
    """``ImageFolderDataModule(data_dir='/x')``: the class and what tells it apart."""
    values = {key: getattr(data, key, None) for key in _DESCRIBING_ATTRIBUTES}
    return f"{type(data).__name__}({', '.join(f'{key}={str(value)!r}' for key, value in values.items() if value is not None)})"


def require_labels(data: Any, needed_by: str, option: str = "--data") -> None:
    """Raises a one-line ``ConfigError`` where ``data`` has no labels; ``needed_by`` names what
    needs them and ``option`` where the user gives a labelled data module instead."""
    if not is_labelled(data):
        raise ConfigError(f"{needed_by} needs labelled data, but {describe(data)} has none; "
                          f"give a labelled data module ({option} ...), {LABELLED_EXAMPLE}")


def require_label_values(labels: Tensor, needed_by: str) -> None:
    """Raises a one-line ``ConfigError`` where any of ``labels`` (N,) is ``UNLABELLED``."""
    missing = int((labels < 0).sum())
    if missing:
        raise ConfigError(f"{needed_by} needs labelled images, but {missing} of the {len(labels)} it got have no label "
                          f"({UNLABELLED}); compute them from a labelled data module, {LABELLED_EXAMPLE}")
