"""SwAV (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", arXiv:2006.09882): each global crop's assignment to learnable prototypes, made
equipartitioned by Sinkhorn-Knopp, is predicted from every other crop (swapped prediction)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.augment import SWAV_VIEWS, ViewConfig
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.errors import ConfigError
from ssl_lightning.heads import ProjectionHead, Prototypes
from ssl_lightning.losses import check_temperature, cross_entropy_across_crops, sinkhorn_knopp
from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig
from ssl_lightning.queue import KeyQueue


class SwAV(PretrainMethod):
    """SwAV: each global crop's Sinkhorn-Knopp assignment to prototypes is predicted from every other crop.

    z = normalize(projector(encoder(crop))) for every crop, scores = prototypes · z
    (prototypes: a bias-free Linear whose rows are unit vectors, normalised again after every
    step). The codes of the global crops (``global_crops``) are ``sinkhorn_knopp`` of their scores
    over the global batch (after the queue's past embeddings, once it is full); every other crop
    predicts them (``cross_entropy_across_crops``). The prototypes are frozen for the first
    ``freeze_prototypes_epochs``.

    The ranking metrics rank the prototype scores of global crop 1 among those of crop 2 (one
    network); the collapse monitors watch z of crop 1.

    Args:
        temperature: τ of the predictions (the paper: 0.1).
        num_prototypes: K (the paper: 3000).
        projection_hidden_dim: the 2-layer projector's hidden size (2048); projection_dim: z's (128).
        sinkhorn_epsilon: ε (0.05); sinkhorn_iterations: 3.
        freeze_prototypes_epochs: epochs without prototype updates (the paper: the first).
        queue_size: past embeddings per global crop added to Sinkhorn's batch, a multiple of the
            global batch (0: none; the code: 3840 at batch 256); queue_start_epoch: when it
            starts filling (the code: 15).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``); the paper's LARS at
            0.3 x batch / 256 (4.8 at batch 4096), down to 0.001 of it, weight decay 1e-6,
            10 warm-up epochs.
        views: the augmentations (``ViewConfig``): the global crops, then the local crops.
    """

    default_views: ClassVar[list[ViewConfig]] = SWAV_VIEWS

    def __init__(
        self,
        temperature: float = 0.1,
        num_prototypes: int = 3000,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_epochs: int = 1,
        queue_size: int = 0,
        queue_start_epoch: int = 15,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(name="lars", lr=0.3, lr_scaling="linear", weight_decay=1e-6,
                                                     warmup_epochs=10, final_lr_ratio=0.001),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        check_temperature(temperature)  # before building anything: fail fast on a bad config
        if sinkhorn_epsilon <= 0 or sinkhorn_iterations < 1 or num_prototypes < 1 or queue_size < 0:
            raise ConfigError(f"SwAV needs sinkhorn_epsilon > 0, sinkhorn_iterations >= 1, num_prototypes >= 1 and queue_size >= 0, got "
                              f"{sinkhorn_epsilon}, {sinkhorn_iterations}, {num_prototypes} and {queue_size}")
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.projector = ProjectionHead(self.encoder.out_dim, projection_hidden_dim, projection_dim)
        self.prototypes = Prototypes(projection_dim, num_prototypes)
        self.num_assigned_crops = self.global_crops()
        self.queues = nn.ModuleList(KeyQueue(queue_size, projection_dim, setting="SwAV queue_size")
                                    for _ in range(self.num_assigned_crops if queue_size else 0))
        self.register_buffer("queued", torch.zeros((), dtype=torch.long))  # embeddings enqueued per queue, in checkpoints
        self._queued = 0  # the same, on the host: reading the buffer every step would wait for the GPU

    def codes(self, scores: Tensor, z: Tensor) -> Tensor:
        """(A, B, K) Sinkhorn codes of the A global crops' global-batch scores; ``z`` (A, B, D) their embeddings."""
        hp = self.hparams
        filling = self.training and bool(self.queues) and self.current_epoch >= hp.queue_start_epoch
        use_queue = filling and self._queued >= len(self.queues[0].keys)
        codes = []
        for a, crop_scores in enumerate(scores.detach()):
            if use_queue:  # the queue's past embeddings join the batch, then only the batch's codes are kept
                crop_scores = torch.cat([self.queues[a].keys @ self.prototypes.weight.detach().T, crop_scores])
            codes.append(sinkhorn_knopp(crop_scores, hp.sinkhorn_epsilon, hp.sinkhorn_iterations)[-len(z[a]):])
        if filling:
            for queue, crop_z in zip(self.queues, z):
                queue.enqueue(crop_z)
            self._queued += len(z[0])
            self.queued.fill_(self._queued)
        return torch.stack(codes)

    def compute_loss(self, *views: Tensor) -> StepOutput:
        n = len(views[0])
        h = self.encode_views(views)  # (V, N, F)
        z = F.normalize(self.projector(h.flatten(0, 1)), dim=1)  # (V N, D)
        scores = self.prototypes(z).unflatten(0, (len(views), n))  # (V, N, K)
        global_scores = gather(scores.transpose(0, 1)).transpose(0, 1)  # (V, world N, K)
        assigned_z = gather(z.unflatten(0, (len(views), n))[: self.num_assigned_crops].transpose(0, 1).detach()).transpose(0, 1)
        codes = self.codes(global_scores[: self.num_assigned_crops], assigned_z)
        loss = cross_entropy_across_crops(codes, global_scores, self.hparams.temperature)
        return StepOutput(loss, scores[0], scores[1], features=h[0], monitored=z[:n])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._queued = int(checkpoint["state_dict"].get("queued", 0))  # a resumed queue is as full as it was

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.hold_before_epoch(self.prototypes, self.hparams.freeze_prototypes_epochs)

    def optimizer_step(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().optimizer_step(*args, **kwargs)
        self.prototypes.normalize_()
