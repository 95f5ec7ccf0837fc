"""BYOL (Grill et al., "Bootstrap Your Own Latent", arXiv:2006.07733): an online network with a
predictor regresses the projection of a momentum target network, with no negatives."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ssl_lightning.augment import BYOL_VIEWS, ViewConfig
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import byol_loss
from ssl_lightning.methods.base import MomentumPretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig


class BYOL(MomentumPretrainMethod):
    """BYOL: an online network predicts its momentum target's projection of the other view.

    Online: encoder -> projector -> predictor; target: EMA of encoder and projector, τ
    rising from ``target_momentum`` to ``target_momentum_end`` on a cosine schedule.

    The loss is symmetric: view 1's prediction regresses view 2's target projection and vice versa.
    The ranking metrics rank the online prediction of view 1 against the target projections of
    view 2, across the two views only (``cross_view_ranking``): they come from different networks.

    Args:
        projection_hidden_dim: hidden size of the projector and predictor MLPs (BYOL: 4096).
        projection_dim: output size of the projector and predictor MLPs (BYOL: 256).
        target_momentum: τ at the first step (BYOL: 0.996).
        target_momentum_end: τ at the last step, on a cosine schedule (BYOL: 1).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    cross_view_ranking = True
    default_views: ClassVar[list[ViewConfig]] = BYOL_VIEWS  # asymmetric: view 1 always blurred, view 2 may be solarized

    def __init__(
        self,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        target_momentum: float = 0.996,
        target_momentum_end: float | None = 1.0,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        super().__init__(target_momentum=target_momentum, target_momentum_end=target_momentum_end,
                         encoder=encoder, optimizer=optimizer, views=views)
        self.projector = ProjectionHead(self.encoder.out_dim, projection_hidden_dim, projection_dim)
        self.predictor = ProjectionHead(projection_dim, projection_hidden_dim, projection_dim)
        self.target_encoder = self.momentum_target(self.encoder)
        self.target_projector = self.momentum_target(self.projector)

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        x = torch.cat([x1, x2])  # (2N, C, H, W)
        h = self.encoder(x)  # (2N, F)
        p1, p2 = self.predictor(self.projector(h)).chunk(2)  # (N, D) each
        with torch.no_grad():  # stop-gradient on the target
            z1, z2 = self.target_projector(self.target_encoder(x)).chunk(2)
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return StepOutput(loss, p1, z2, features=h[: len(x1)])
