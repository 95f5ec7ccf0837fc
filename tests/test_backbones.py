import pytest
import torch

from ssl_lightning.backbones import build_backbone, channels_last_is_safe
from ssl_lightning.errors import ConfigError


@pytest.mark.parametrize("name, width, expected_dim", [("resnet18", 16, 128), ("resnet18", 64, 512), ("resnet50", 8, 256)])
def test_feature_size(name, width, expected_dim):
    net = build_backbone(name, in_channels=1, small_images=True, width=width)
    assert net.out_dim == expected_dim
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, expected_dim)


def test_full_width_resnet18_has_torchvisions_parameter_count():
    import torchvision

    ours = build_backbone("resnet18", in_channels=3, small_images=False, width=64)
    theirs = torchvision.models.resnet18()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs) - count(theirs.fc)


def test_small_image_stem_keeps_resolution():
    small = build_backbone("resnet18", in_channels=3, small_images=True, width=8)
    imagenet = build_backbone("resnet18", in_channels=3, small_images=False, width=8)
    x = torch.rand(1, 3, 32, 32)
    stem = lambda net: net.maxpool(net.relu(net.bn1(net.conv1(x))))  # noqa: E731
    assert stem(small).shape[-1] == 32
    assert stem(imagenet).shape[-1] == 8


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ConfigError, match="resnet18"):
        build_backbone("resnet19")


@pytest.mark.parametrize("name, width, safe", [("resnet18", 8, False), ("resnet34", 8, False), ("resnet18", 16, True), ("resnet50", 8, True)])
def test_channels_last_is_unsafe_only_with_a_strided_1x1_conv_of_fewer_than_16_channels(name, width, safe):
    # resnet18/34 at width 8: layer2's downsample is a stride-2 1x1 conv on 8 channels; resnet50's sees 4 x width
    assert channels_last_is_safe(build_backbone(name, in_channels=1, small_images=True, width=width)) is safe
