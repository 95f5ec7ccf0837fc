"""View pipelines: random augmentations applied to a whole batch on its device.

A method's views are data: a list with one ``ViewConfig`` per view (BYOL's two views differ in
blur and solarization; multi-crop is a longer list with smaller crops). Each is built into kornia
augmentations, which draw independent random parameters for every image of the batch in one
vectorised call: no per-image Python loop. Inputs and outputs are float images in [0, 1], shaped
(N, C, H, W).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TypedDict

import kornia.augmentation as K
from torch import Tensor, nn

from ssl_lightning.errors import ConfigError


class ViewConfig(TypedDict, total=False):
    """Parameters of one view pipeline. Keys left out take the method's defaults for that view."""

    crop_size: int | float | None  # side of the output views: pixels (int), a share of the images' side (float), None their own side
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
    solarize_prob: float  # solarization: every pixel x >= solarize_threshold becomes 1 - x
    solarize_threshold: float  # in [0, 1]; BYOL's 0.5
    copies: int  # this view, this many times with their own draws (multi-crop's local crops); 0 leaves it out


# SimCLR's augmentations (arXiv:2002.05709, App. A), colour jitter strength s = 1. On CIFAR-10
# (App. B.9) the paper uses s = 0.5 and no blur; the CIFAR configs set those.
SIMCLR_VIEW: ViewConfig = {
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
    "solarize_prob": 0.0,
    "solarize_threshold": 0.5,
    "copies": 1,
}
SIMCLR_VIEWS: list[ViewConfig] = [SIMCLR_VIEW, SIMCLR_VIEW]

# MoCo v2 (arXiv:2003.04297, its code's "aug_plus"): crops of 20-100%, a weaker jitter
# (0.4, 0.4, 0.4, 0.1), and SimCLR's blur with p 0.5 on both views.
MOCO_V2_VIEW: ViewConfig = {
    **SIMCLR_VIEW, "crop_scale": (0.2, 1.0), "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
}
MOCO_V2_VIEWS: list[ViewConfig] = [MOCO_V2_VIEW, MOCO_V2_VIEW]

