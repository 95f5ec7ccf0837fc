"""Barlow Twins (Zbontar et al., "Self-Supervised Learning via Redundancy Reduction",
arXiv:2103.03230): the cross-correlation of the two views' embeddings is pushed to the identity."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ssl_lightning.augment import BARLOW_TWINS_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import barlow_twins_loss
from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig


class BarlowTwins(PretrainMethod):
    """Barlow Twins: the cross-correlation of the two views' embeddings pushed towards the identity.

    The ranking metrics compare z1 with z2 (the projector's outputs).

    The projector is the paper's (``ProjectionHead``: three bias-free Linear layers, BatchNorm and
    ReLU after the first two), and the biases and norm weights learn at ``bias_norm_lr_ratio`` x
    the weights' rate: "We use a learning rate of 0.2 for the weights and 0.0048 for the biases and
    batch normalization parameters" (arXiv:2103.03230, Sec. 4), a ratio of 0.024.

    Args:
        projector_dim: width of every layer of the 3-layer projector (paper: 8192).
        lambd: λ, weight of the off-diagonal (redundancy) term (paper: 5e-3).
        loss_scale: a factor on the whole loss, 1 = the paper's formula. (The paper's code scales
            by 1/32 for its LARS set-up; here it is explicit and off by default.)
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method; its
            ``bias_norm_lr_ratio`` is the paper's 0.024 here.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    default_views: ClassVar[list[ViewConfig]] = BARLOW_TWINS_VIEWS  # BYOL's asymmetric views

    def __init__(
        self,
        projector_dim: int = 8192,
        lambd: float = 5e-3,
        loss_scale: float = 1.0,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(bias_norm_lr_ratio=0.024),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.lambd = lambd
        self.loss_scale = loss_scale
        self.projector = ProjectionHead(self.encoder.out_dim, projector_dim, projector_dim, num_layers=3, last_bias=False)

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        # Views encoded apart: each view's BatchNorm statistics are its own, as in the paper.
        h1 = self.encoder(x1)  # (N, F)
        z1 = self.projector(h1)  # (N, D)
        z2 = self.projector(self.encoder(x2))  # (N, D)
        # Under DDP the cross-correlation is over the global batch, as in the paper's code.
        z1, z2 = gather(z1), gather(z2)  # (world_size * N, D)
        return StepOutput(self.loss_scale * barlow_twins_loss(z1, z2, self.lambd), z1, z2, features=h1)
