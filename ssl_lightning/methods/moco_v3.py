"""MoCo v3 (Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers",
arXiv:2104.02057): a momentum key encoder as MoCo's, but the keys are the batch's own, the loss
symmetric, and a predictor on the query branch."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ssl_lightning.augment import MOCO_V3_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import check_temperature, cross_view_info_nce
from ssl_lightning.methods.base import MomentumPretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig


class MoCoV3(MomentumPretrainMethod):
    """MoCo v3: each query against the momentum encoder's keys of the batch's other view, symmetrised.

    Query q = predictor(projector(encoder(view))); key k = the momentum copies of the
    encoder and projector on the other view. loss = ctr(q1, k2) + ctr(q2, k1), with
    ctr(q, k) = 2T x InfoNCE of each query against the global batch's keys (``cross_view_info_nce``),
    the paper's Algorithm 1.

    The ranking metrics rank each query of view 1 among the keys of view 2 (and back), across the
    two views only (``cross_view_ranking``): queries and keys come from different networks.

    Args:
        temperature: T (the paper: 1.0 for ResNet-50, 0.2 for ViTs).
        projection_hidden_dim: hidden size of the projector and predictor (the paper: 4096).
        projection_dim: output size of both (the paper: 256).
        projection_layers: the projector's linear layers (the paper's code: 2 for ResNets, 3 for ViTs).
        target_momentum: m at the first step (the paper: 0.99).
        target_momentum_end: m at the last step, on a cosine schedule (the paper: 1).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method; the
            paper's ResNet-50 setting: LARS, 0.6 x batch / 256, weight decay 1e-6, 10 warm-up epochs.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    cross_view_ranking = True
    default_views: ClassVar[list[ViewConfig]] = MOCO_V3_VIEWS  # BYOL's asymmetric views

    def __init__(
        self,
        temperature: float = 1.0,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        projection_layers: int = 2,
        target_momentum: float = 0.99,
        target_momentum_end: float | None = 1.0,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(name="lars", lr=0.6, lr_scaling="linear", weight_decay=1e-6,
                                                     warmup_epochs=10),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        check_temperature(temperature)  # before building anything: fail fast on a bad config
        super().__init__(target_momentum=target_momentum, target_momentum_end=target_momentum_end,
                         encoder=encoder, optimizer=optimizer, views=views)
        self.temperature = temperature
        # The paper's code's MLPs: bias-free Linear layers, BN on the hidden layers, and BN without
        # affine parameters on the projector's output.
        self.projector = ProjectionHead(self.encoder.out_dim, projection_hidden_dim, projection_dim, num_layers=projection_layers,
                                        last_bias=False, last_batch_norm=True)
        self.predictor = ProjectionHead(projection_dim, projection_hidden_dim, projection_dim, last_bias=False)
        self.key_encoder = self.momentum_target(self.encoder)
        self.key_projector = self.momentum_target(self.projector)

    def contrast(self, q: Tensor, k: Tensor) -> Tensor:
        """ctr(q, k): InfoNCE over the global batch's keys, scaled by 2T as in the paper."""
        return 2 * self.temperature * cross_view_info_nce(gather(q), gather(k), self.temperature)

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        # Views encoded apart, as in the paper's code.
        h1 = self.encoder(x1)  # (N, F)
        q1, q2 = self.predictor(self.projector(h1)), self.predictor(self.projector(self.encoder(x2)))  # (N, D) each
        with torch.no_grad():  # the keys: the momentum encoder and projector
            k1, k2 = (self.key_projector(self.key_encoder(x)) for x in (x1, x2))  # (N, D) each
        loss = self.contrast(q1, k2) + self.contrast(q2, k1)
        return StepOutput(loss, q1, k2, features=h1)
