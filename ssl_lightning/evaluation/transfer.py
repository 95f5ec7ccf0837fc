"""Transfer learning: a pretrained encoder and a new linear head on a labelled target task.

``TransferClassifier(source, mode)``:
- source: one of our checkpoints (a path or a shipped name), a torchvision weights name such as
  ``ResNet18_Weights.IMAGENET1K_V1`` (downloaded into the torch hub cache when online), timm's
  pretrained ViT weights such as ``timm:vit_small_patch16_224.dino`` (downloaded into the Hugging
  Face cache when online), or ``random`` (training from scratch).
- mode: ``finetune`` (every layer trains; the encoder with its own, lower ``backbone_lr``) or
  ``feature_extract`` (the encoder is frozen and stays in eval mode, so its batch-norm statistics
  do not move; only the head trains).

The target's images are adapted to the encoder: grayscale <-> RGB here, the size inside the
encoder (it resizes to the size it was trained at), and the normalisation is the encoder's own.
``ssl-lightning transfer`` (``compare``) runs the three set-ups on one target side by side.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Literal
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from ssl_lightning.augment import ViewConfig
from ssl_lightning.backbones import RESNETS, VITS, build_vit
from ssl_lightning.encoder import Encoder, EncoderConfig, load_encoder
from ssl_lightning.errors import CheckpointError, ConfigError
from ssl_lightning.methods.supervised import Supervised
from ssl_lightning.optim import OptimizerConfig, optimizer_with_schedule, param_groups

Mode = Literal["finetune", "feature_extract"]
RANDOM = "random"
TIMM = "timm:"  # the prefix of a transfer source that names timm's pretrained weights
# timm's plain ViTs, the architectures VITS builds: vit_<size>_patch<P>_<side> (not _clip_, _reg4_, ...).
TIMM_VIT = re.compile(r"(vit_[a-z]+)_patch(\d+)_(\d+)")
# ITU-R BT.601 luma, the weights of PIL's convert("L"), for RGB targets of a grayscale encoder.
LUMA = (0.299, 0.587, 0.114)


def is_torchvision_weights(source: str) -> bool:
    """Whether a transfer source names torchvision weights (``ResNet18_Weights.IMAGENET1K_V1``)
    rather than a checkpoint."""
    return "_Weights." in source


def torchvision_encoder(weights_name: str, input_size: int | None = None) -> Encoder:
    """An ``Encoder`` with torchvision's pretrained ResNet weights (ImageNet stem, its normalisation,
    at ``input_size`` or the weights' own crop size), from the torch hub cache or downloaded."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(weights_name)
    except (ValueError, KeyError, AttributeError) as err:
        raise ConfigError(f"unknown torchvision weights {weights_name!r}; use a name such as ResNet18_Weights.IMAGENET1K_V1") from err
    backbone = type(weights).__name__.removesuffix("_Weights").lower()  # ResNet18_Weights -> resnet18
    if backbone not in RESNETS:
        raise ConfigError(f"{weights_name} is for {backbone}; transfer supports the ResNets {sorted(RESNETS)}")
    preset = weights.transforms()
    encoder = Encoder(EncoderConfig(backbone=backbone, width=64, small_images=False, in_channels=3,
                                    input_size=input_size or preset.crop_size[0], mean=preset.mean, std=preset.std))
    try:
        state = weights.get_state_dict(progress=True)  # the torch hub cache first, else the download
    except (URLError, OSError, RuntimeError) as err:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        filename = Path(urlparse(weights.url).path).name
        raise CheckpointError(
            f"cannot download the torchvision weights {weights_name} ({type(err).__name__}); offline, copy {filename} "
            f"(from {weights.url}) into {cache} and run again"
        ) from err
    encoder.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})  # no ImageNet classifier
    return encoder


def is_timm_weights(source: str) -> bool:
    """Whether a transfer source names timm's pretrained weights (``timm:vit_small_patch16_224.dino``)."""
    return source.startswith(TIMM)


