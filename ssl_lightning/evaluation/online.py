"""Online evaluation during pretraining: a linear probe trained alongside, and kNN accuracy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ssl_lightning.distributed import gather
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.knn import knn_accuracy
from ssl_lightning.evaluation.linear_probe import zero_linear


class OnlineEvaluation(Callback):
    """Trains a linear classifier on the detached encoder features of every training batch (so
    it never changes the encoder's gradients), and at the end of each validation epoch logs

    - ``val_online_probe_acc``: that classifier's accuracy on the validation images;
    - ``val_knn_acc``: weighted kNN (``knn.py``) of the validation images' features among the
      features of the last ``bank_size`` training images, as InstDisc's memory bank does.

    The method's ``training_step``/``validation_step`` return ``{"loss", "features", "labels"}``
    (``EncoderMethod``); training features are of the augmented view, validation features of the
    unaugmented images. Labels reach only this callback, never the method's loss. Under DDP the
    features of all processes are gathered, so every process trains the same classifier.

    Args:
        lr: learning rate of the classifier's Adam optimizer.
        bank_size: how many recent training features the kNN votes among.
        knn_k, knn_temperature: the kNN's neighbours and vote temperature (InstDisc: 200, 0.1).
    """

    def __init__(self, lr: float = 1e-3, bank_size: int = 20000, knn_k: int = 200, knn_temperature: float = 0.1) -> None:
        if bank_size < 1:
            raise ConfigError(f"online evaluation bank_size must be >= 1, got {bank_size}")
        self.lr = lr
        self.bank_size = bank_size
        self.knn_k = knn_k
        self.knn_temperature = knn_temperature
        self.classifier: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.val_accuracy: MulticlassAccuracy | None = None
        self._pending_state: dict[str, Any] | None = None
        self._bank: list[tuple[Tensor, Tensor]] = []  # (features, labels) of recent training batches
        self._val: list[tuple[Tensor, Tensor]] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        num_classes = getattr(trainer.datamodule, "num_classes", None)
        encoder = getattr(pl_module, "encoder", None)
        if num_classes is None or encoder is None:
            raise ConfigError("online evaluation needs a data module with `num_classes` and a model with an `encoder` "
                              "(ssl-lightning's data modules and methods have both)")
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

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        features, labels = self._features(outputs)
        with torch.enable_grad():
            loss = F.cross_entropy(self.classifier(features), labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self._bank.append((features, labels))
        while sum(len(f) for f, _ in self._bank) - len(self._bank[0][0]) >= self.bank_size:
            self._bank.pop(0)
        pl_module.log("train_online_probe_loss", loss.detach(), on_step=True, on_epoch=False)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.sanity_checking:
            return
        features, labels = self._features(outputs)
        self.val_accuracy.update(self.classifier(features), labels)
        self._val.append((features, labels))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._val:
            return
        if self._bank:  # nothing to report before the first training batch
            pl_module.log("val_online_probe_acc", self.val_accuracy.compute(), sync_dist=True)  # equal on all processes
            bank, bank_labels = (torch.cat(parts)[-self.bank_size :] for parts in zip(*self._bank))
            queries, labels = (torch.cat(parts) for parts in zip(*self._val))
            knn = knn_accuracy(bank, bank_labels, queries, labels, self.classifier.out_features, self.knn_k, self.knn_temperature)
            pl_module.log("val_knn_acc", knn, sync_dist=True)
        self.val_accuracy.reset()
        self._val.clear()

    def _features(self, outputs: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(outputs, dict) or "features" not in outputs or "labels" not in outputs:
            raise ConfigError("online evaluation needs training_step/validation_step to return a dict with "
                              "'features' and 'labels' (as ssl-lightning's methods do)")
        # Under DDP every process sees the features of all: the probes and kNN banks stay identical.
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
