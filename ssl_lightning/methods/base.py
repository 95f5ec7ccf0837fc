"""What the methods share. ``EncoderMethod``: an encoder trained on augmented views, with its
optimizer and schedule (pretraining methods and the supervised baseline). ``PretrainMethod``: its
views in, the loss and the ranking metrics logged. ``MomentumPretrainMethod``: EMA targets."""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any, ClassVar, NamedTuple

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.trainer.states import RunningStage
from torch import Tensor, nn

from ssl_lightning.augment import ViewConfig, ViewPipelines, resolve_views, view_side
from ssl_lightning.checkpoint import add_encoder_entries, check_compatible
from ssl_lightning.collapse import CollapseMonitor
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import Encoder, EncoderConfig
from ssl_lightning.errors import ConfigError, TrainingDivergedError
from ssl_lightning.metrics import ranking_metrics
from ssl_lightning.momentum import cosine_momentum, momentum_copy, update_momentum
from ssl_lightning.optim import OptimizerConfig, optimizer_with_schedule
from ssl_lightning.queue import KeyQueue

# Stages whose batches are turned into views; predict batches stay plain images.
_VIEW_STAGES = (RunningStage.TRAINING, RunningStage.VALIDATING, RunningStage.SANITY_CHECKING, RunningStage.TESTING)


class StepOutput(NamedTuple):
    """What ``compute_loss`` returns: the loss, the two embeddings the ranking metrics compare,
    the encoder features of view 1, and what the collapse monitors watch."""

    loss: Tensor
    z1: Tensor  # (N, D) embeddings of view 1 and view 2 whose agreement the ranking metrics measure
    z2: Tensor
    features: Tensor  # (N, F) encoder features of view 1, for online evaluation
    monitored: Tensor | None = None  # (N, E) view 1's embeddings for the collapse monitors; None: z1


class ViewBatch(NamedTuple):
    """A batch after ``on_after_batch_transfer``: the views, the labels and the images."""

    views: list[Tensor]  # one (N, C, S_i, S_i) batch of views in [0, 1] per view config
    labels: Tensor  # (N,), never used for training
    images: Tensor  # (N, C, H, W) the images themselves in [0, 1], unaugmented


