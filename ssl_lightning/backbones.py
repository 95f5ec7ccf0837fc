"""Backbones looked up by name: torchvision ResNets, with a small-image stem and a width option,
and timm's Vision Transformers, with a patch size and pooling for the images' size.

``build_backbone("resnet18", in_channels=1, small_images=True, width=32)`` or
``build_backbone("vit_small", in_channels=3, input_size=32, patch_size=4)`` returns a network that
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
# name -> timm's ViT of that size (arXiv:2010.11929; Tiny and Small from DeiT, arXiv:2012.12877);
# its 224 px and patch 16 are replaced by each encoder's image size and patch size.
VITS: dict[str, str] = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
    "vit_huge": "vit_huge_patch14_224",
}
BACKBONES = sorted([*RESNETS, *VITS])
# pooling -> timm's global_pool: the class token's output, or the mean of the patch tokens' outputs.
POOLINGS = {"cls": "token", "mean": "avg"}


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


def default_patch_size(input_size: int) -> int:
    """The patch side for images of ``input_size`` pixels when none is set: 4 up to 32 px, 8 up to
    96 px, 16 above. The papers' ViTs see a 14x14 grid of patches (224 px, patch 16); at 28-32 px
    patch 16 would leave 2x2 tokens, so small images get smaller patches (7x7 or 8x8 tokens at
    28/32 px, 12x12 at 96 px), as ViTs trained on CIFAR use patch 4."""
    return 4 if input_size <= 32 else 8 if input_size <= 96 else 16


def build_backbone(
    name: str = "resnet18",
    in_channels: int = 3,
    small_images: bool = False,
    width: int = 64,
    input_size: int = 224,
    patch_size: int | None = None,
    pooling: str = "cls",
    depth: int | None = None,
) -> nn.Module:
    """A torchvision ResNet or a timm ViT without its classifier; ``.out_dim`` is the feature size.

    Args:
        name: one of ``BACKBONES`` (``RESNETS`` and ``VITS``).
        in_channels: channels of the input images (1 for grayscale).
        small_images: ResNets: replace the ImageNet stem (7x7 stride-2 conv + max-pool) by a 3x3
            stride-1 conv without pooling, as SimCLR does for CIFAR-10 (arXiv:2002.05709, App. B.9).
        width: ResNets: channels of the first stage (64 in the paper's ResNets); later stages scale with it.
        input_size: ViTs: the image side their position embeddings are made for (other sides are
            interpolated to, as multi-crop's small crops need).
        patch_size: ViTs: the patch side, which must divide ``input_size`` (None: ``default_patch_size``).
        pooling: ViTs: the features are the class token's output ("cls") or the patch tokens' mean ("mean").
        depth: ViTs: transformer blocks (None: the size's own, 12 up to vit_base).
    """
    if name in VITS:
        return build_vit(name, in_channels, input_size, patch_size, pooling, depth)
    if name not in RESNETS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
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


def build_vit(name: str, in_channels: int, input_size: int, patch_size: int | None = None, pooling: str = "cls",
              depth: int | None = None, weights: str | None = None) -> nn.Module:
    """timm's ViT of size ``name`` (one of ``VITS``) for ``input_size``-pixel images, without its
    classifier; ``.out_dim`` is its width. ``weights``: timm pretrained weights of the same
    architecture (``vit_small_patch16_224.augreg_in21k``), which timm loads from the Hugging Face
    cache or downloads; their position embeddings are resampled to ``input_size`` if it differs."""
    import timm  # here: ResNet runs never pay for importing it

    if name not in VITS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {BACKBONES}")
    if pooling not in POOLINGS:
        raise ConfigError(f"encoder.pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
    chosen = patch_size or default_patch_size(input_size)
    if input_size % chosen:
        default = "" if patch_size else f" (the default at {input_size} px)"
        raise ConfigError(f"encoder.patch_size {chosen}{default} does not divide encoder.input_size {input_size}; "
                          "set encoder.patch_size to a divisor of it")
    # dynamic_img_size: images of other sides (multi-crop's local crops) get interpolated position embeddings.
    net = timm.create_model(weights or VITS[name], pretrained=weights is not None, img_size=input_size, patch_size=chosen,
                            in_chans=in_channels, num_classes=0, global_pool=POOLINGS[pooling], dynamic_img_size=True,
                            **({} if depth is None else {"depth": depth}))
    net.out_dim = net.num_features
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

