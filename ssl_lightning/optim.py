"""Optimizer and learning-rate schedule built from a method's hyperparameters."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pytorch_lightning import LightningModule
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ssl_lightning.errors import ConfigError

OptimizerName = Literal["adamw", "sgd", "lars"]


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay (and LARS adaptation); biases and norm weights (all 1-d
    parameters) without either, as in the LARS set-ups of SimCLR, BYOL and Barlow Twins."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "lars_adapt": True},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lars_adapt": False},
    ]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., arXiv:1708.03888), the
    optimizer of SimCLR, BYOL and Barlow Twins. Hand-written because torch has none.

    For a parameter w of a group with ``lars_adapt``, the step direction g = ∇w + λw is scaled by
    the trust ratio t = η‖w‖/‖g‖ (1 where either norm is 0); then v ← μv + g and w ← w − lr·v.
    With ``clip``, t becomes min(t/lr, 1), so that a layer's rate lr·t never exceeds lr (LARC's
    clipping, as in solo-learn's LARS with ``clip_lr``).
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001,
                 clip: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "clip": clip,
                                  "lars_adapt": True})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=group["weight_decay"])
                if group["lars_adapt"]:
                    w_norm, g_norm = p.norm(), g.norm()
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    if group.get("clip", False):  # absent from optimizer states saved before the option existed
                        trust = (trust / group["lr"]).clamp(max=1.0)
                    g = g.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                velocity = state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(velocity, alpha=-group["lr"])
        return loss


def build_optimizer(
    params: nn.Module | list[dict], name: OptimizerName, lr: float, weight_decay: float, momentum: float,
    lars_eta: float = 0.001, lars_clip: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer over a module's ``param_groups`` or over given groups (a group's own "lr" wins);
    ``lars_eta`` and ``lars_clip`` are LARS's η and ``clip``."""
    groups = param_groups(params, weight_decay) if isinstance(params, nn.Module) else params
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=lars_eta, clip=lars_clip)
    raise ConfigError(f"unknown optimizer {name!r}; choose 'adamw', 'sgd' or 'lars'")


def optimizer_with_schedule(
    module: LightningModule, params: nn.Module | list[dict], name: OptimizerName, lr: float, weight_decay: float,
    momentum: float, warmup_epochs: float, final_lr_ratio: float = 0.0, lars_eta: float = 0.001, lars_clip: bool = False,
) -> dict:
    """``configure_optimizers``' answer: the optimizer and a per-step warm-up + cosine schedule whose
    length is the run's (``trainer.estimated_stepping_batches``), ending at ``final_lr_ratio`` x lr."""
    trainer = module.trainer
    total_steps = trainer.estimated_stepping_batches
    if not math.isfinite(total_steps):
        raise ConfigError("the learning-rate schedule needs a finite length: set trainer.max_epochs or trainer.max_steps")
    if not math.isfinite(trainer.num_training_batches):  # max_steps runs don't load the data first
        trainer.fit_loop.setup_data()
    steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
    optimizer = build_optimizer(params, name, lr=lr, weight_decay=weight_decay, momentum=momentum, lars_eta=lars_eta, lars_clip=lars_clip)
    scheduler = warmup_cosine(optimizer, round(warmup_epochs * steps_per_epoch), int(total_steps), final_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up from lr/warmup_steps to lr, then cosine decay to ``final_lr_ratio`` x lr at
    ``total_steps`` (0: to zero, as SimCLR; the UvA tutorial's ``eta_min=lr/50`` is 0.02).

    A LambdaLR with one formula: torch's SequentialLR chaining needs two schedulers and warns.
    """
    if not 0.0 <= final_lr_ratio <= 1.0:
        raise ConfigError(f"final_lr_ratio is the last learning rate as a share of the peak, in [0, 1]; got {final_lr_ratio}")
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # 1 -> 0
        return final_lr_ratio + (1 - final_lr_ratio) * cosine

    return LambdaLR(optimizer, factor)