class EncoderMethod(LightningModule, ABC):
    """An ``encoder`` trained on augmented views made on the device, with AdamW/SGD/LARS and a
    warm-up + cosine schedule; checkpoints carry what ``load_encoder`` needs.

    ``training_step`` of subclasses returns ``{"loss", "features", "labels"}`` and ``validation_step``
    at least ``{"features", "labels"}`` (features: encoder outputs (N, F); in validation of the
    unaugmented images, every one of them) for callbacks such as ``OnlineEvaluation``.
    """

    default_views: ClassVar[list[ViewConfig]]  # each method's paper's views, one config per view (``augment``)

    def __init__(
        self,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        """
        Args:
            encoder: the backbone and the images it takes (``EncoderConfig``; the CLI fills in the
                data's channels, side and normalisation).
            optimizer: the optimizer and its warm-up + cosine schedule (``OptimizerConfig``).
            views: augmentation parameters (``ssl_lightning.augment.ViewConfig``): one mapping for
                every view alike, or a list with one per view; keys left out take the method's
                defaults for that view (``default_views``).
        """
        super().__init__()
        encoder, optimizer = EncoderConfig.of(encoder), OptimizerConfig.of(optimizer)
        self.save_hyperparameters()
        # The configs whole and as plain values: checkpoints load with weights_only=True, and every
        # run logs the same hyperparameters, whichever fields its config set.
        self.save_hyperparameters({**self.hparams, "encoder": encoder.as_dict(), "optimizer": asdict(optimizer)})
        self.image_shape = (encoder.in_channels, encoder.input_size)  # (channels, side) of the data's images
        self.optimizer_config = optimizer
        self.view_configs = resolve_views(views, self.default_views)
        self.views = ViewPipelines(self.view_configs, channels=encoder.in_channels, image_size=encoder.input_size)
        # Trained at the first view's size: a global crop under multi-crop. Made before subclasses
        # copy it (EMA targets), so that the copies keep its memory layout.
        self.encoder = self.build_encoder(replace(encoder, input_size=view_side(self.view_configs[0], encoder.input_size)))
        self._first_nonfinite: Tensor | None = None  # (step, epoch, loss) of the first non-finite loss

    def build_encoder(self, config: EncoderConfig) -> nn.Module:
        """The encoder the method trains (``Encoder(config)``; ``TransferClassifier`` loads one)."""
        return Encoder(config)

    def configure_model(self) -> None:
        if self.hparams.encoder["compile"]:  # here, after the targets are made: a deep copy of a compiled module is not one
            for module in self.modules():
                if isinstance(module, Encoder):
                    module.backbone.compile()

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, H, W) float images in [0, 1] -> (N, D) encoder features."""
        return self.encoder(images)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: uint8 images to floats in [0, 1], then the method's batch of them
        (``views_of``) in training, validation and test; predict batches stay as they are."""
        if self._trainer is None or self.trainer.state.stage not in _VIEW_STAGES:
            return batch
        images, labels = batch
        return self.views_of(images.float() / 255, labels)  # (N, C, H, W) in [0, 1]

    @abstractmethod
    def views_of(self, images: Tensor, labels: Tensor) -> Any:
        """The batch the steps get, made from (N, C, H, W) images in [0, 1] and their labels."""

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``ssl-lightning predict``: the encoder's features (N, F) of a batch of uint8 images, and
        their labels (-1 where there are none), for ``ssl_lightning.predictions.FeatureWriter``."""
        images, labels = batch
        return {"features": self.encoder(images.float() / 255), "labels": labels}

    def data_batch_size(self) -> int | None:
        """The data module's batch size, per process (None where it has none, or there is no data module)."""
        return getattr(getattr(self.trainer, "datamodule", None), "batch_size", None)

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        expected = self.image_shape
        if data is not None and hasattr(data, "num_channels") and (data.num_channels, data.image_size) != expected:
            raise ConfigError(
                f"the model expects {expected[0]}-channel images of side {expected[1]}, but the data has "
                f"{data.num_channels} channel(s) of side {data.image_size}; set the model's encoder in_channels/input_size to match"
            )

    def check_finite(self, loss: Tensor) -> None:
        """Notes the first non-finite training loss on the loss's device. Reading it at every step
        would make the host wait for the GPU; ``raise_if_diverged`` reads it where the host waits
        anyway (every ``log_every_n_steps`` steps, at epoch ends) and before any checkpoint is written."""
        loss = loss.detach().float()
        step = torch.full((), self.global_step, dtype=torch.float32, device=loss.device)
        epoch = torch.full((), self.current_epoch, dtype=torch.float32, device=loss.device)
        record = torch.stack([step, epoch, loss])  # (3,)
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full_like(record, float("nan"))
        first = torch.isnan(self._first_nonfinite[0]) & ~torch.isfinite(loss)
        self._first_nonfinite = torch.where(first, record, self._first_nonfinite)

    def raise_if_diverged(self) -> None:
        """Stops training if a training loss was NaN or infinite; checkpoints written so far hold
        finite weights (``on_save_checkpoint`` calls this before writing).

        Under DDP every process calls this at the same points (all of them log, end epochs and save
        together), and the first non-finite loss of any process stops them all: the records are
        gathered, so no process goes on alone to wait in a collective that the others left."""
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full((3,), float("nan"), device=self.device)
        records = gather(self._first_nonfinite[None]).tolist()  # (world_size, 3): (step, epoch, loss) per process
        diverged = [(rank, record) for rank, record in enumerate(records) if not math.isnan(record[0])]
        if diverged:
            rank, (step, epoch, loss) = min(diverged, key=lambda item: item[1][0])  # the earliest step
            where = f" in process {rank}" if len(records) > 1 else ""
            raise TrainingDivergedError(
                f"the training loss is {loss}{where} at step {int(step)} (epoch {int(epoch)}); training stopped and the "
                "checkpoints written so far are intact; lower model.init_args.optimizer.lr or check the data, then resume "
                "from the last checkpoint with --ckpt_path"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.raise_if_diverged()

    def on_train_epoch_end(self) -> None:
        self.raise_if_diverged()

    def configure_optimizers(self) -> dict:
        return optimizer_with_schedule(self, self, self.optimizer_config)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_diverged()  # never a checkpoint of non-finite weights
        add_encoder_entries(checkpoint, self.encoder.config, type(self).__name__)  # load_encoder rebuilds it alone

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_compatible(checkpoint, self)  # one line instead of Lightning's list of mismatched keys


class PretrainMethod(EncoderMethod):
    """Base of the self-supervised methods. A subclass adds its heads and implements ``compute_loss``.

    Batches arrive as ``(uint8 images (N, C, H, W), labels)``; after the transfer to the device,
    ``views`` makes the method's augmented views of every image (a ``ViewBatch``, one batch per
    view: an entry of ``default_views`` with ``copies`` n makes n), and the labels are never used for training.
    Logged: ``{train,val,test}/loss``, ``{train,val,test}/acc_top1``, ``/acc_top5`` and ``/acc_mean_pos``
    (val and test: means over the full batches, ``is_full_batch``), and the collapse monitors of
    view 1's embeddings (``StepOutput.monitored``, by default ``z1``) over each validation's full batches, ``val/embedding_std`` and ``val/rankme`` (``ssl_lightning.collapse``).
    """

    # True where z1 and z2 come from different networks: rank across the two views only.
    cross_view_ranking: ClassVar[bool] = False
    _full_batch_size = 0  # images in the first batch of the current validation or test epoch

    def __init__(self, **shared: Any) -> None:
        """
        Args:
            **shared: ``EncoderMethod``'s ``encoder``, ``optimizer`` and ``views`` (the methods
                themselves list them, for LightningCLI, ``help()`` and IDEs).
        """
        super().__init__(**shared)
        self.collapse_monitor = CollapseMonitor()

    def setup(self, stage: str) -> None:
        super().setup(stage)
        batch_size = self.data_batch_size()
        if batch_size is not None and batch_size < 2:  # at setup, not at the first step's loss (check_view_pair)
            raise ConfigError(f"{type(self).__name__} needs batches of at least 2 images (the other images of a batch "
                              f"are what each view is told apart from, or normalised over), got data.batch_size={batch_size}; "
                              "raise data.init_args.batch_size")
        if batch_size:  # each queue (MoCo's, NNCLR's, SwAV's) takes the global batch: fail now, not at the first enqueue
            for queue in (module for module in self.modules() if isinstance(module, KeyQueue)):
                queue.check_batch_size(batch_size * self.trainer.world_size)

    @abstractmethod
    def compute_loss(self, *views: Tensor) -> StepOutput:
        """The method's loss on its batches of views (each (N, C, S, S), in the order of
        ``default_views``; a two-view method takes ``x1, x2``), the embeddings to rank and the
        encoder features of view 1."""

    def views_of(self, images: Tensor, labels: Tensor) -> ViewBatch:
        return ViewBatch(self.views(images), labels, images)  # every image gets its own random draw in every view

    def global_crops(self, at_least: int = 2) -> int:
        """How many views are multi-crop's global crops: the leading views at the first view's side;
        fewer than ``at_least`` is a ``ConfigError`` (SwAV's and DINO's losses and ranking compare two)."""
        sides = [view_side(config, self.image_shape[1]) for config in self.view_configs]
        count = next((i for i, side in enumerate(sides) if side != sides[0]), len(sides))
        if count < at_least:
            raise ConfigError(f"{type(self).__name__} needs at least {at_least} global crops (views at the first view's side, "
                              f"first in the list), got {count} of {sides[0]} px; give the first view entry copies: 2")
        return count

    def hold_before_epoch(self, module: nn.Module, epoch: int) -> None:
        """Before ``epoch``, drops ``module``'s gradients (call it in ``on_before_optimizer_step``):
        it is neither updated nor decayed, as SwAV's prototypes and DINO's last layer at first."""
        if self.current_epoch < epoch:
            for p in module.parameters():
                p.grad = None

    def encode_views(self, views: Sequence[Tensor]) -> Tensor:
        """(V, N, F) encoder features of V batches of views, each at its own size (multi-crop's local
        crops are encoded small); views of one size go through the encoder together, as in SwAV's
        and DINO's code, so that their batch-norm statistics are shared."""
        features: list[Tensor] = []
        for _, run in itertools.groupby(views, key=lambda view: view.shape[-1]):
            run = list(run)
            features += self.encoder(torch.cat(run), resize=False).chunk(len(run))  # (N, F) each
        return torch.stack(features)

    def _shared_step(self, batch: ViewBatch, stage: str) -> StepOutput:
        out = self.compute_loss(*batch.views)
        if stage == "train":
            self.check_finite(out.loss)
        elif stage == "val":
            self.collapse_monitor.update(out.z1 if out.monitored is None else out.monitored)
        logged = {"loss": out.loss.detach(), **ranking_metrics(out.z1, out.z2, cross_view=self.cross_view_ranking)}
        per_step = stage == "train"  # train: a point per step; val: the epoch's mean
        for name, value in logged.items():
            self.log(
                f"{stage}/{name}",  # grouped by stage in TensorBoard
                value,
                on_step=per_step,
                on_epoch=not per_step,
                # Step metrics reach the bar through callbacks.progress.ProgressBar, without a read every step.
                prog_bar=not per_step and name in ("loss", "acc_top5"),
                batch_size=len(batch.images),
                sync_dist=not per_step,  # epoch means over all processes under DDP
            )
        return out

    def training_step(self, batch: ViewBatch, batch_idx: int) -> dict[str, Tensor]:
        out = self._shared_step(batch, "train")
        return {"loss": out.loss, "features": out.features.detach(), "labels": batch.labels}

    def validation_step(self, batch: ViewBatch, batch_idx: int) -> dict[str, Tensor]:
        """The loss and ranking metrics of a full batch (``is_full_batch``); the clean features of
        every image, for online evaluation (the kNN's queries)."""
        if self.is_full_batch(batch.labels, batch_idx):
            self._shared_step(batch, "val")
        return {"features": self.encoder(batch.images), "labels": batch.labels}

    def on_validation_epoch_end(self) -> None:
        if self.collapse_monitor.update_called:  # not where no batch was full
            for name, value in self.collapse_monitor.compute().items():  # over every process's embeddings
                self.log(f"val/{name}", value)
        self.collapse_monitor.reset()

    def test_step(self, batch: ViewBatch, batch_idx: int) -> None:
        """``ssl-lightning test``: the loss and ranking metrics on views of the test split's full batches."""
        if self.is_full_batch(batch.labels, batch_idx):
            self._shared_step(batch, "test")

    def is_full_batch(self, labels: Tensor, batch_idx: int) -> bool:
        """Whether a validation or test batch is as large as the epoch's first (the loader's batch
        size). The loss and the ranking metrics depend on the batch size (the number of negatives,
        of candidates), so their epoch means leave out a smaller last batch: the same images give
        the same numbers whatever remainder the batch size leaves (and a 1-image remainder, which
        has no negatives, does not stop the run)."""
        if batch_idx == 0:
            self._full_batch_size = len(labels)
        return len(labels) == self._full_batch_size


class MomentumPretrainMethod(PretrainMethod):
    """A method with momentum (EMA) copies of some of its modules: MoCo's key encoder, BYOL's target.

    Subclasses create targets with ``self.momentum_target(online)``. After every optimizer step
    (once per step, also under gradient accumulation) each target moves towards its online module
    with the momentum τ, which follows ``cosine_momentum`` from ``target_momentum`` to
    ``target_momentum_end`` over the run (constant when they are equal). τ is logged (``train/target_momentum``).
    """

    def __init__(self, target_momentum: float = 0.99, target_momentum_end: float | None = None, **shared: Any) -> None:
        """
        Args:
            target_momentum: τ at the first step.
            target_momentum_end: τ at the last step (None: constant ``target_momentum``).
            **shared: ``EncoderMethod``'s ``encoder``, ``optimizer`` and ``views`` (the methods
                themselves list them, for LightningCLI, ``help()`` and IDEs).
        """
        super().__init__(**shared)
        for tau in (target_momentum, target_momentum_end):
            if tau is not None and not 0 <= tau <= 1:
                raise ConfigError(f"target momentum must be in [0, 1], got {tau}")
        self.target_momentum = target_momentum
        self.target_momentum_end = target_momentum if target_momentum_end is None else target_momentum_end
        self._momentum_pairs: list[tuple[nn.Module, nn.Module]] = []  # (online, target); modules registered elsewhere

    def momentum_target(self, online: nn.Module) -> nn.Module:
        """A momentum (EMA) copy of ``online``, without gradients, that ``update_targets`` moves
        after every optimizer step."""
        target = momentum_copy(online)
        self._momentum_pairs.append((online, target))
        return target

    def current_target_momentum(self) -> float:
        """τ at the current step: ``cosine_momentum`` from ``target_momentum`` to ``target_momentum_end``."""
        return cosine_momentum(
            self.trainer.global_step, int(self.trainer.estimated_stepping_batches), self.target_momentum, self.target_momentum_end
        )

    def update_targets(self, tau: float) -> None:
        """Moves every target towards its online module: target = τ·target + (1-τ)·online."""
        for online, target in self._momentum_pairs:
            update_momentum(online, target, tau)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        tau = self.current_target_momentum()
        self.update_targets(tau)
        self.log("train/target_momentum", tau, on_step=True, on_epoch=False)