def timm_encoder(source: str, input_size: int | None = None) -> Encoder:
    """An ``Encoder`` with timm's pretrained ViT weights ``timm:<architecture>.<tag>`` (the class
    token's features, the weights' normalisation, at ``input_size`` or the weights' own side, the
    position embeddings resampled by timm where it differs), from the Hugging Face cache or downloaded."""
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    name = source.removeprefix(TIMM)
    try:
        pretrained = get_pretrained_cfg(name)
    except RuntimeError:  # a known architecture with an unknown tag
        pretrained = None
    if pretrained is None:
        raise ConfigError(f"unknown timm weights {name!r}; use a name that timm.list_pretrained() lists, such as "
                          "timm:vit_small_patch16_224.augreg_in21k")
    vit = TIMM_VIT.fullmatch(pretrained.architecture)
    if vit is None or vit.group(1) not in VITS:
        raise ConfigError(f"{name} is a {pretrained.architecture}; transfer supports timm's plain ViTs {sorted(VITS)} "
                          "(vit_<size>_patch<P>_<side>.<tag>)")
    backbone, patch_size = vit.group(1), int(vit.group(2))
    channels, side = pretrained.input_size[0], pretrained.input_size[-1]
    config = EncoderConfig(backbone=backbone, patch_size=patch_size, pooling="cls", in_channels=channels,
                           input_size=input_size or side, mean=pretrained.mean, std=pretrained.std)
    try:
        weighted = build_vit(backbone, channels, config.input_size, patch_size, config.pooling, weights=name)
    except OSError as err:  # the Hugging Face hub's errors (offline, not cached, unreachable) are OSErrors
        repo = pretrained.hf_hub_id
        raise CheckpointError(
            f"cannot download the timm weights {name} ({type(err).__name__}); offline, run `hf download {repo}` on a machine "
            f"that is online and copy its {constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')} folder into {constants.HF_HUB_CACHE} "
            "here, then run again"
        ) from err
    encoder = Encoder(config)
    encoder.backbone.load_state_dict(weighted.state_dict())
    return encoder


class ChannelAdapter(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H, W): grayscale to RGB repeats the channel, RGB to grayscale
    takes the luma; the same channels pass unchanged."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if (in_channels, out_channels) not in ((1, 1), (3, 3), (1, 3), (3, 1)):
            raise ConfigError(f"cannot adapt {in_channels}-channel images to a {out_channels}-channel encoder; use 1 or 3 channels")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if self.in_channels == self.out_channels:
            return images
        if self.out_channels == 3:
            return images.expand(-1, 3, -1, -1)  # (N, 3, H, W)
        return (images * self.luma).sum(dim=1, keepdim=True)  # (N, 1, H, W)

    def describe(self) -> str:
        """What the adapter does, in words (``RGB -> grayscale (luma ...)``)."""
        names = {1: "grayscale", 3: "RGB"}
        if self.in_channels == self.out_channels:
            return f"{names[self.in_channels]} as is"
        how = "the channel repeated" if self.out_channels == 3 else "luma 0.299 R + 0.587 G + 0.114 B"
        return f"{names[self.in_channels]} -> {names[self.out_channels]} ({how})"


class ChannelAdapted(nn.Sequential):
    """An ``Encoder`` behind a ``ChannelAdapter``: features of ``in_channels``-channel images from an
    encoder trained on others. ``config`` (the encoder's, plus the channels adapted from) and the
    state dict fingerprint it for the feature cache."""

    def __init__(self, encoder: Encoder, in_channels: int) -> None:
        adapter = ChannelAdapter(in_channels, encoder.config["in_channels"])
        super().__init__(adapter, encoder)
        self.config = {**encoder.config, "adapted_from_channels": in_channels}
        self.out_dim = encoder.out_dim
        self.adaptation = adapter.describe()


def adapt_channels(encoder: Encoder, in_channels: int) -> Encoder | ChannelAdapted:
    """``encoder``, behind a ``ChannelAdapter`` where the images have other channels than it takes."""
    return encoder if encoder.config["in_channels"] == in_channels else ChannelAdapted(encoder, in_channels)


