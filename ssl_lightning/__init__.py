"""ssl-lightning: self-supervised visual representation learning on PyTorch Lightning."""

from ssl_lightning.encoder import Encoder, load_encoder
from ssl_lightning.shipped import shipped_checkpoints

__all__ = ["Encoder", "load_encoder", "shipped_checkpoints"]
__version__ = "0.1.0"
