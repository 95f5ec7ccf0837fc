"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
arXiv:2002.05709): two views of each image, a projection head, and the NT-Xent loss."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ssl_lightning.augment import SIMCLR_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import check_temperature, info_nce
from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig


class SimCLR(PretrainMethod):
    """SimCLR: the two views of an image agree against every other view of the batch (NT-Xent).

    The encoder and projection head are trained so that the two views of an image agree
    and the views of different images don't.

    Args:
        temperature: NT-Xent temperature T > 0 (the paper uses 0.5 for CIFAR-10, App. B.9).
        projection_hidden_dim: hidden size of the projection head (the paper: the backbone's
            feature size).
        projection_dim: output size of the projection head (the paper: 128).
        projection_batch_norm: BatchNorm in the head's hidden layer, as the paper's reference code
            (False: Linear -> ReLU -> Linear, the UvA tutorial's head).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    default_views: ClassVar[list[ViewConfig]] = SIMCLR_VIEWS

    def __init__(
        self,
        temperature: float = 0.5,
        projection_hidden_dim: int = 512,
        projection_dim: int = 128,
        projection_batch_norm: bool = True,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        check_temperature(temperature)  # before building anything: fail fast on a bad config
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.temperature = temperature
        self.projector = ProjectionHead(self.encoder.out_dim, projection_hidden_dim, projection_dim, batch_norm=projection_batch_norm)

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        # Both views in one batch, so BatchNorm statistics cover all 2N views (the paper's global BN).
        h = self.encoder(torch.cat([x1, x2]))  # (2N, F)
        z1, z2 = self.projector(h).chunk(2)  # (N, projection_dim) each
        # Under DDP every process scores the whole global batch: all its images are negatives.
        z1, z2 = gather(z1), gather(z2)  # (world_size * N, projection_dim)
        return StepOutput(info_nce(z1, z2, self.temperature), z1, z2, features=h[: len(x1)])
