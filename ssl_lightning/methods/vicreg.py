"""VICReg (Bardes et al., "Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", arXiv:2105.04906): the two views' embeddings agree (invariance), each dimension keeps
a spread over the batch (variance), and the dimensions are decorrelated (covariance)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ssl_lightning.augment import VICREG_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import vicreg_loss
from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig


class VICReg(PretrainMethod):
    """VICReg: invariance, variance and covariance terms on the two views' expander outputs.

    The ranking metrics compare z1 with z2, the expander's outputs of the two views.

    The expander is the paper's (``ProjectionHead``: three Linear layers, BatchNorm and ReLU after
    the first two). Under DDP the loss is computed on the global batch, as the official code's
    ``FullGatherLayer`` does: the variance and covariance are statistics of all images.

    Args:
        expander_dim: width of every layer of the 3-layer expander (paper: 8192).
        sim_weight: λ, the invariance term's weight (paper: 25).
        var_weight: μ, the variance term's weight (paper: 25).
        cov_weight: ν, the covariance term's weight (paper: 1).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method; the
            paper's LARS, 0.2 x batch / 256, weight decay 1e-6, 10 warm-up epochs, cosine decay to
            0.001 x lr.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    default_views: ClassVar[list[ViewConfig]] = VICREG_VIEWS  # BYOL's asymmetric views

    def __init__(
        self,
        expander_dim: int = 8192,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(name="lars", lr=0.2, lr_scaling="linear", weight_decay=1e-6,
                                                     warmup_epochs=10, final_lr_ratio=0.001),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.weights = dict(sim_weight=sim_weight, var_weight=var_weight, cov_weight=cov_weight)
        self.expander = ProjectionHead(self.encoder.out_dim, expander_dim, expander_dim, num_layers=3, last_bias=False)

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        h1 = self.encoder(x1)  # (N, F)
        z1 = self.expander(h1)  # (N, D)
        z2 = self.expander(self.encoder(x2))  # (N, D)
        z1, z2 = gather(z1), gather(z2)  # (world_size * N, D): the statistics span the global batch
        return StepOutput(vicreg_loss(z1, z2, **self.weights), z1, z2, features=h1)