class TransferClassifier(Supervised):
    """An encoder from ``source`` + ``nn.Linear`` trained with cross-entropy on the target's labels,
    on mildly augmented images (validation and test unaugmented): the supervised baseline with a
    pretrained encoder. Logs ``{train,val,test}/loss`` and ``/acc``; its checkpoints give the tuned
    encoder to ``load_encoder``."""

    task = "transfer"

    def __init__(
        self,
        source: str = RANDOM,
        mode: Mode = "finetune",
        num_classes: int = 10,
        encoder: EncoderConfig = EncoderConfig(width=16),
        optimizer: OptimizerConfig = OptimizerConfig(warmup_epochs=0.0),
        backbone_lr: float = 1e-4,
        views: ViewConfig | list[ViewConfig] | None = None,
        resize_to: int | None = None,
        trusted: bool = False,
    ) -> None:
        """
        Args:
            source: a checkpoint path or shipped name, a torchvision weights name, timm's weights
                (``timm:<architecture>.<tag>``), or "random".
            mode: "finetune" or "feature_extract".
            num_classes: the target's classes (the CLI takes them from the data module).
            encoder: the target's images (``in_channels``, ``input_size``, ``mean``, ``std``: the CLI
                takes them from the data module) and the architecture of a "random" encoder; mean
                and std normalise only a "random" encoder, the others keep the normalisation they
                were trained with.
            optimizer: as for the pretraining methods; its ``lr`` is the head's peak learning rate.
            backbone_lr: the encoder's peak learning rate in finetune mode (lower than the head's:
                the pretrained features should move less than the new head; from scratch, set it
                to the head's).
            views: training augmentation (default: a crop of 80-100% of the area and a flip).
            resize_to: the side the encoder sees, for torchvision and timm weights (default: the
                weights' own, 224 for most) and "random" (default: the target's own); checkpoints keep
                their own.
            trusted: allow a checkpoint that needs Python objects unpickled (see ``load_encoder``).
        """
        if mode not in ("finetune", "feature_extract"):
            raise ConfigError(f"mode must be 'finetune' or 'feature_extract', got {mode!r}")
        super().__init__(num_classes=num_classes, encoder=encoder, optimizer=optimizer, views=views)
        in_channels, image_size = self.image_shape  # the target's
        encoder_channels, encoder_size = self.encoder.config["in_channels"], self.encoder.config["input_size"]
        self.adapter = ChannelAdapter(in_channels, encoder_channels)
        self.adaptation = (f"target {in_channels}x{image_size}x{image_size} -> encoder {encoder_channels}x{encoder_size}x{encoder_size}: "
                           f"{self.adapter.describe()}, resized {image_size} -> {encoder_size}"
                           + (" (bilinear, antialiased)" if image_size != encoder_size else " (no resize)"))
        # Loaded encoders come in eval mode, and Lightning keeps each submodule's mode as it finds it.
        self.encoder.train(mode == "finetune")
        self.encoder.requires_grad_(mode == "finetune")

    def build_encoder(self, config: EncoderConfig) -> Encoder:
        """The encoder of ``source``: a "random" one is ``config``'s, at ``resize_to`` if given."""
        source, resize_to = self.hparams.source, self.hparams.resize_to
        if source == RANDOM:
            return Encoder(replace(config, input_size=resize_to or config.input_size))
        if is_torchvision_weights(source):
            return torchvision_encoder(source, resize_to)
        if is_timm_weights(source):
            return timm_encoder(source, resize_to)
        return load_encoder(source, trusted=self.hparams.trusted)

    def train(self, mode: bool = True) -> TransferClassifier:
        """Lightning switches the whole module to train mode every epoch; a frozen encoder stays in eval."""
        super().train(mode)
        if self.hparams.mode == "feature_extract":
            self.encoder.eval()
        return self

    def features(self, images: Tensor) -> Tensor:
        """(N, C, H, W) target images in [0, 1] -> (N, F) encoder features (without gradients in
        feature_extract mode)."""
        with torch.set_grad_enabled(self.hparams.mode == "finetune" and torch.is_grad_enabled()):
            return self.encoder(self.adapter(images))

    def forward(self, images: Tensor) -> Tensor:
        """(N, C, H, W) target images in [0, 1] -> (N, num_classes) logits."""
        return self.classifier(self.features(images))

    def on_fit_start(self) -> None:
        rank_zero_info(f"transfer from {self.hparams.source} ({self.hparams.mode}): {self.adaptation}")
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_text("transfer/adaptation", self.adaptation)

    def configure_optimizers(self) -> dict:
        config = self.optimizer_config

        def groups(lr: float) -> list[dict]:
            rates = {"head": (self.classifier, lr)}
            if self.hparams.mode == "finetune":
                rates["encoder"] = (self.encoder, self.hparams.backbone_lr)
            return [group for part, (module, rate) in rates.items()
                    for group in param_groups(module, rate, config.weight_decay, config.bias_norm_lr_ratio, part=part)]

        return optimizer_with_schedule(self, groups, config)
