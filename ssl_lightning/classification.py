"""What every classifier shares (linear probe, supervised baseline, transfer): cross-entropy and
accuracy, and the check that its data has its labels."""

from __future__ import annotations

import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy

from ssl_lightning.data.labelled import require_labels
from ssl_lightning.errors import ConfigError


def accuracy(scores: Tensor, labels: Tensor) -> float:
    """Share of rows of ``scores`` (N, C) whose highest-scoring class is the label (N,)."""
    return multiclass_accuracy(scores, labels.to(scores.device), num_classes=scores.shape[1], average="micro").item()


def classification_step(module: LightningModule, logits: Tensor, labels: Tensor, stage: str) -> Tensor:
    """Cross-entropy of ``logits`` (N, C) against ``labels`` (N,); logs ``{stage}/loss`` and
    ``{stage}/acc`` as epoch means weighted by batch size (so the epoch's accuracy is exact)."""
    loss = F.cross_entropy(logits, labels)
    accuracy = multiclass_accuracy(logits.detach(), labels, num_classes=logits.shape[1], average="micro")
    for name, value in (("loss", loss.detach()), ("acc", accuracy)):
        module.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels), sync_dist=True)
    return loss


def check_classifier_data(module: LightningModule, needed_by: str) -> None:
    """At a classifier's ``setup``, before any step: its data module (where it has one; plain
    loaders are the caller's business) has labels, of ``hparams.num_classes`` classes."""
    data = getattr(module.trainer, "datamodule", None)
    if data is None:
        return
    require_labels(data, needed_by)
    if data.num_classes != module.hparams.num_classes:
        raise ConfigError(f"the data has {data.num_classes} classes but the model num_classes={module.hparams.num_classes}; "
                          f"set model num_classes to {data.num_classes}")
