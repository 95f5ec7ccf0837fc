"""Pretraining methods, each a LightningModule on ``PretrainMethod``, and the supervised baseline."""

from ssl_lightning.methods.autoencoder import Autoencoder
from ssl_lightning.methods.barlow_twins import BarlowTwins
from ssl_lightning.methods.base import EncoderMethod, MomentumPretrainMethod, PretrainMethod, StepOutput, ViewBatch
from ssl_lightning.methods.byol import BYOL
from ssl_lightning.methods.dino import DINO
from ssl_lightning.methods.moco import MoCo
from ssl_lightning.methods.moco_v3 import MoCoV3
from ssl_lightning.methods.nnclr import NNCLR
from ssl_lightning.methods.simclr import SimCLR
from ssl_lightning.methods.simsiam import SimSiam
from ssl_lightning.methods.supervised import Supervised
from ssl_lightning.methods.swav import SwAV
from ssl_lightning.methods.vicreg import VICReg

# What `--model.class_path` (or `model: class_path:` in a config) accepts by its short name.
METHODS = ("SimCLR", "MoCo", "BYOL", "BarlowTwins", "VICReg", "SimSiam", "MoCoV3", "NNCLR", "SwAV", "DINO", "Autoencoder", "Supervised")

__all__ = [
    "Autoencoder", "BYOL", "DINO", "METHODS", "BarlowTwins", "EncoderMethod", "MoCo", "MoCoV3", "MomentumPretrainMethod", "NNCLR",
    "PretrainMethod", "SimCLR", "SimSiam", "StepOutput", "Supervised", "SwAV", "VICReg", "ViewBatch",
]
