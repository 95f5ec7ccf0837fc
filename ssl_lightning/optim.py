"""Optimizer and learning-rate schedule built from a method's hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ssl_lightning.errors import ConfigError

OptimizerName = Literal["adamw", "sgd", "lars"]
# LearningRateMonitor logs <LR_TAG>/<group> for every optimizer (its default: lr-<optimizer class>/<group>).
# In the train/ group: TensorBoard orders groups by name, and an lr/ group would come before train/.
LR_TAG = "train/lr"
LrScaling = Literal["none", "linear", "sqrt"]


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer and its warm-up + cosine learning-rate schedule.

    Args:
        name: "adamw", "sgd" or "lars" (the last two with ``momentum``).
        lr: peak learning rate (scaled by ``lr_scaling``).
        weight_decay: decoupled weight decay, not on biases and norm weights.
        momentum: SGD's and LARS's momentum.
        warmup_epochs: length of the linear warm-up, before the cosine decay.
        final_lr_ratio: where the cosine decay ends, as a share of ``lr`` (0: at zero).
        lars_eta: LARS's trust coefficient η (SimCLR's 0.001; ``LARS``).
        lars_clip: whether LARS clips each layer's rate at ``lr``.
        bias_norm_lr_ratio: the learning rate of biases and norm weights as a share of the
            weights' (1: the same; Barlow Twins: 0.0048 / 0.2 = 0.024).
        lr_scaling: "none" (``lr`` is the peak rate), "linear" (lr x global batch / 256) or
            "sqrt" (SimCLR's lr x sqrt(global batch)); the global batch counts every process and
            accumulated batch (``scaled_lr``).
    """

    name: OptimizerName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    final_lr_ratio: float = 0.0
    lars_eta: float = 0.001
    lars_clip: bool = False
    bias_norm_lr_ratio: float = 1.0
    lr_scaling: LrScaling = "none"

    def __post_init__(self) -> None:
        # Here, when a config is read: not at the first step, after the run's folder is made.
        bounds = {"lr": (self.lr > 0, "> 0"), "weight_decay": (self.weight_decay >= 0, ">= 0"),
                  "momentum": (0 <= self.momentum < 1, "in [0, 1)"), "warmup_epochs": (self.warmup_epochs >= 0, ">= 0"),
                  "final_lr_ratio": (0 <= self.final_lr_ratio <= 1, "in [0, 1]"), "lars_eta": (self.lars_eta > 0, "> 0"),
                  "bias_norm_lr_ratio": (self.bias_norm_lr_ratio >= 0, ">= 0")}
        for name, (ok, bound) in bounds.items():
            if not ok:
                raise ConfigError(f"optimizer.{name} must be {bound}, got {getattr(self, name)}")

    @classmethod
    def of(cls, value: OptimizerConfig | Mapping[str, Any]) -> OptimizerConfig:
        """``value`` as a config: a mapping is what ``asdict`` and checkpoints' hyperparameters hold."""
        return value if isinstance(value, cls) else cls(**value)


def param_groups(module: nn.Module, lr: float, weight_decay: float, bias_norm_lr_ratio: float = 1.0, part: str | None = None,
                 fixed_lr: bool = False) -> list[dict]:
    """Two groups: weights with decay (and LARS adaptation) at ``lr``; biases and norm weights (all
    1-d parameters) without either, as in the LARS set-ups of SimCLR, BYOL and Barlow Twins, at
    ``bias_norm_lr_ratio`` x lr (Barlow Twins: 0.0048 / 0.2 = 0.024). The names label the groups'
    curves in LearningRateMonitor (``train/lr/weights``, ``train/lr/biases_and_norms``; with
    ``part``, ``train/lr/<part>/weights``). ``fixed_lr``: the schedule leaves their rate as it is."""
    if bias_norm_lr_ratio < 0:
        raise ConfigError(f"bias_norm_lr_ratio is the biases' and norms' learning rate as a share of lr, >= 0; got {bias_norm_lr_ratio}")
    params = [p for p in module.parameters() if p.requires_grad]
    prefix = f"{part}/" if part else ""
    return [
        {"name": f"{prefix}weights", "params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": weight_decay,
         "lars_adapt": True, "fixed_lr": fixed_lr},
        {"name": f"{prefix}biases_and_norms", "params": [p for p in params if p.ndim <= 1], "lr": lr * bias_norm_lr_ratio,
         "weight_decay": 0.0, "lars_adapt": False, "fixed_lr": fixed_lr},
    ]


