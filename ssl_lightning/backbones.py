"""Backbones: torchvision ResNets looked up by name, with a small-image stem and a width option.

``build_backbone("resnet18", in_channels=1, small_images=True, width=32)`` returns a network that
maps (N, C, H, W) images to (N, D) features (the classifier is removed; ``.out_dim`` is D).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ssl_lightning.errors import ConfigError

# name -> (block, blocks per stage), the torchvision ResNet definitions.
RESNETS: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class _ScaledResNet(ResNet):
    """torchvision's ResNet with every stage's width scaled by ``width / 64``.

    torchvision only scales the bottleneck's inner width (``width_per_group``), so the stage widths
    are scaled here by overriding ``_make_layer``; the blocks themselves are torchvision's.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], width: int) -> None:
        self._width = width
        super().__init__(block, layers)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: ANN001, ANN202
        if planes == 64:  # first stage: its input is the stem's output
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


def build_backbone(
    name: str = "resnet18",
    in_channels: int = 3,
    small_images: bool = False,
    width: int = 64,
) -> nn.Module:
    """A torchvision ResNet without its classifier; ``.out_dim`` is the feature size.

    Args:
        name: one of ``RESNETS``.
        in_channels: channels of the input images (1 for grayscale).
        small_images: replace the ImageNet stem (7x7 stride-2 conv + max-pool) by a 3x3 stride-1
            conv without pooling, as SimCLR does for CIFAR-10 (arXiv:2002.05709, App. B.9).
        width: channels of the first stage (64 in the paper's ResNets); later stages scale with it.
    """
    if name not in RESNETS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(RESNETS)}")
    if width < 1 or width % 8:
        raise ConfigError(f"backbone width must be a positive multiple of 8, got {width}")
    block, layers = RESNETS[name]
    net = _ScaledResNet(block, layers, width)
    if small_images:
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    net.out_dim = width * 8 * block.expansion  # channels of the last stage
    net.fc = nn.Identity()
    return net


def channels_last_is_safe(module: nn.Module) -> bool:
    """False where ``module`` holds a strided 1x1 convolution with fewer than 16 input channels
    (the downsample of a width-8 ResNet-18/34): its channels-last CPU backward corrupts the heap.

    oneDNN's jit_1x1 backward-weights kernel writes past its reduce-to-unit-stride buffer when the
    input channels fill less than one 16-channel block (uxlfoundation/oneDNN#6035, open; crashes
    with SIGSEGV in torch 2.14.1 / oneDNN 3.12 on AVX-512 from 52-pixel inputs up).
    """
    return not any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1 and m.in_channels < 16
        for m in module.modules()
    )

