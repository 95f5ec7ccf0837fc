"""DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294): a student matches the centred, sharpened outputs of a momentum teacher across
multi-crop views, with no negatives and no predictor."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.augment import DINO_VIEWS, ViewConfig
from ssl_lightning.collapse import mean_entropy
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.errors import ConfigError
from ssl_lightning.heads import DINOHead
from ssl_lightning.losses import check_temperature, dino_loss
from ssl_lightning.methods.base import MomentumPretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig, clip_grad_norm_per_parameter, linear_ramp


class DINO(MomentumPretrainMethod):
    """DINO: a student matches its momentum teacher's centred, sharpened outputs across multi-crop views.

    The student (encoder + ``DINOHead``) sees every crop; the teacher, its EMA, sees the global
    crops only (``global_crops``). ``dino_loss`` centres the teacher's outputs on ``center``, the
    EMA of the global batch's teacher outputs, and sharpens them by a teacher temperature that
    rises linearly per epoch over the warm-up (as the code). As in the code, each parameter's
    gradient norm is clipped at ``clip_grad``; the head's last layer is frozen at first.

    The ranking metrics rank the student's distribution P_s of global crop 1 among the teacher's
    P_t of global crop 2, and back, across the two networks (``cross_view_ranking``); the
    collapse monitors watch the student's bottleneck embeddings of crop 1.

    Args:
        out_dim: K, the head's outputs (the paper: 65,536).
        head_hidden_dim: the head MLP's hidden size (2048); head_bottleneck_dim: its output (256).
        head_batch_norm: batch norm in the head's hidden layers (the code's ``use_bn_in_head``:
            False, as for ViTs; its ResNet-50 recipe turns it on).
        student_temperature: T_s (0.1).
        teacher_temperature: T_t after the warm-up (the paper: 0.04 to 0.07 over 30 epochs).
        warmup_teacher_temperature: T_t at epoch 0; warmup_teacher_temperature_epochs: its length.
        center_momentum: m of the center's EMA (0.9).
        target_momentum: the teacher's EMA momentum at the first step (0.996), rising to
            target_momentum_end (1.0) on a cosine schedule.
        clip_grad: the per-parameter gradient norm clip (3.0; 0 turns it off).
        freeze_last_layer_epochs: epochs with the head's last layer frozen (1).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``); the paper's AdamW at
            0.0005 x batch / 256, 10 warm-up epochs, down to 1e-6, weight decay 0.04 (the paper's
            rises to 0.4 on a cosine: here it stays constant).
        views: the augmentations (``ViewConfig``): two global crops, then the local crops.
    """

    cross_view_ranking = True
    default_views: ClassVar[list[ViewConfig]] = DINO_VIEWS

    def __init__(
        self,
        out_dim: int = 65536,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_batch_norm: bool = False,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_epochs: int = 30,
        center_momentum: float = 0.9,
        target_momentum: float = 0.996,
        target_momentum_end: float | None = 1.0,
        clip_grad: float = 3.0,
        freeze_last_layer_epochs: int = 1,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=0.0005, lr_scaling="linear", weight_decay=0.04, warmup_epochs=10,
                                                     final_lr_ratio=0.002),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        for temperature in (student_temperature, teacher_temperature, warmup_teacher_temperature):
            check_temperature(temperature)  # before building anything: fail fast on a bad config
        if not 0 <= center_momentum < 1 or clip_grad < 0:
            raise ConfigError(f"DINO needs center_momentum in [0, 1) and clip_grad >= 0, got {center_momentum} and {clip_grad}")
        super().__init__(target_momentum=target_momentum, target_momentum_end=target_momentum_end,
                         encoder=encoder, optimizer=optimizer, views=views)
        self.head = DINOHead(self.encoder.out_dim, head_hidden_dim, head_bottleneck_dim, out_dim, head_batch_norm)
        self.teacher_encoder = self.momentum_target(self.encoder)
        self.teacher_head = self.momentum_target(self.head)
        self.register_buffer("center", torch.zeros(out_dim))  # (K,), in checkpoints
        self.num_teacher_crops = self.global_crops()

    def compute_loss(self, *views: Tensor) -> StepOutput:
        hp, n = self.hparams, len(views[0])
        h = self.encode_views(views)  # (V, N, F)
        z, logits = self.head(h.flatten(0, 1))  # (V N, B), (V N, K)
        with torch.no_grad():  # the teacher, on the global crops
            teacher_logits = self.teacher_head(self.teacher_encoder(torch.cat(views[: self.num_teacher_crops])))[1]
        student, teacher = logits.unflatten(0, (len(views), n)), teacher_logits.unflatten(0, (self.num_teacher_crops, n))
        global_student, global_teacher = (gather(x.transpose(0, 1)).transpose(0, 1) for x in (student, teacher))  # (V, world N, K)
        teacher_temperature = linear_ramp(self.current_epoch, hp.warmup_teacher_temperature_epochs, hp.warmup_teacher_temperature,
                                          hp.teacher_temperature)
        loss = dino_loss(global_student, global_teacher, self.center, hp.student_temperature, teacher_temperature)
        with torch.no_grad():  # what the loss compares: P_s of crop 1 and P_t of crop 2
            p_student = F.softmax(student[0].float() / hp.student_temperature, dim=1)
            p_teachers = F.softmax((teacher.float() - self.center) / teacher_temperature, dim=-1)  # (V_t, N, K)
            self.log_collapse_terms(p_teachers, loss)
        if self.training:  # the center moves towards the global batch's mean teacher output
            self.center.lerp_(global_teacher.float().mean(dim=(0, 1)), 1 - hp.center_momentum)
        return StepOutput(loss, p_student, p_teachers[1], features=h[0], monitored=z[:n])

    def log_collapse_terms(self, p_teachers: Tensor, loss: Tensor) -> None:
        """The paper's collapse analysis (Sec. 5.3, Fig. 7): the teacher's mean entropy H(P_t) and the
        KL divergence, loss - H(P_t). Uniform collapse: H -> log K, KL -> 0; one dimension
        dominating: H -> 0. Learning keeps H below log K and KL above 0."""
        entropy = mean_entropy(p_teachers)
        stage, per_step = ("train", True) if self.training else ("val", False)
        for name, value in (("teacher_entropy", entropy), ("kl", loss.detach() - entropy)):
            self.log(f"{stage}/{name}", value, on_step=per_step, on_epoch=not per_step, sync_dist=not per_step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.hparams.clip_grad:
            clip_grad_norm_per_parameter(self, self.hparams.clip_grad)
        self.hold_before_epoch(self.head.last_layer, self.hparams.freeze_last_layer_epochs)
