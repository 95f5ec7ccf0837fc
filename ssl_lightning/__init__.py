"""ssl-lightning: self-supervised visual representation learning on PyTorch Lightning."""

import importlib
from typing import Any

__all__ = ["Autoencoder", "BYOL", "DINO", "BarlowTwins", "Encoder", "EncoderConfig", "MoCo", "MoCoV3", "NNCLR", "OptimizerConfig",
           "SimCLR", "SimSiam", "Supervised", "SwAV", "VICReg", "load_encoder", "shipped_checkpoints"]
__version__ = "0.1.0"

# Loaded on first use, so that `import ssl_lightning.cli` (``ssl-lightning --help``) needs no torch.
_EXPORTS = {**dict.fromkeys(["Encoder", "EncoderConfig", "load_encoder"], "ssl_lightning.encoder"),
            "OptimizerConfig": "ssl_lightning.optim", "shipped_checkpoints": "ssl_lightning.shipped",
            **dict.fromkeys(["SimCLR", "MoCo", "BYOL", "BarlowTwins", "VICReg", "SimSiam", "MoCoV3", "NNCLR", "SwAV", "DINO", "Autoencoder",
                             "Supervised"], "ssl_lightning.methods")}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ssl_lightning' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