# BYOL (arXiv:2006.07733, Table 6): jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, and asymmetric views:
# blur p 1.0 on the first and 0.1 on the second, solarization p 0.0 and 0.2 (threshold 0.5).
BYOL_VIEW: ViewConfig = {**SIMCLR_VIEW, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
BYOL_VIEWS: list[ViewConfig] = [
    {**BYOL_VIEW, "blur_prob": 1.0, "solarize_prob": 0.0},
    {**BYOL_VIEW, "blur_prob": 0.1, "solarize_prob": 0.2},
]

# Barlow Twins (arXiv:2103.03230, "Image augmentations" in its implementation details): BYOL's views.
BARLOW_TWINS_VIEWS: list[ViewConfig] = BYOL_VIEWS
# VICReg (arXiv:2105.04906; its official code's augmentations.py): BYOL's views.
VICREG_VIEWS: list[ViewConfig] = BYOL_VIEWS
# MoCo v3 (arXiv:2104.02057; its official code's augmentations): BYOL's views.
MOCO_V3_VIEWS: list[ViewConfig] = BYOL_VIEWS
# NNCLR (arXiv:2104.14548, which follows BYOL's augmentations): BYOL's views.
NNCLR_VIEWS: list[ViewConfig] = BYOL_VIEWS
# SimSiam (arXiv:2011.10566, whose augmentation follows MoCo v2's): MoCo v2's views.
SIMSIAM_VIEWS: list[ViewConfig] = MOCO_V2_VIEWS

# Multi-crop's local crops are 96 px at 224 px (SwAV and DINO): the same share of any image's side.
LOCAL_CROP_SHARE = 96 / 224
# SwAV (arXiv:2006.09882; its code's main_swav.py defaults): SimCLR's views, two global crops of
# 14-100% of the image, and six local crops of 5-14%.
SWAV_VIEWS: list[ViewConfig] = [
    {**SIMCLR_VIEW, "crop_scale": (0.14, 1.0), "copies": 2},
    {**SIMCLR_VIEW, "crop_size": LOCAL_CROP_SHARE, "crop_scale": (0.05, 0.14), "copies": 6},
]
# DINO (arXiv:2104.14294; its code's main_dino.py defaults): BYOL's two asymmetric global crops of
# 40-100%, and eight local crops of 5-40% with blur p 0.5.
DINO_VIEWS: list[ViewConfig] = [
    *({**view, "crop_scale": (0.4, 1.0)} for view in BYOL_VIEWS),
    {**BYOL_VIEW, "crop_size": LOCAL_CROP_SHARE, "crop_scale": (0.05, 0.4), "blur_prob": 0.5, "solarize_prob": 0.0, "copies": 8},
]

# Weak augmentation, as for supervised training on small images (ResNet's CIFAR-10 setting:
# flips and small shifts): a mild crop and a flip, no colour change or blur. The supervised
# baseline and transfer learning train on one such view per image.
SUPERVISED_VIEW: ViewConfig = {**SIMCLR_VIEW, "crop_scale": (0.8, 1.0), "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0}

# The images themselves (up to float rounding: the whole image, resampled at its own size), as an
# autoencoder reconstructs them: no crop, flip, jitter, blur or solarization.
AUTOENCODER_VIEWS: list[ViewConfig] = [
    {**SUPERVISED_VIEW, "crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip_prob": 0.0},
]


def resolve_view(view: ViewConfig | None, default: ViewConfig) -> ViewConfig:
    """The default, overridden by the keys ``view`` sets; unknown keys are an error."""
    view = dict(view or {})
    unknown = sorted(set(view) - set(ViewConfig.__annotations__))
    if unknown:
        raise ConfigError(f"unknown view parameter(s) {unknown}; valid ones are {sorted(ViewConfig.__annotations__)}")
    return {**default, **view}


def resolve_views(views: ViewConfig | Sequence[ViewConfig] | None, defaults: Sequence[ViewConfig]) -> list[ViewConfig]:
    """One config per view made: a mapping (or None) overrides every default view alike, a list
    overrides each default entry by position and must have one entry per default entry; an entry
    with ``copies`` n stands for n views."""
    if views is None or isinstance(views, Mapping):
        resolved = [resolve_view(views, default) for default in defaults]
    elif len(views) != len(defaults):
        raise ConfigError(f"the method's views have {len(defaults)} entries but views lists {len(views)}; give one mapping "
                          f"(the same for every view) or a list of {len(defaults)}")
    else:
        resolved = [resolve_view(view, default) for view, default in zip(views, defaults)]
    for view in resolved:
        if not isinstance(view["copies"], int) or view["copies"] < 0:
            raise ConfigError(f"a view's copies must be an integer >= 0 (0 leaves it out), got {view['copies']!r}")
    made = [view for view in resolved for _ in range(view["copies"])]
    if not made:
        raise ConfigError("every view has copies: 0; a method needs at least one view")
    return made


MIN_VIEW_SIDE = 3


def view_side(config: ViewConfig, image_size: int) -> int:
    """The side of a view's output, for images of side ``image_size``: ``crop_size`` in pixels, a
    share of the images' side (a float in (0, 1]), or the images' own side (None)."""
    size = config["crop_size"]
    if size is None:
        return image_size
    if isinstance(size, float) and not 0 < size <= 1:
        raise ConfigError(f"a view's crop_size is pixels (an integer) or a share of the images' side in (0, 1], got {size}")
    side = round(size * image_size) if isinstance(size, float) else size
    if side < MIN_VIEW_SIDE:  # the smallest side a blur kernel (3 px) filters
        raise ConfigError(f"a view's side must be at least {MIN_VIEW_SIDE} pixels, got {side} (crop_size {size} of {image_size} px images)")
    return side


def describe_view(config: ViewConfig, image_size: int) -> str:
    """The settings that tell a method's views apart, for figure headers: crop, blur and solarization."""
    lo, hi = config["crop_scale"]
    side = view_side(config, image_size)
    crop = f"{side} px, " if side != image_size else ""
    return f"{crop}crop {float(lo)}-{float(hi)}, blur {float(config['blur_prob'])}, solarize {float(config['solarize_prob'])}"


def blur_kernel_size(side: int) -> int:
    """SimCLR's blur kernel: 10% of the image side, made odd, at least 3."""
    return max(3, int(0.1 * side) // 2 * 2 + 1)


def build_view(config: ViewConfig, channels: int, image_size: int) -> nn.Sequential:
    """The augmentation pipeline of one view, for images with ``channels`` channels of side ``image_size``.

    Colour jitter of saturation and hue and random grayscale only exist for colour (3-channel)
    images; on grayscale images the jitter changes brightness and contrast only.
    """
    size = view_side(config, image_size)
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
    if config["solarize_prob"] > 0:
        # kornia draws the threshold from the range given (a float is a half-width around 0.5):
        # a range of one point is exactly the configured threshold, and no addition.
        threshold = config["solarize_threshold"]
        steps.append(K.RandomSolarize(thresholds=(threshold, threshold), additions=(0.0, 0.0), p=config["solarize_prob"]))
    return nn.Sequential(*steps)


class ViewPipelines(nn.Module):
    """Makes every view of a batch: ``forward(x)`` (N, C, H, W) -> a list with one (N, C, S_i, S_i)
    tensor per config, each image with its own random draw in every view.

    Consecutive views with equal configs are made in one call on the batch repeated (``n`` views:
    ``n * N`` images, then split), which is as random per image and one kornia pass instead of ``n``.
    """

    def __init__(self, configs: Sequence[ViewConfig], channels: int, image_size: int) -> None:
        super().__init__()
        self.configs = list(configs)
        self.image_size = image_size  # of the images it is given
        runs = [(config, len(list(group))) for config, group in itertools.groupby(self.configs)]
        self.pipelines = nn.ModuleList(build_view(config, channels, image_size) for config, _ in runs)
        self.repeats = [repeat for _, repeat in runs]

    def forward(self, x: Tensor) -> list[Tensor]:
        views: list[Tensor] = []
        for pipeline, repeat in zip(self.pipelines, self.repeats):
            views += pipeline(x.repeat(repeat, 1, 1, 1)).chunk(repeat)  # repeat x (N, C, S, S)
        return views
