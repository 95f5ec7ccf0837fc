"""ssl-lightning: self-supervised visual representation learning on PyTorch Lightning."""

from ssl_lightning.encoder import Encoder, load_encoder

__all__ = ["Encoder", "load_encoder"]
__version__ = "0.1.0"
