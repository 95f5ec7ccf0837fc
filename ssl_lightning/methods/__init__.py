"""Pretraining methods, each a LightningModule on ``PretrainMethod``."""

from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.methods.simclr import SimCLR

__all__ = ["PretrainMethod", "SimCLR", "StepOutput"]
