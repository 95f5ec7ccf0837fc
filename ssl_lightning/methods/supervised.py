"""The supervised baseline: the same encoder, trained from scratch on labels with a linear classifier."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ssl_lightning.augment import SUPERVISED_VIEW, ViewConfig
from ssl_lightning.classification import check_classifier_data, classification_step
from ssl_lightning.data.labelled import LABELLED_EXAMPLE
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.errors import ConfigError
from ssl_lightning.methods.base import EncoderMethod
from ssl_lightning.optim import OptimizerConfig


class Supervised(EncoderMethod):
    """The supervised baseline: the encoder and a linear classifier trained on the labels.

    Encoder + ``nn.Linear`` (``classifier``) trained with cross-entropy on one weakly augmented
    view per image; validation and test see the images unaugmented. Logs ``{train,val,test}/loss``
    and ``/acc``. ``TransferClassifier`` is this with a pretrained encoder."""

    default_views: ClassVar[list[ViewConfig]] = [SUPERVISED_VIEW]  # one view per image
    task: ClassVar[str] = "the supervised baseline"  # names it in errors

    def __init__(
        self,
        num_classes: int = 10,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        """
        Args:
            num_classes: number of classes; the CLI takes it from the data module.
            encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
            optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method.
            views: the augmentations (``ViewConfig``), as for every method.
        """
        if num_classes is None:
            raise ConfigError(f"{self.task} needs labelled data, but num_classes is None (the data has no labels); "
                              f"give labelled data, {LABELLED_EXAMPLE}")
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.classifier = nn.Linear(self.encoder.out_dim, num_classes)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_classifier_data(self, self.task)

    def views_of(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if self.trainer.training:
            (images,) = self.views(images)  # (N, C, S, S), a random draw per image
        return images, labels

    def features(self, images: Tensor) -> Tensor:
        """(N, C, H, W) images in [0, 1] -> (N, F) the features the classifier reads."""
        return self.encoder(images)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> dict[str, Tensor]:
        x, labels = batch
        features = self.features(x)  # (N, F)
        loss = classification_step(self, self.classifier(features), labels, stage)
        if stage == "train":
            self.check_finite(loss)
        return {"loss": loss, "features": features.detach(), "labels": labels}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch, "test")