def scaled_lr(base_lr: float, scaling: LrScaling, global_batch_size: int) -> float:
    """The learning rate for a global batch (images per optimizer step, all processes and
    accumulated batches together), as the papers scale it: "linear" is base x batch / 256 (SimCLR,
    MoCo, BYOL, Barlow Twins: "learning rate = 0.3 x BatchSize/256"); "sqrt" is SimCLR's square-root
    rule, base x sqrt(batch) ("LearningRate = 0.075 x sqrt(BatchSize)", arXiv:2002.05709 App. B.1;
    its code's ``learning_rate_scaling=sqrt``); "none" is base."""
    if scaling == "none":
        return base_lr
    if scaling == "linear":
        return base_lr * global_batch_size / 256
    if scaling == "sqrt":
        return base_lr * math.sqrt(global_batch_size)
    raise ConfigError(f"unknown lr_scaling {scaling!r}; choose 'none', 'linear' or 'sqrt'")


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


def build_optimizer(params: nn.Module | list[dict], config: OptimizerConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer over a module's ``param_groups`` or over given groups (a group's own "lr"
    wins), at ``lr`` (default: ``config.lr``)."""
    lr = config.lr if lr is None else lr
    groups = param_groups(params, lr, config.weight_decay, config.bias_norm_lr_ratio) if isinstance(params, nn.Module) else params
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    if config.name == "lars":
        return LARS(groups, lr=lr, momentum=config.momentum, eta=config.lars_eta, clip=config.lars_clip)
    raise ConfigError(f"unknown optimizer {config.name!r}; choose 'adamw', 'sgd' or 'lars'")


def global_batch_size(trainer: Trainer) -> int | None:
    """Images per optimizer step: the data module's batch size x processes x accumulated batches
    (None where the data module does not say its batch size)."""
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    return None if batch_size is None else batch_size * trainer.world_size * trainer.accumulate_grad_batches


def optimizer_with_schedule(module: LightningModule, params: nn.Module | Callable[[float], list[dict]], config: OptimizerConfig) -> dict:
    """``configure_optimizers``' answer: the optimizer and a per-step warm-up + cosine schedule whose
    length is the run's (``trainer.estimated_stepping_batches``), ending at ``final_lr_ratio`` x lr.
    Every parameter group follows the schedule in proportion to its own peak rate, except groups
    marked ``"fixed_lr": True``, which keep theirs (SimSiam's predictor). ``params`` is a module (its
    ``param_groups``) or a maker of parameter groups from the run's learning rate.

    ``lr`` is scaled by ``lr_scaling`` for the global batch (``scaled_lr``); the rate used is
    written once to the log and to the loggers' hyperparameters (``effective_lr``)."""
    trainer = module.trainer
    batch = global_batch_size(trainer)
    lr_scaling = config.lr_scaling
    if lr_scaling != "none" and batch is None:
        raise ConfigError(f"lr_scaling={lr_scaling!r} needs the global batch size: train with a data module that has batch_size, or set lr_scaling: none")
    lr = scaled_lr(config.lr, lr_scaling, batch or 0)
    rank_zero_info(f"learning rate {lr:.6g} (lr_scaling {lr_scaling}, global batch {batch if batch is not None else 'unknown'})")
    for logger in module.loggers:
        logger.log_hyperparams({"effective_lr": lr, "global_batch_size": batch or 0})
    total_steps = trainer.estimated_stepping_batches
    if not math.isfinite(total_steps):
        raise ConfigError("the learning-rate schedule needs a finite length: set trainer.max_epochs or trainer.max_steps")
    if not math.isfinite(trainer.num_training_batches):  # max_steps runs don't load the data first
        trainer.fit_loop.setup_data()
    steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
    optimizer = build_optimizer(params if isinstance(params, nn.Module) else params(lr), config, lr)
    scheduler = warmup_cosine(optimizer, round(config.warmup_epochs * steps_per_epoch), int(total_steps), config.final_lr_ratio)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": LR_TAG}}


def linear_ramp(step: int, ramp_steps: int, start: float, end: float) -> float:
    """``start`` at step 0, rising linearly to ``end`` at ``ramp_steps`` and staying there (DINO's
    teacher temperature warm-up, per epoch); ``end`` throughout when ``ramp_steps`` is 0."""
    progress = min(1.0, step / ramp_steps) if ramp_steps else 1.0
    return start + progress * (end - start)


def clip_grad_norm_per_parameter(module: nn.Module, max_norm: float) -> None:
    """Clips each parameter's gradient to norm ``max_norm`` on its own, as DINO's code does
    (``torch.nn.utils.clip_grad_norm_`` over all parameters clips their joint norm)."""
    for p in module.parameters():
        if p.grad is not None:
            nn.utils.clip_grad_norm_(p, max_norm)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up from lr/warmup_steps to lr, then cosine decay to ``final_lr_ratio`` x lr at
    ``total_steps`` (0: to zero, as SimCLR; the UvA tutorial's ``eta_min=lr/50`` is 0.02).

    A LambdaLR with one formula: torch's SequentialLR chaining needs two schedulers and warns.
    Groups marked ``"fixed_lr": True`` keep their rate throughout.
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

    return LambdaLR(optimizer, [(lambda step: 1.0) if group.get("fixed_lr") else factor for group in optimizer.param_groups])
