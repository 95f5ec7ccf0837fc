"""MoCo v2 (Chen et al., "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297,
on MoCo, He et al., arXiv:1911.05722): a query encoder, a momentum key encoder and a queue of
past keys as negatives."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ssl_lightning.augment import MOCO_V2_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.errors import ConfigError
from ssl_lightning.heads import ProjectionHead
from ssl_lightning.losses import check_temperature, moco_info_nce
from ssl_lightning.methods.base import MomentumPretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig
from ssl_lightning.queue import KeyQueue


class MoCo(MomentumPretrainMethod):
    """MoCo v2: each query against its key and a queue of past keys from a momentum encoder.

    Query q = head(encoder(view 1)), key k = the momentum copies applied to view 2.

    The ranking metrics rank each query's key among the batch's keys (and each key's query among
    the queries): queries and keys come from different networks (``cross_view_ranking``).

    BatchNorm leak: the paper shuffles the keys' BN across GPUs so that a query and its key do not
    share batch statistics. On one device, the keys are computed on the batch shuffled and split
    into ``key_bn_splits`` sub-batches of equal size, each with its own BN statistics (MoCo's
    "shuffling BN" emulated on one device), then put back in order; the queries use the whole batch.
    Under DDP this happens within each process (each process's BN already sees only its own batch),
    and the queue receives the keys of all processes. The data module's batch size must split into
    ``key_bn_splits`` equal sub-batches of 2 images or more (checked at setup); a batch of another
    size (the last, smaller batch of a split without ``drop_last``) is cut into the most equal
    sub-batches of 2 or more that fit, at most ``key_bn_splits``.

    Args:
        temperature: InfoNCE temperature (MoCo v2: 0.2).
        queue_size: K, the number of past keys used as negatives; a multiple of the batch size.
        projection_hidden_dim: hidden size of the MLP head (MoCo v2: 2048).
        projection_dim: output size of the MLP head (MoCo v2: 128).
        projection_batch_norm: BatchNorm in the head's hidden layer (MoCo v2: none, Linear -> ReLU
            -> Linear; True: MoCo v3's Linear -> BN -> ReLU -> Linear).
        key_bn_splits: sub-batches of the shuffled key batch (1 turns the shuffle off).
        target_momentum: the key encoder's momentum m.
        target_momentum_end: m at the last step, on a cosine schedule (None: constant, as MoCo).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    cross_view_ranking = True
    default_views: ClassVar[list[ViewConfig]] = MOCO_V2_VIEWS

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 4096,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        projection_batch_norm: bool = False,
        key_bn_splits: int = 8,
        target_momentum: float = 0.99,
        target_momentum_end: float | None = None,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        check_temperature(temperature)  # before building anything: fail fast on a bad config
        super().__init__(target_momentum=target_momentum, target_momentum_end=target_momentum_end,
                         encoder=encoder, optimizer=optimizer, views=views)
        if key_bn_splits < 1:
            raise ConfigError(f"key_bn_splits is a number of sub-batches, at least 1; got {key_bn_splits}")
        self.temperature = temperature
        self.key_bn_splits = key_bn_splits
        self.projector = ProjectionHead(self.encoder.out_dim, projection_hidden_dim, projection_dim, batch_norm=projection_batch_norm)
        self.key_encoder = self.momentum_target(self.encoder)
        self.key_projector = self.momentum_target(self.projector)
        self.queue = KeyQueue(queue_size, projection_dim)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        batch_size = self.data_batch_size()
        if batch_size and (batch_size % self.key_bn_splits or batch_size // self.key_bn_splits < 2):
            raise ConfigError(
                f"key_bn_splits={self.key_bn_splits} does not cut a batch of {batch_size} into equal sub-batches of 2 "
                "images or more; set model.init_args.key_bn_splits to a divisor of the batch size at most half of it"
            )

    def key_splits(self, n: int) -> int:
        """How many equal sub-batches a key batch of ``n`` is cut into: the most, up to
        ``key_bn_splits``, that leave 2 images or more in each (BatchNorm's statistics of one image
        are the image itself). 1 when none fits."""
        return max((s for s in range(1, self.key_bn_splits + 1) if n % s == 0 and n // s >= 2), default=1)

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """The keys (N, D) of a batch of views: the momentum key encoder and projector on the
        shuffled sub-batches (``key_splits``), returned in the input order."""
        order = torch.randperm(len(x), device=x.device)
        chunks = x[order].chunk(self.key_splits(len(x)))  # equal sub-batches
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
