"""MoCo v2 (Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297,
on MoCo, He et al., arXiv:1911.05722): a query encoder, a momentum key encoder and a queue of
past keys as negatives."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ssl_lightning.augment import MOCO_V2_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import check_temperature, moco_info_nce
from ssl_lightning.methods.base import MomentumPretrainMethod, StepOutput
from ssl_lightning.queue import KeyQueue


class MoCo(MomentumPretrainMethod):
    """MoCo v2. Query q = head(encoder(view 1)), key k = the momentum copies applied to view 2.

    The ranking metrics rank each query's key among the batch's keys (and each key's query among
    the queries): queries and keys come from different networks (``cross_view_ranking``).

    BatchNorm leak: the paper shuffles the keys' BN across GPUs so that a query and its key do not
    share batch statistics. On one device, the keys are computed on the batch shuffled and split
    into ``key_bn_splits`` sub-batches, each with its own BN statistics (MoCo's "shuffling BN"
    emulated on one device), then put back in order; the queries use the whole batch. Under DDP this
    happens within each process (each process's BN already sees only its own batch), and the queue
    receives the keys of all processes.

    Args:
        temperature: InfoNCE temperature (MoCo v2: 0.2).
        queue_size: K, the number of past keys used as negatives; a multiple of the batch size.
        projection_hidden_dim, projection_dim: the MLP head (MoCo v2: 2048 and 128).
        key_bn_splits: sub-batches of the shuffled key batch (1 turns the shuffle off).
        target_momentum: the key encoder's momentum m (constant).
        **kwargs: the shared arguments of ``PretrainMethod``.
    """

    cross_view_ranking = True
    default_views: ClassVar[list[ViewConfig]] = MOCO_V2_VIEWS

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 4096,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        key_bn_splits: int = 8,
        target_momentum: float = 0.99,
        **kwargs,
    ) -> None:
        check_temperature(temperature)  # before building anything: fail fast on a bad config
        super().__init__(target_momentum=target_momentum, **kwargs)  # constant unless target_momentum_end is set
        self.temperature = temperature
        self.key_bn_splits = key_bn_splits
        self.projector = ProjectionHead(self.encoder.out_dim, projection_hidden_dim, projection_dim)
        self.key_encoder = self.momentum_target(self.encoder)
        self.key_projector = self.momentum_target(self.projector)
        self.queue = KeyQueue(queue_size, projection_dim)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        batch_size = getattr(getattr(self.trainer, "datamodule", None), "batch_size", None)
        if batch_size:  # fail before training, not at the first enqueue; every process enqueues all keys
            self.queue.check_batch_size(batch_size * self.trainer.world_size)

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        order = torch.randperm(len(x), device=x.device)
        chunks = x[order].chunk(self.key_bn_splits)
        shuffled = torch.cat([self.key_projector(self.key_encoder(chunk)) for chunk in chunks])  # (N, D)
        return shuffled[order.argsort()]  # back to the input order

    def compute_loss(self, x1: Tensor, x2: Tensor) -> StepOutput:
        h = self.encoder(x1)  # (N, F)
        q = self.projector(h)  # (N, D)
        k = self.keys(x2)  # (N, D), no gradient
        # A copy of the queue, so that enqueueing below does not change what backward needs.
        loss = moco_info_nce(q, k, self.queue.keys.clone(), self.temperature)
        if self.training:
            self.queue.enqueue(gather(k))  # the keys of all processes, so every queue stays the same
        return StepOutput(loss, q, k, features=h)
