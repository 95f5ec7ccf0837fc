"""Decoders: what an autoencoder puts on top of the encoder during pretraining, mapping the encoder's
features back to pixels."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ssl_lightning.errors import ConfigError


class ConvDecoder(nn.Module):
    """(N, in_dim) features -> (N, out_channels, image_size, image_size) logits, the pixels before
    the sigmoid.

    The usual convolutional decoder: a Linear layer (and ReLU) to ``channels`` feature maps of side
    ⌈image_size / 4⌉, two stride-2 transposed convolutions (4x4, BatchNorm, ReLU) that each double
    the side and halve the channels, and a 3x3 convolution to the image's channels. A side that is
    not a multiple of 4 is cropped from the top-left of the upsampled maps.

    Args:
        in_dim: the features' size (the encoder's ``out_dim``).
        out_channels: the images' channels.
        image_size: the images' side (the encoder's ``input_size``).
        channels: feature maps at the smallest side; a positive multiple of 4.
    """

    def __init__(self, in_dim: int, out_channels: int, image_size: int, channels: int = 64) -> None:
        super().__init__()
        if channels < 4 or channels % 4:
            raise ConfigError(f"decoder_channels must be a positive multiple of 4, got {channels}")
        self.image_size = image_size
        self.side = math.ceil(image_size / 4)
        self.linear = nn.Sequential(nn.Linear(in_dim, channels * self.side**2), nn.ReLU(inplace=True))
        self.convs = nn.Sequential(
            nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels // 2, channels // 4, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 4),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 4, out_channels, 3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        maps = self.linear(h).unflatten(1, (-1, self.side, self.side))  # (N, channels, side, side)
        logits = self.convs(maps)  # (N, out_channels, 4 side, 4 side)
        return logits[..., : self.image_size, : self.image_size]  # (N, out_channels, image_size, image_size)
