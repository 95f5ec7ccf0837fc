"""Pretraining methods, each a LightningModule on ``PretrainMethod``."""

from ssl_lightning.methods.barlow_twins import BarlowTwins
from ssl_lightning.methods.base import MomentumPretrainMethod, PretrainMethod, StepOutput
from ssl_lightning.methods.byol import BYOL
from ssl_lightning.methods.moco import MoCo
from ssl_lightning.methods.simclr import SimCLR

__all__ = ["BYOL", "BarlowTwins", "MoCo", "MomentumPretrainMethod", "PretrainMethod", "SimCLR", "StepOutput"]
