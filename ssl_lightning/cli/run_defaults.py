"""What a run gets where its config is silent: the Trainer's defaults (logger, checkpoint IO,
folders), the precision for the hardware, and our progress bar unless the config brings one."""

from __future__ import annotations

import importlib
from typing import Any

import torch
from pytorch_lightning.callbacks.progress import ProgressBar as AnyProgressBar

TRAINER_DEFAULTS = {
    "accelerator": "auto",
    "plugins": [{"class_path": "ssl_lightning.checkpoint.AtomicCheckpointIO"}],
    "default_root_dir": "checkpoints",
    "logger": {
        "class_path": "ssl_lightning.logger.GroupedTensorBoardLogger",  # Lightning's, with its epoch counter as train/epoch
        # name None: filled in with the experiment's name (see experiment_name): checkpoints/<name>/version_N.
        # default_hp_metric off: no placeholder "hp_metric = -1" curve in TensorBoard.
        "init_args": {"save_dir": "checkpoints", "name": None, "default_hp_metric": False},
    },
}


def default_precision(accelerator: Any) -> str | None:
    """bf16 mixed precision where the run will use a GPU with bf16 (NVIDIA Ampere and later);
    otherwise None, Lightning's default (32-bit)."""
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else None


def wants_our_progress_bar(trainer: Any) -> bool:
    """False where the run has no progress bar, or where the config lists a progress bar of its own."""
    if trainer.get("enable_progress_bar") is False:
        return False
    for callback in trainer.get("callbacks") or []:
        path = callback.class_path if hasattr(callback, "class_path") else f"{type(callback).__module__}.{type(callback).__name__}"
        module, _, name = path.rpartition(".")
        if issubclass(getattr(importlib.import_module(module), name), AnyProgressBar):
            return False
    return True
