"""What a run shows in TensorBoard beyond its scalars: pairs of views, an autoencoder's
reconstructions, the embedding projector, and the HParams row that lines runs up in one table."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid

from ssl_lightning.augment import describe_view
from ssl_lightning.data.labelled import is_labelled
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.features import extract_features
from ssl_lightning.evaluation.online import KNN_METRIC, PROBE_METRIC
from ssl_lightning.methods.base import ViewBatch


class LogViewPairs(Callback):
    """Logs a grid of the augmented views (image n's views side by side, each made by its own
    view pipeline: view 1, view 2, ...) at the first validation, so one can see what the network is
    asked to match; the text ``views/configs`` says what sets each view apart. Views smaller than
    the first (multi-crop) are shown enlarged to its side.

    Args:
        num_pairs: how many images' views to show.
    """

    def __init__(self, num_pairs: int = 16) -> None:
        self.num_pairs = num_pairs
        self._done = False

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # Only pretraining methods have views to show (the supervised baseline validates on plain images).
        if self._done or batch_idx != 0 or not isinstance(trainer.logger, TensorBoardLogger) or not isinstance(batch, ViewBatch):
            return
        side = batch.views[0].shape[-1]
        shown = [F.interpolate(v[: self.num_pairs].float(), size=(side, side), mode="nearest") for v in batch.views]
        per_image = torch.stack(shown, dim=1).flatten(0, 1)  # (n * views, C, S, S): image 1's views, image 2's, ...
        columns = len(shown) * max(1, 8 // len(shown))  # whole images per grid row
        grid = make_grid(per_image.detach().cpu(), nrow=columns, padding=2, pad_value=1.0)
        trainer.logger.experiment.add_image("views/pairs", grid, global_step=trainer.global_step)
        legend = " | ".join(f"view {v + 1}: {describe_view(config, pl_module.views.image_size)}" for v, config in enumerate(pl_module.views.configs))
        trainer.logger.experiment.add_text("views/configs", legend, global_step=trainer.global_step)
        self._done = True


class LogReconstructions(Callback):
    """At every validation, logs a grid (``val/reconstructions``) of the first ``num_images``
    images of the first batch (first row: the method's view of them, what its loss compares with),
    the encoder's inputs where they differ (a denoising autoencoder's corrupted images) and the
    reconstructions (last row), for methods that reconstruct: those with ``reconstruct(images) ->
    (inputs, reconstructions)``, as ``Autoencoder``. Other methods log nothing.

    Args:
        num_images: how many images to show (0: none).
    """

    def __init__(self, num_images: int = 16) -> None:
        if num_images < 0:
            raise ConfigError(f"reconstructions num_images must be >= 0, got {num_images}")
        self.num_images = num_images

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        reconstruct = getattr(pl_module, "reconstruct", None)
        if (reconstruct is None or not self.num_images or batch_idx != 0 or dataloader_idx != 0
                or not isinstance(trainer.logger, TensorBoardLogger) or not isinstance(batch, ViewBatch)):
            return
        images = batch.views[0][: self.num_images]  # (n, C, S, S)
        inputs, reconstructions = reconstruct(images)
        rows = [images, reconstructions] if torch.equal(inputs, images) else [images, inputs, reconstructions]
        grid = make_grid(torch.cat(rows).float().cpu(), nrow=len(images), padding=2, pad_value=1.0)
        trainer.logger.experiment.add_image("val/reconstructions", grid, global_step=trainer.global_step)


class EmbeddingProjector(Callback):
    """At the end of training, logs the encoder features of the first ``num_images`` validation
    images to TensorBoard's Projector (PCA, t-SNE, UMAP in the browser), with the images as
    sprites and, where the data has labels, their class names as metadata.

    Args:
        num_images: how many validation images to embed (0: none).
    """

    def __init__(self, num_images: int = 1000) -> None:
        if num_images < 0:
            raise ConfigError(f"projector num_images must be >= 0, got {num_images}")
        self.num_images = num_images

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = getattr(trainer, "datamodule", None)
        val_set = getattr(data, "val_set", None)  # ssl-lightning's data modules' validation images
        if not self.num_images or not trainer.is_global_zero or not isinstance(trainer.logger, TensorBoardLogger) or val_set is None:
            return
        images, labels = data.take(val_set, self.num_images)
        features = extract_features(pl_module.encoder, images, batch_size=256, device=pl_module.device, desc="projector")  # (N, D)
        metadata = data.class_names(labels) if is_labelled(data) else None  # unlabelled: the points and their pictures
        trainer.logger.experiment.add_embedding(features, metadata=metadata, label_img=images.float() / 255,
                                                global_step=trainer.global_step, tag="val_features")


# The HParams tab's metric columns, the same in every run (a run leaves blank what it does not log),
# so runs of different methods line up in one table: the methods' validation metrics, the
# classifiers' accuracy, and online evaluation's.
HPARAMS_METRICS = ("val/loss", "val/acc", "val/acc_top1", "val/acc_top5", "val/acc_mean_pos", "val/rankme", KNN_METRIC, PROBE_METRIC)


class HParamsSummary(Callback):
    """At the start of training, writes the run's method and hyperparameters (the logger's: the
    model's, the data's, the effective learning rate) to TensorBoard's HParams tab, with the
    metric columns ``HPARAMS_METRICS``, so runs can be compared in one table. TensorBoard fills
    each column with the last value of the scalar of that name: the run's latest validation, also
    for a run stopped early. (Lightning's ``log_hyperparams(params, metrics)`` would write each
    metric again, as a scalar point of its own.)"""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        for summary in hparams_summaries(type(pl_module).__name__, logger.hparams):
            logger.experiment.file_writer.add_summary(summary)


def hparams_summaries(method: str, params: Mapping[str, Any]) -> tuple[Summary, ...]:
    """The HParams tab's summaries of a run of ``method`` with hyperparameters ``params``: the
    experiment (its columns: every hyperparameter of every method and data module,
    ``hparam_columns``, and the metrics ``HPARAMS_METRICS``) and the run's row (the metrics'
    values are not written). TensorBoard takes the columns from one run's experiment, so every run
    declares them all."""
    values = tensorboard_hparams({"method": method, **params})
    metrics = dict.fromkeys(HPARAMS_METRICS, 0.0)
    experiment, _, _ = hparams({**hparam_columns(), **values}, metrics)
    _, start, end = hparams(values, metrics)
    return experiment, start, end


def hparam_columns() -> dict[str, bool | int | float | str]:
    """Every hyperparameter a run can log, with a default value of its type: the arguments of every
    method and data module the CLI knows by name, flattened as ``tensorboard_hparams`` does."""
    import ssl_lightning.data
    import ssl_lightning.methods

    classes = [getattr(ssl_lightning.methods, name) for name in ssl_lightning.methods.METHODS]
    classes += [ssl_lightning.data.ImageDataModule] + [getattr(ssl_lightning.data, name) for name in ssl_lightning.data.DATA_MODULES]
    columns: dict[str, Any] = {"method": "", "effective_lr": 0.0, "global_batch_size": 0}
    for cls in classes:
        defaults = {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}
        columns.update({name: value for name, value in tensorboard_hparams(defaults).items() if name not in columns})
    return columns


def tensorboard_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``params`` as the HParams tab takes them: nested mappings and dataclasses flattened to
    ``outer/inner`` names, values other than numbers, booleans and strings as their text, names
    starting with ``_`` (LightningCLI's bookkeeping, ``_instantiator``) left out."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        if str(key).startswith("_"):
            continue
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, Mapping):
            flat.update(tensorboard_hparams(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
