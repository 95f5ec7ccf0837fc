"""SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", arXiv:2011.10566): a
predictor on one branch and a stop-gradient on the other are enough to learn without negatives,
a momentum encoder or large batches."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ssl_lightning.augment import SIMSIAM_VIEWS, ViewConfig
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import simsiam_loss
from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig, optimizer_with_schedule, param_groups


class SimSiam(PretrainMethod):
    """SimSiam: a predictor regresses the other view's projection under a stop-gradient, with no negatives.

    Encoder f = backbone + projector (BN on every layer, its output included); predictor
    h, a bottleneck MLP. The loss is symmetric, ½ D(p1, stopgrad(z2)) + ½ D(p2, stopgrad(z1)).

    The predictor keeps its learning rate while the rest decays, as the paper found to work well
    (arXiv:2011.10566, Sec. 4.2; its code's ``--fix-pred-lr``); its curves are ``train/lr/predictor/...``.
    The ranking metrics rank view 1's prediction among view 2's projections, across the two views
    only (``cross_view_ranking``): predictions and projections are different spaces.

    Args:
        projection_dim: width of the 3-layer projector, hidden and output (paper: 2048).
        predictor_hidden_dim: the predictor's bottleneck (paper: 512).
        fixed_predictor_lr: keep the predictor's learning rate constant (paper: True).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method; the
            paper's SGD, 0.05 x batch / 256, momentum 0.9, weight decay 1e-4, cosine decay, no warm-up.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    cross_view_ranking = True
    default_views: ClassVar[list[ViewConfig]] = SIMSIAM_VIEWS  # MoCo v2's

    def __init__(
        self,
        projection_dim: int = 2048,
        predictor_hidden_dim: int = 512,
        fixed_predictor_lr: bool = True,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(name="sgd", lr=0.05, lr_scaling="linear", weight_decay=1e-4,
                                                     momentum=0.9, warmup_epochs=0),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.fixed_predictor_lr = fixed_predictor_lr
        self.projector = ProjectionHead(self.encoder.out_dim, projection_dim, projection_dim, num_layers=3, last_bias=False,
                                        last_batch_norm=True)
        self.predictor = ProjectionHead(projection_dim, predictor_hidden_dim, projection_dim)

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        # Views encoded apart: each view's BatchNorm statistics are its own, as in the paper's code.
        h1 = self.encoder(x1)  # (N, F)
        z1, z2 = self.projector(h1), self.projector(self.encoder(x2))  # (N, D) each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (N, D) each
        loss = (simsiam_loss(p1, z2.detach()) + simsiam_loss(p2, z1.detach())) / 2  # stop-gradient on z
        return StepOutput(loss, p1, z2, features=h1)

    def configure_optimizers(self) -> dict:
        config = self.optimizer_config

        def groups(lr: float) -> list[dict]:
            online = nn.ModuleList([self.encoder, self.projector])
            return [*param_groups(online, lr, config.weight_decay, config.bias_norm_lr_ratio),
                    *param_groups(self.predictor, lr, config.weight_decay, config.bias_norm_lr_ratio, part="predictor",
                                  fixed_lr=self.fixed_predictor_lr)]

        return optimizer_with_schedule(self, groups, config)
