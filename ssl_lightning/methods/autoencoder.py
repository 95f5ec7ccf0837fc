"""The autoencoder baseline: the encoder's features are a code from which a decoder reconstructs the
image, trained with binary cross-entropy on pixels in [0, 1]; with input noise, the denoising
autoencoder (Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders",
ICML 2008)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from ssl_lightning.augment import AUTOENCODER_VIEWS, ViewConfig
from ssl_lightning.decoders import ConvDecoder
from ssl_lightning.distributed import gather
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.errors import ConfigError
from ssl_lightning.losses import reconstruction_loss
from ssl_lightning.methods.base import PretrainMethod, StepOutput
from ssl_lightning.optim import OptimizerConfig

Corruption = Literal["none", "masking", "gaussian"]


def corrupt(images: Tensor, corruption: Corruption, noise_level: float) -> Tensor:
    """A denoising autoencoder's input: (N, C, H, W) images in [0, 1], corrupted with a random draw
    per image, in [0, 1] still.

    - ``masking``: Vincent et al.'s masking noise: round(ν·d) of each image's d = C·H·W values,
      chosen at random, set to 0 (ν = ``noise_level``, in [0, 1]).
    - ``gaussian``: additive Gaussian noise of standard deviation ``noise_level``, clipped to [0, 1].
    - ``none``: the images themselves.
    """
    if corruption == "masking":
        flat = images.flatten(1)  # (N, d)
        masked = torch.rand_like(flat).topk(round(noise_level * flat.shape[1]), dim=1).indices  # (N, round(ν d))
        return flat.scatter(1, masked, 0.0).view_as(images)
    if corruption == "gaussian":
        return (images + noise_level * torch.randn_like(images)).clamp(0, 1)
    return images


class Autoencoder(PretrainMethod):
    """The autoencoder baseline: the encoder's code decoded back to the image, trained with binary cross-entropy.

    ``decoder`` (``ConvDecoder``) reconstructs each image from the encoder's features (N, F), its
    code, and ``reconstruction_loss`` (binary cross-entropy) compares the reconstruction with the
    image. Its one view is the image itself (``AUTOENCODER_VIEWS``; with augmenting ``views`` the
    target is the augmented view).

    The denoising variant (``corruption``) gives the encoder a corrupted image and the loss the
    clean one. The noise is drawn in every stage, so that validation measures the objective that
    training lowers; online evaluation, ``load_encoder`` and everything downstream encode clean images.

    The ranking metrics compare what the loss compares, pixels: z1 holds the reconstructions
    σ(logits), z2 the target images, each flattened to (N, C·H·W); every reconstruction is ranked
    by cosine similarity among the batch's target images (the global batch's under DDP), and every
    image among the reconstructions (``cross_view_ranking``). The collapse monitors watch the code.

    Args:
        corruption: the encoder's input: ``none`` (the image: a plain autoencoder), ``masking``
            (Vincent et al.'s masking noise) or ``gaussian`` (additive noise); see ``corrupt``.
        noise_level: the share of each image's values that masking sets to 0 (in [0, 1]), or the
            Gaussian noise's standard deviation; unused without a ``corruption`` (the default).
        decoder_channels: the decoder's feature maps at its smallest side (``ConvDecoder``).
        encoder: the backbone (``EncoderConfig``), as for every method (``EncoderMethod``).
        optimizer: the optimizer and schedule (``OptimizerConfig``), as for every method; by
            default Adam at 1e-3 (AdamW without weight decay), constant after no warm-up.
        views: the augmentations (``ViewConfig``), as for every method.
    """

    default_views: ClassVar[list[ViewConfig]] = AUTOENCODER_VIEWS
    cross_view_ranking: ClassVar[bool] = True  # reconstructions against images

    def __init__(
        self,
        corruption: Corruption = "none",
        noise_level: float = 0.25,
        decoder_channels: int = 64,
        encoder: EncoderConfig = EncoderConfig(),
        optimizer: OptimizerConfig = OptimizerConfig(lr=1e-3, weight_decay=0.0, warmup_epochs=0.0, final_lr_ratio=1.0),
        views: ViewConfig | list[ViewConfig] | None = None,
    ) -> None:
        if corruption not in ("none", "masking", "gaussian"):
            raise ConfigError(f"unknown corruption {corruption!r}; choose 'none', 'masking' or 'gaussian'")
        if noise_level < 0 or (corruption == "masking" and noise_level > 1):
            raise ConfigError(f"noise_level must be >= 0 (a share in [0, 1] for masking), got {noise_level}")
        super().__init__(encoder=encoder, optimizer=optimizer, views=views)
        self.corruption, self.noise_level = corruption, noise_level
        config = self.encoder.config
        self.decoder = ConvDecoder(self.encoder.out_dim, config["in_channels"], config["input_size"], decoder_channels)

    def autoencode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(N, C, S, S) images in [0, 1] -> the encoder's input (``x`` corrupted), the code (N, F)
        and the decoder's logits (N, C, S, S)."""
        corrupted = corrupt(x, self.corruption, self.noise_level)
        code = self.encoder(corrupted)  # (N, F)
        return corrupted, code, self.decoder(code)

    def reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, S, S) images in [0, 1] -> the encoder's inputs (corrupted as in training) and the
        reconstructions σ(logits) in [0, 1], both (N, C, S, S): what ``LogReconstructions`` shows."""
        corrupted, _, logits = self.autoencode(images)
        return corrupted, torch.sigmoid(logits)

    def compute_loss(self, x: Tensor) -> StepOutput:
        _, code, logits = self.autoencode(x)
        reconstructions = torch.sigmoid(logits.detach()).flatten(1)  # (N, C·S·S)
        z1, z2 = gather(reconstructions), gather(x.flatten(1))  # (world_size * N, C·S·S): ranked in the global batch
        return StepOutput(reconstruction_loss(logits, x), z1, z2, features=code, monitored=code)  # monitored: the code, not the pixels
