"""Optimizer and learning-rate schedule built from a method's hyperparameters."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ssl_lightning.errors import ConfigError

OptimizerName = Literal["adamw", "sgd"]


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; biases and norm weights (all 1-d parameters) without, as in
    SimCLR's and BYOL's LARS set-ups, which exclude them from decay and adaptation."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimizer(
    module: nn.Module, name: OptimizerName, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    groups = param_groups(module, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"unknown optimizer {name!r}; choose 'adamw' or 'sgd'")


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Linear warm-up from lr/warmup_steps to lr, then cosine decay to 0 at ``total_steps``.

    A LambdaLR with one formula: torch's SequentialLR chaining needs two schedulers and warns.
    """
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return LambdaLR(optimizer, factor)
