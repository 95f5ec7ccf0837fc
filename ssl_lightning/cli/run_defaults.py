"""What a run gets where its config is silent: the Trainer's defaults (logger, checkpoint IO,
folders), the precision for the hardware, and our progress bar unless the config brings one."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks.progress import ProgressBar as AnyProgressBar
from pytorch_lightning.utilities import rank_zero_info

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
    """bf16 mixed precision where the run's hardware computes in bf16 natively: a GPU with bf16
    (NVIDIA Ampere and later) or, without one, a CPU with AVX512-BF16 or AMX (measured in
    docs/speed.md: the same seeded ``make train`` probes within 0.2 points and runs 1.3x faster).
    Otherwise None, Lightning's default (32-bit). The choice is logged."""
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    cpu_bf16 = [] if on_gpu or accelerator not in ("auto", "cpu") else cpu_bf16_instructions()
    if on_gpu:
        precision, reason = ("bf16-mixed", "this GPU computes in bf16") if torch.cuda.is_bf16_supported() else (None, "this GPU has no bf16")
    elif cpu_bf16:
        precision, reason = "bf16-mixed", f"this CPU has {' and '.join(cpu_bf16)}"
    else:
        precision, reason = None, "no bf16 hardware found"
    rank_zero_info(f"precision {precision or '32-true'} ({reason}; --trainer.precision chooses another)")
    return precision


def cpu_bf16_instructions(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU's native bf16 instruction sets, from Linux's /proc/cpuinfo flags ([] elsewhere): torch
    has no public test for them, and its bf16 autocast emulates bf16 (slowly) on CPUs without them."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return []
    return [name for flag, name in CPU_BF16_FLAGS.items() if flag in flags]


CPU_BF16_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}


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
