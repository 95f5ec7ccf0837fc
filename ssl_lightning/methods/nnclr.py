"""NNCLR (Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations", arXiv:2104.14548): the positive of a view is the nearest
neighbour of its embedding in a support set of past embeddings, not the embedding itself."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.augment import NNCLR_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import check_temperature, cross_view_info_nce
from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig
from ssl_lightning.queue import KeyQueue


class NNCLR(PretrainMethod):
    """NNCLR: each view's positive is its nearest neighbour in a support set of past embeddings.

    z = projector(encoder(view)), p = predictor(z); the support set Q holds the last
    ``support_size`` embeddings z of view 1 (MoCo's ``KeyQueue``), L2-normalised. The loss is the
    paper's loss with the predictor, symmetrised: ½ InfoNCE(NN(z1, Q), p2) + ½ InfoNCE(NN(z2, Q), p1),
    each nearest neighbour's candidates the other view's predictions of the global batch
    (``cross_view_info_nce``). No gradient flows through a nearest neighbour.

    The ranking metrics rank the nearest neighbours of view 1 among the predictions of view 2 (and
    back), across the two views only (``cross_view_ranking``).

    Args:
        temperature: τ (the paper: 0.1).
        support_size: the support set's size, a multiple of the global batch (the paper: 98,304).
        projection_hidden_dim: hidden size of the 3-layer projector (the paper: 2048).
        projection_dim: output size of projector and predictor (the paper: 256).
        predictor_hidden_dim: hidden size of the 2-layer predictor (the paper: 4096).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method; the
            paper's LARS, 0.3 x batch / 256 (its base rate 4.8 at batch 4096), weight decay 1e-6,
            10 warm-up epochs.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    cross_view_ranking = True
    default_views: ClassVar[list[ViewConfig]] = NNCLR_VIEWS  # BYOL's asymmetric views

    def __init__(
        self,
        temperature: float = 0.1,
        support_size: int = 98_304,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-6,
                                                     warmup_epochs=10),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        check_temperature(temperature)  # before building anything: fail fast on a bad config
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.temperature = temperature
        self.projector = ProjectionHead(self.encoder.out_dim, projection_hidden_dim, projection_dim, num_layers=3)
        self.predictor = ProjectionHead(projection_dim, predictor_hidden_dim, projection_dim)
        self.support_set = KeyQueue(support_size, projection_dim, setting="NNCLR support_size")

    @torch.no_grad()
    def nearest_neighbours(self, z: Tensor) -> Tensor:
        """(N, D) -> (N, D): for each embedding, the support set's most cosine-similar one."""
        similarities = F.normalize(z, dim=1) @ self.support_set.keys.T  # (N, Q)
        return self.support_set.keys[similarities.argmax(dim=1)].to(z.dtype)

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        h = self.encoder(torch.cat([x1, x2]))  # (2N, F): both views in one batch, so BN statistics cover all 2N
        z = self.projector(h)  # (2N, D)
        z1, z2 = z.chunk(2)  # (N, D) each
        p1, p2 = self.predictor(z).chunk(2)  # (N, D) each
        nn1, nn2 = self.nearest_neighbours(z1), self.nearest_neighbours(z2)  # (N, D) each, no gradient
        nn1, nn2, p1, p2 = gather(nn1), gather(nn2), gather(p1), gather(p2)  # the global batch's candidates
        loss = (cross_view_info_nce(nn1, p2, self.temperature) + cross_view_info_nce(nn2, p1, self.temperature)) / 2
        if self.training:
            self.support_set.enqueue(gather(z1))  # every process's, so every support set stays the same
        return StepOutput(loss, nn1, p2, features=h[: len(x1)])
