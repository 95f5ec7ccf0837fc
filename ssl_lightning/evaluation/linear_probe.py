"""Logistic regression on frozen features: the linear evaluation protocol of the SSL papers.

The probe sees cached features only (``ssl_lightning.evaluation.features``), so the encoder cannot
change. It minimises cross-entropy + weight_decay/2 * ||W||^2 (the L2-regularised logistic
regression that SimCLR's and BYOL's linear evaluations use), full-batch with L-BFGS by default or
with AdamW in mini-batches as in the UvA tutorial.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Literal

import torch
from pytorch_lightning import LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_lightning.classification import classification_step
from ssl_lightning.data.labelled import LABELLED_EXAMPLE, require_label_values
from ssl_lightning.errors import ConfigError


def zero_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """An ``nn.Linear`` with zero weights and bias, made without drawing from the global RNG (so a
    probe created beside a training run leaves the run's random numbers as they were). Logistic
    regression is convex: a zero start loses nothing."""
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws random numbers
        linear = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class LinearProbe(LightningModule):
    """One ``nn.Linear`` on standardised features; batches are ``(features (N, D), labels (N,))``.

    ``standardize_with(train_features)`` sets the per-dimension mean and std, kept as buffers so a
    saved probe applies them itself. Weights start at zero (``zero_linear``). Logs ``train/acc``, ``val/acc`` and ``test/acc`` (and ``/loss``).
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        optimizer: Literal["lbfgs", "adamw"] = "lbfgs",
        lr: float | None = None,
        weight_decay: float = 1e-4,
        max_iter: int = 100,
    ) -> None:
        """
        Args:
            in_dim: feature dimension.
            num_classes: number of classes.
            optimizer: "lbfgs" (full batch, ``max_iter`` iterations per step) or "adamw".
            lr: step size (None: 1 for L-BFGS with its line search, 1e-3 for AdamW).
            weight_decay: L2 penalty on the weights, in the loss, for both optimizers.
            max_iter: L-BFGS iterations per training step.
        """
        super().__init__()
        if num_classes is None:
            raise ConfigError("the linear probe needs labelled data, but num_classes is None (the data has no labels); "
                              f"probe the features of a labelled data module, {LABELLED_EXAMPLE}")
        if optimizer not in ("lbfgs", "adamw"):
            raise ConfigError(f"probe optimizer must be 'lbfgs' or 'adamw', got {optimizer!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False  # the step is taken below, so train/acc is the post-step one
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.linear = zero_linear(in_dim, num_classes)

    @torch.no_grad()
    def standardize_with(self, features: Tensor) -> LinearProbe:
        """Sets the per-dimension mean and standard deviation that ``forward`` standardises
        features with to those of ``features`` (N, D); returns the probe."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp_min(1e-6))  # constant dimensions stay 0
        return self

    def standardize(self, features: Tensor) -> Tensor:
        """(N, D) features shifted and scaled by the ``standardize_with`` statistics."""
        return (features - self.feature_mean) / self.feature_std

    def forward(self, features: Tensor) -> Tensor:
        """(N, D) features -> (N, num_classes) logits."""
        return self.linear(self.standardize(features))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        features, labels = batch
        optimizer = self.optimizers()
        # Once a step, not in the closure that L-BFGS calls up to max_iter times: an (N, D) copy
        # each call made a full-batch fit on 55,000 features hold gigabytes.
        standardized = self.standardize(features)

        def objective() -> Tensor:
            optimizer.zero_grad()
            logits = self.linear(standardized)  # (N, C)
            loss = nn.functional.cross_entropy(logits, labels) + self.hparams.weight_decay / 2 * self.linear.weight.square().sum()
            self.manual_backward(loss)
            return loss

        optimizer.step(closure=objective)
        with torch.no_grad():
            classification_step(self, self(features), labels, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        classification_step(self, self(batch[0]), batch[1], "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        classification_step(self, self(batch[0]), batch[1], "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "lbfgs":
            return torch.optim.LBFGS(self.linear.parameters(), lr=hp.lr or 1.0, max_iter=hp.max_iter, line_search_fn="strong_wolfe")
        return torch.optim.AdamW(self.linear.parameters(), lr=hp.lr or 1e-3, weight_decay=0.0)


def feature_loader(
    features: Tensor, labels: Tensor, batch_size: int | None = None, shuffle: bool = False
) -> DataLoader:
    """Batches of (features, labels); ``batch_size=None`` gives the whole set as one batch."""
    if batch_size is None:
        return DataLoader([(features, labels)], batch_size=None)  # one ready batch: no collating of N rows
    return DataLoader(TensorDataset(features, labels), batch_size=batch_size, shuffle=shuffle)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO banners (devices, tips, "fit stopped") and its pytree deprecation warning
    off while in the block, or in a function decorated with ``@quiet_lightning()`` (code that
    builds one Trainer per fit); the log level and warnings filters as they were afterwards."""
    logger = logging.getLogger("pytorch_lightning")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning 2.6 under torch 2.14
            yield
    finally:
        logger.setLevel(level)


def quiet_trainer(**kwargs) -> Trainer:
    """A Trainer for short in-process fits: no logger, checkpoints, progress bar or summary."""
    defaults = dict(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    return Trainer(**{**defaults, **kwargs})


def fit_linear_probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    num_classes: int,
    weight_decay: float,
    optimizer: Literal["lbfgs", "adamw"] = "lbfgs",
    max_epochs: int | None = None,
    batch_size: int = 256,
) -> tuple[LinearProbe, float]:
    """A probe trained on ``train`` = (features, labels), and its accuracy on ``val``.

    L-BFGS runs full-batch for ``max_epochs`` steps (default 3, i.e. up to 300 iterations); AdamW
    runs ``max_epochs`` epochs (default 100) of shuffled ``batch_size`` batches.
    """
    for _, labels in (train, val):
        require_label_values(labels, "the linear probe")
    probe = LinearProbe(train[0].shape[1], num_classes, optimizer=optimizer, weight_decay=weight_decay).standardize_with(train[0])
    full_batch = optimizer == "lbfgs"
    with quiet_lightning():
        trainer = quiet_trainer(max_epochs=max_epochs or (3 if full_batch else 100))
        trainer.fit(
            probe,
            feature_loader(*train, batch_size=None if full_batch else batch_size, shuffle=not full_batch),
            feature_loader(*val, batch_size=None),
        )
    return probe, trainer.callback_metrics["val/acc"].item()
