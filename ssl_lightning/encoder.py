"""The encoder: a backbone behind an input adapter, and ``load_encoder`` to get it from a checkpoint.

The encoder takes float images in [0, 1] at the data's own size, shaped (N, C, H, W), resizes them
to the size it was trained at and normalises them itself, so features cannot be computed from
wrongly prepared inputs. It returns (N, D) features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from ssl_lightning.backbones import VITS, build_backbone, channels_last_is_safe
from ssl_lightning.checkpoint import ENCODER_CONFIG_KEY, encoder_state, read_checkpoint
from ssl_lightning.errors import ConfigError
from ssl_lightning.shipped import resolve


@dataclass(frozen=True)
class EncoderConfig:
    """What an ``Encoder`` is: its backbone, and the images it is given. ``width`` and
    ``small_images`` shape ResNets only, ``patch_size``, ``pooling`` and ``depth`` ViTs only; each
    family ignores the other's.

    Args:
        backbone: a torchvision ResNet (resnet18, resnet34, resnet50) or a timm ViT (vit_tiny,
            vit_small, vit_base, vit_large, vit_huge); ``ssl_lightning.backbones.BACKBONES``.
        width: ResNets: channels of the first stage (64 in the papers' ResNets).
        small_images: ResNets: 3x3 stride-1 stem without max-pool, for images of about 32 pixels.
        patch_size: ViTs: side of the square patches, a divisor of ``input_size`` (None: 4 up to 32 px,
            8 up to 96 px, 16 above; ``default_patch_size``). The encoder's config records the one used.
        pooling: ViTs: the features are the class token's output ("cls", as MoCo v3 and DINO) or the
            mean of the patch tokens' outputs ("mean").
        depth: ViTs: transformer blocks (None: the size's own, 12 up to vit_base); fewer make quick trials.
        in_channels: channels of the images (the CLI takes them from the data module).
        input_size: side of the images the encoder is trained at; others are resized to it (the
            CLI takes the data's side; a method whose first view crops to another size trains at that).
        mean: per-channel mean of images in [0, 1], subtracted (the CLI takes the data's).
        std: per-channel standard deviation of images in [0, 1], divided by (the data's too).
        channels_last: keep the convolutions in the channels-last memory layout (faster on CPUs
            and on GPUs' tensor cores; same results up to rounding). Ignored at width 8 with
            ResNet-18/34, whose channels-last CPU backward crashes, and by ViTs, whose one
            convolution (the patch embedding) is flattened into tokens at once.
        compile: ``torch.compile`` the backbone when training starts (the first steps are slow
            while it compiles; it pays off on long runs).
    """

    backbone: str = "resnet18"
    width: int = 64
    small_images: bool = True
    patch_size: int | None = None
    pooling: Literal["cls", "mean"] = "cls"
    depth: int | None = None
    in_channels: int = 1
    input_size: int = 28
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    channels_last: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        # Plain floats (YAML, tensors and checkpoints give lists or numpy values), for hashing and saving.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        for name in ("width", "in_channels", "input_size", "patch_size", "depth"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"encoder.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ConfigError(f"mean and std need one value per input channel ({self.in_channels}), "
                              f"got {list(self.mean)} and {list(self.std)}")

    def architecture(self) -> dict[str, Any]:
        """The fields that make the network (the others describe the images it takes)."""
        return {name: getattr(self, name) for name in ("backbone", "width", "small_images", "patch_size", "pooling", "depth")}

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for mean and std): what checkpoints and hyperparameter logs keep."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def of(cls, value: EncoderConfig | Mapping[str, Any]) -> EncoderConfig:
        """``value`` as a config: a mapping is what ``asdict`` and checkpoints hold (older
        checkpoints lack the later fields, which take their defaults)."""
        return value if isinstance(value, cls) else cls(**value)


class Encoder(nn.Module):
    """Backbone with its input normalisation and resizing, built from an ``EncoderConfig``;
    ``config`` is that config as a plain dict (what checkpoints keep: ``Encoder(config)`` rebuilds it)."""

    def __init__(self, config: EncoderConfig | Mapping[str, Any] = EncoderConfig()) -> None:
        super().__init__()
        config = EncoderConfig.of(config)
        vit = config.backbone in VITS
        self.backbone = build_backbone(config.backbone, in_channels=config.in_channels, small_images=config.small_images,
                                       width=config.width, input_size=config.input_size, patch_size=config.patch_size,
                                       pooling=config.pooling, depth=config.depth)
        if vit:  # the patch size used (the size's default where none was set), so that checkpoints say it
            config = replace(config, patch_size=self.backbone.patch_embed.patch_size[0])
        self.config: dict[str, Any] = config.as_dict()
        self.out_dim: int = self.backbone.out_dim
        self.patch_size: int | None = config.patch_size if vit else None  # the sides a ViT can encode are its multiples
        self.register_buffer("mean", torch.tensor(config.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(config.std).view(1, -1, 1, 1))
        self.channels_last = config.channels_last and not vit and channels_last_is_safe(self)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        elif config.channels_last and not vit:
            rank_zero_info(f"channels_last ignored: its CPU backward crashes at backbone width {config.width} (strided "
                           "1x1 convolutions of fewer than 16 channels); the encoder keeps the contiguous layout")

    def forward(self, images: Tensor, resize: bool = True) -> Tensor:
        """(N, C, H, W) float images in [0, 1] -> (N, D) features, in the encoder's dtype.

        ``resize=False`` encodes the images at their own size (multi-crop's local crops, which the
        papers encode small: that is what makes them cheap)."""
        channels, size = self.config["in_channels"], self.config["input_size"]
        if images.dim() != 4 or images.shape[1] != channels:
            raise ConfigError(f"the encoder expects images shaped (N, {channels}, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ConfigError(f"the encoder expects float images in [0, 1], got dtype {images.dtype}; divide by 255 first")
        images = images.to(self.mean.dtype)  # computed in the encoder's own dtype (load_encoder's dtype=)
        if resize and images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        elif self.patch_size and (images.shape[-2] % self.patch_size or images.shape[-1] % self.patch_size):
            raise ConfigError(f"a ViT of patch size {self.patch_size} encodes images whose sides are multiples of it, got "
                              f"{tuple(images.shape[-2:])}; make the view's crop_size a multiple of {self.patch_size}")
        images = (images - self.mean) / self.std
        if self.channels_last:
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
    encoder = Encoder(checkpoint[ENCODER_CONFIG_KEY])
    encoder.load_state_dict(encoder_state(checkpoint))  # float16 shipped weights are cast to the encoder's float32
    return encoder.to(device=device, dtype=dtype).eval()
