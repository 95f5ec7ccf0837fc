"""View pipelines: random augmentations applied to a whole batch on its device.

A pipeline is data (a ``ViewConfig``), built into kornia augmentations, which draw independent
random parameters for every image of the batch in one vectorised call: no per-image Python loop.
Inputs and outputs are float images in [0, 1], shaped (N, C, H, W).
"""

from __future__ import annotations

from typing import TypedDict

import kornia.augmentation as K
from torch import nn

from ssl_lightning.errors import ConfigError


class ViewConfig(TypedDict, total=False):
    """Parameters of one view pipeline. Keys left out take the method's defaults."""

    crop_size: int | None  # side of the output views; None keeps the images' own size
    crop_scale: tuple[float, float]  # range of the crop's area, as a share of the image's
    crop_ratio: tuple[float, float]  # range of the crop's aspect ratio
    flip_prob: float  # horizontal flip
    jitter_prob: float  # probability of colour jitter (brightness/contrast; + saturation/hue on colour)
    brightness: float
    contrast: float
    saturation: float  # colour images only
    hue: float  # colour images only
    grayscale_prob: float  # colour images only
    blur_prob: float  # Gaussian blur, kernel 10% of the view's side
    blur_sigma: tuple[float, float]


# SimCLR's augmentations (arXiv:2002.05709, App. A), colour jitter strength s = 1.
SIMCLR_VIEWS: ViewConfig = {
    "crop_size": None,
    "crop_scale": (0.08, 1.0),
    "crop_ratio": (3 / 4, 4 / 3),
    "flip_prob": 0.5,
    "jitter_prob": 0.8,
    "brightness": 0.8,
    "contrast": 0.8,
    "saturation": 0.8,
    "hue": 0.2,
    "grayscale_prob": 0.2,
    "blur_prob": 0.5,
    "blur_sigma": (0.1, 2.0),
}

# Weak augmentation, as for supervised training on small images (ResNet's CIFAR-10 setting:
# flips and small shifts): a mild crop and a flip, no colour change or blur. The supervised
# baseline and transfer learning train on one such view per image.
SUPERVISED_VIEWS: ViewConfig = {**SIMCLR_VIEWS, "crop_scale": (0.8, 1.0), "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0}


def resolve_views(views: ViewConfig | None, defaults: ViewConfig) -> ViewConfig:
    """The defaults, overridden by the keys ``views`` sets; unknown keys are an error."""
    views = dict(views or {})
    unknown = sorted(set(views) - set(ViewConfig.__annotations__))
    if unknown:
        raise ConfigError(f"unknown view parameter(s) {unknown}; valid ones are {sorted(ViewConfig.__annotations__)}")
    return {**defaults, **views}


def blur_kernel_size(side: int) -> int:
    """SimCLR's blur kernel: 10% of the image side, made odd, at least 3."""
    return max(3, int(0.1 * side) // 2 * 2 + 1)


def build_views(config: ViewConfig, channels: int, image_size: int) -> nn.Sequential:
    """The augmentation pipeline for images with ``channels`` channels of side ``image_size``.

    Colour jitter of saturation and hue and random grayscale only exist for colour (3-channel)
    images; on grayscale images the jitter changes brightness and contrast only.
    """
    size = config["crop_size"] or image_size
    colour = channels == 3
    steps: list[nn.Module] = [
        # "resample" crops the whole batch with one batched warp; "slice" loops over the images.
        K.RandomResizedCrop((size, size), scale=config["crop_scale"], ratio=config["crop_ratio"], cropping_mode="resample"),
        K.RandomHorizontalFlip(p=config["flip_prob"]),
        K.ColorJitter(
            brightness=config["brightness"],
            contrast=config["contrast"],
            saturation=config["saturation"] if colour else 0.0,
            hue=config["hue"] if colour else 0.0,
            p=config["jitter_prob"],
        ),
    ]
    if colour:
        steps.append(K.RandomGrayscale(p=config["grayscale_prob"]))
    if config["blur_prob"] > 0:
        kernel = blur_kernel_size(size)
        steps.append(K.RandomGaussianBlur((kernel, kernel), sigma=config["blur_sigma"], p=config["blur_prob"]))
    return nn.Sequential(*steps)
