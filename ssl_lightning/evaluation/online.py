"""Online evaluation during pretraining: a linear probe trained alongside, and kNN accuracy."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy

from ssl_lightning.classification import accuracy
from ssl_lightning.data.label_budget import seeded_subset
from ssl_lightning.data.labelled import describe, is_labelled, require_labels
from ssl_lightning.data.subset import LabelledSubset
from ssl_lightning.distributed import gather
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.features import loader_features
from ssl_lightning.evaluation.knn import knn_accuracy
from ssl_lightning.evaluation.linear_probe import zero_linear

PROBE_METRIC, KNN_METRIC = "val/online_probe_acc", "val/knn_acc"


class OnlineEvaluation(Callback):
    """Trains a linear classifier on encoder features (detached: it never changes the encoder's
    gradients), and at the end of each validation epoch logs

    - ``val/online_probe_acc``: that classifier's accuracy on the validation images;
    - ``val/knn_acc``: weighted kNN (``knn.py``) of the validation images' features among the
      features of labelled training images, as InstDisc's memory bank does. Both sides are clean
      images through the encoder in eval mode (``features.loader_features``), as the offline kNN
      of ``ssl-lightning evaluate`` sees them: the same number for the same encoder, bank and
      queries (``knn_k``, ``knn_temperature``). It is the metric the CLI's ``best-*`` checkpoint
      is chosen by where the data has labels (``callbacks.checkpointing.RunCheckpoint``).

    Where the labels come from:

    - labelled training data, no ``eval_data``: the classifier trains on the features of every
      training batch (of the augmented view; ``training_step`` returns them); at each validation
      epoch end the encoder encodes up to ``eval_images`` of the labelled training images (a
      seeded subset, the same all run), the kNN bank; the queries are every validation image
      (``validation_step`` returns their clean features). The method's ``training_step`` and
      ``validation_step`` return ``{"loss", "features", "labels"}`` (``EncoderMethod``). Under DDP
      the step features of all processes are gathered and every process encodes the whole bank,
      so every process trains the same classifier and computes the same kNN accuracy.
    - ``eval_data``, a separate labelled data module (for instance STL-10's labelled train split
      while pretraining on its unlabelled split), or, without one, the training data module
      itself where it pretrains on other images than its labelled ones (its ``labelled_set`` is
      not its ``train_set``): at each validation epoch end the encoder (in eval mode, no
      gradients) encodes up to ``eval_images`` of the module's labelled training images, the kNN
      bank and the classifier's training set (``eval_probe_steps`` full-batch Adam steps,
      continuing from the last validation), and up to ``eval_images`` of its validation images,
      the queries. Every process computes the same features, hence the same classifier.
    - unlabelled training data and no ``eval_data``: online evaluation turns itself off and says
      so in one logged line.

    Labels reach only this callback, never the method's loss.

    Args:
        lr: learning rate of the classifier's Adam optimizer.
        knn_k: the kNN's number of neighbours (InstDisc: 200).
        knn_temperature: the temperature of the kNN's weighted vote (InstDisc: 0.1).
        eval_data: a labelled data module to evaluate on instead of the training data's labels;
            its images need the training data's channels (the encoder resizes them to its size).
        eval_images: at most this many labelled training images in the kNN bank (and, with
            ``eval_data``, as many of its validation images as queries): a seeded subset, the
            same all run; the cost of each validation.
        eval_probe_steps: the classifier's full-batch Adam steps on ``eval_data``'s features per validation.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        eval_data: LightningDataModule | None = None,
        eval_images: int = 5000,
        eval_probe_steps: int = 100,
    ) -> None:
        for name, value in (("eval_images", eval_images), ("eval_probe_steps", eval_probe_steps)):
            if value < 1:
                raise ConfigError(f"online evaluation {name} must be >= 1, got {value}")
        self.lr = lr
        self.knn_k = knn_k
        self.knn_temperature = knn_temperature
        self.eval_data = eval_data
        self.eval_images = eval_images
        self.eval_probe_steps = eval_probe_steps
        self.mode: Literal["training batches", "eval data", "off"] | None = None  # chosen at setup
        self.classifier: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.val_accuracy: MulticlassAccuracy | None = None
        self._pending_state: dict[str, Any] | None = None
        self._trained = False  # whether the classifier has had a training batch (training-batches mode)
        self._val: list[tuple[Tensor, Tensor]] = []  # (features, labels) of the validation steps
        self._bank_loader: DataLoader | None = None  # clean labelled training images (training-batches mode)
        self._eval_loaders: tuple[DataLoader, DataLoader] | None = None  # eval_data's (bank, queries)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        encoder = getattr(pl_module, "encoder", None)
        if encoder is None:
            raise ConfigError("online evaluation needs a model with an `encoder` (ssl-lightning's methods have one)")
        data, evaluated = trainer.datamodule, self.eval_data
        if evaluated is not None:
            require_labels(evaluated, "online evaluation's eval_data", option="--online_eval.eval_data")
        elif is_labelled(data) and getattr(data, "labelled_set", data.train_set) is not data.train_set:
            evaluated = data  # it pretrains on other images than its labelled ones (like STL-10): evaluate on those
        elif not self.evaluates(data):
            self._turn_off(trainer)
            return
        if evaluated is None:
            self.mode, num_classes = "training batches", data.num_classes
        else:
            self.mode, num_classes = "eval data", evaluated.num_classes
            self._eval_loaders = self._eval_loaders or self._prepare_eval_data(trainer, evaluated, encoder.config["in_channels"])
        if self.classifier is None:
            # No random numbers drawn: a run with this callback trains the encoder exactly as without.
            self.classifier = zero_linear(encoder.out_dim, num_classes)
            self.optimizer = torch.optim.Adam(self.classifier.parameters(), lr=self.lr)
            # Features are gathered from all processes first: no second sync inside the metric.
            self.val_accuracy = MulticlassAccuracy(num_classes, average="micro", sync_on_compute=False)
        self.classifier.to(pl_module.device)
        self.val_accuracy.to(pl_module.device)
        if self._pending_state is not None:
            self._apply_state(self._pending_state)
            self._pending_state = None

    def evaluates(self, data: LightningDataModule | None) -> bool:
        """Whether this callback logs its metrics in a run on the training data ``data``."""
        return self.eval_data is not None or is_labelled(data)

    def _turn_off(self, trainer: Trainer) -> None:
        for checkpoint in trainer.checkpoint_callbacks:
            if getattr(checkpoint, "monitor", None) in (PROBE_METRIC, KNN_METRIC):
                raise ConfigError(f"checkpoint.monitor is {checkpoint.monitor}, which online evaluation logs, but the training data "
                                  f"has no labels and online_eval.eval_data is not set; monitor val/loss, or set "
                                  f"--online_eval.eval_data to a labelled data module")
        if self.mode != "off":  # one line per run, not per stage
            rank_zero_info(f"online evaluation is off: the training data {describe(trainer.datamodule)} has no labels; set "
                           f"--online_eval.eval_data to a labelled data module for {PROBE_METRIC} and {KNN_METRIC}")
        self.mode = "off"

    def _prepare_eval_data(self, trainer: Trainer, data: LightningDataModule, channels: int) -> tuple[DataLoader, DataLoader]:
        """Loaders of up to ``eval_images`` of ``data``'s labelled training images and of its validation images."""
        if data.num_channels != channels:
            raise ConfigError(f"online_eval.eval_data {describe(data)} has {data.num_channels}-channel images but the encoder "
                              f"takes {channels}; give evaluation images with the training data's channels")
        if data is not trainer.datamodule:  # Lightning prepares and sets up the training data itself
            if trainer.local_rank == 0:
                data.prepare_data()
            trainer.strategy.barrier()
            data.setup("fit")
        return tuple(data.eval_dataloader(self._capped(dataset)) for dataset in (data.labelled_set, data.val_set))

    def _capped(self, dataset: Dataset) -> Dataset:
        if len(dataset) <= self.eval_images:
            return dataset
        return LabelledSubset(dataset, seeded_subset(len(dataset), self.eval_images).sort().values)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.mode != "training batches":
            return
        loss = self._train_classifier(*self._features(outputs))
        self._trained = True
        pl_module.log("train/online_probe_loss", loss, on_step=True, on_epoch=False)

    def _train_classifier(self, features: Tensor, labels: Tensor) -> Tensor:
        """One Adam step of the classifier on (N, D) features and (N,) labels; the loss, detached."""
        with torch.enable_grad():
            loss = F.cross_entropy(self.classifier(features), labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.sanity_checking or self.mode != "training batches":
            return
        features, labels = self._features(outputs)
        self.val_accuracy.update(self.classifier(features), labels)
        self._val.append((features, labels))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.mode == "eval data":
            with torch.inference_mode(False):  # Lightning validates in inference mode; the classifier trains here
                probe, knn = self._evaluate_on_eval_data(trainer, pl_module)
            pl_module.log(PROBE_METRIC, probe, sync_dist=True)  # equal on all processes: each computed the same
            pl_module.log(KNN_METRIC, knn, sync_dist=True)
            return
        if not self._val:
            return
        if self._trained:  # the classifier has nothing to report before its first training batch
            pl_module.log(PROBE_METRIC, self.val_accuracy.compute(), sync_dist=True)  # equal on all processes
        bank, bank_labels = self._encode(trainer, pl_module, self._training_bank(trainer.datamodule))
        queries, labels = (torch.cat(parts) for parts in zip(*self._val))
        knn = knn_accuracy(bank, bank_labels, queries, labels, self.classifier.out_features, self.knn_k, self.knn_temperature)
        pl_module.log(KNN_METRIC, knn, sync_dist=True)
        self.val_accuracy.reset()
        self._val.clear()

    def _training_bank(self, data: LightningDataModule) -> DataLoader:
        """Clean batches of up to ``eval_images`` of ``data``'s labelled training images (made at the
        first validation: the training data is set up by then, whatever the stage)."""
        if self._bank_loader is None:
            self._bank_loader = data.eval_dataloader(self._capped(data.labelled_set))
        return self._bank_loader

    def _encode(self, trainer: Trainer, pl_module: LightningModule, loader: DataLoader) -> tuple[Tensor, Tensor]:
        """(N, D) features and (N,) labels of a loader's clean images on the module's device: the
        encoder in eval mode, no gradients, in the run's precision (bf16 on GPUs where it trains in it)."""
        with trainer.strategy.precision_plugin.forward_context():
            features, labels = loader_features(pl_module.encoder, loader, pl_module.device, desc=None)
        return features.to(pl_module.device), labels.to(pl_module.device)

    def _evaluate_on_eval_data(self, trainer: Trainer, pl_module: LightningModule) -> tuple[float, float]:
        """(probe accuracy, kNN accuracy) on ``eval_data``'s validation images, after the
        classifier's ``eval_probe_steps`` on its labelled training images."""
        (bank, bank_labels), (queries, labels) = (self._encode(trainer, pl_module, loader) for loader in self._eval_loaders)
        for _ in range(self.eval_probe_steps):
            self._train_classifier(bank, bank_labels)
        with torch.no_grad():
            probe = accuracy(self.classifier(queries), labels)
        return probe, knn_accuracy(bank, bank_labels, queries, labels, self.classifier.out_features, self.knn_k, self.knn_temperature)

    def _features(self, outputs: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(outputs, dict) or "features" not in outputs or "labels" not in outputs:
            raise ConfigError("online evaluation needs training_step/validation_step to return a dict with "
                              "'features' and 'labels' (as ssl-lightning's methods do)")
        # Under DDP every process sees the features of all: the probes and kNN queries stay identical.
        return gather(outputs["features"].detach().float()), gather(outputs["labels"])

    def state_dict(self) -> dict[str, Any]:
        if self.classifier is None:
            return {}
        return {"classifier": self.classifier.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.classifier is None:  # restored before setup: applied there
            self._pending_state = state_dict
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._trained = True
