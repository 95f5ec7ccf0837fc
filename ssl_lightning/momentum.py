"""Momentum (EMA) targets, shared by MoCo's key encoder and BYOL's target network."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(online: nn.Module) -> nn.Module:
    """A copy of ``online`` that gradients never reach: it only moves by ``update_momentum``."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """target ← m · target + (1 − m) · online, parameter by parameter (MoCo Eq. 2, BYOL Eq. 1).

    Buffers (BatchNorm statistics) are not averaged: the target keeps its own, as in MoCo and BYOL.
    """
    for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
        p_target.lerp_(p_online.detach(), 1 - m)


def cosine_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """BYOL's schedule (arXiv:2006.07733, Sec. 3.2): τ = end − (end − start)·(cos(π k/K) + 1)/2,
    from ``start`` at step 0 to ``end`` at step K. With start == end it is constant (MoCo)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2
