"""The encoder: a backbone behind an input adapter, and ``load_encoder`` to get it from a checkpoint.

The encoder takes float images in [0, 1] at the data's own size, shaped (N, C, H, W), resizes them
to the size it was trained at and normalises them itself, so features cannot be computed from
wrongly prepared inputs. It returns (N, D) features.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.backbones import build_backbone
from ssl_lightning.checkpoint import ENCODER_CONFIG_KEY, read_checkpoint
from ssl_lightning.errors import ConfigError
from ssl_lightning.shipped import ENCODER_PREFIX, resolve


class Encoder(nn.Module):
    """Backbone with its input normalisation and resizing; ``config`` rebuilds it (``Encoder(**config)``)."""

    def __init__(
        self,
        backbone: str = "resnet18",
        width: int = 64,
        small_images: bool = True,
        in_channels: int = 1,
        input_size: int = 28,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
    ) -> None:
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise ConfigError(f"mean and std need one value per input channel ({in_channels}), got {list(mean)} and {list(std)}")
        self.config: dict[str, Any] = {
            "backbone": backbone,
            "width": width,
            "small_images": small_images,
            "in_channels": in_channels,
            "input_size": input_size,
            "mean": [float(m) for m in mean],
            "std": [float(s) for s in std],
        }
        self.backbone = build_backbone(backbone, in_channels=in_channels, small_images=small_images, width=width)
        self.out_dim: int = self.backbone.out_dim
        self.register_buffer("mean", torch.tensor(self.config["mean"]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(self.config["std"]).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, H, W) float images in [0, 1] -> (N, D) features, in the encoder's dtype."""
        channels, size = self.config["in_channels"], self.config["input_size"]
        if images.dim() != 4 or images.shape[1] != channels:
            raise ConfigError(f"the encoder expects images shaped (N, {channels}, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ConfigError(f"the encoder expects float images in [0, 1], got dtype {images.dtype}; divide by 255 first")
        images = images.to(self.mean.dtype)  # computed in the encoder's own dtype (load_encoder's dtype=)
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        images = (images - self.mean) / self.std
        if self.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last):  # see EncoderMethod's channels_last
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)  # (N, D)


def load_encoder(
    source: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None, trusted: bool = False
) -> Encoder:
    """The encoder of a checkpoint, in eval mode: a shipped name (``shipped_checkpoints()`` lists
    them; checked against the manifest's sha256 first) or the path of a checkpoint written by any
    ssl-lightning method, full or encoder-only.

    ``device`` and ``dtype`` (a floating type) move and cast it; by default it is float32 on the CPU.
    The file is read with ``torch.load(weights_only=True)``: tensors and plain values only. A file
    that needs Python objects unpickled is refused unless ``trusted=True``.
    """
    if dtype is not None and not dtype.is_floating_point:
        raise ConfigError(f"load_encoder's dtype must be a floating type such as torch.bfloat16, got {dtype}")
    checkpoint = read_checkpoint(resolve(source), trusted=trusted)
    encoder = Encoder(**checkpoint[ENCODER_CONFIG_KEY])
    state = {k[len(ENCODER_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(ENCODER_PREFIX)}
    encoder.load_state_dict(state)  # float16 shipped weights are cast to the encoder's float32
    return encoder.to(device=device, dtype=dtype).eval()
