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


# A one-block ViT-Tiny: the architecture of every size, at a fraction of the cost.
TINY_VIT = dict(backbone="vit_tiny", depth=1)


def vit_encoder(size=28, channels=1, **config):
    from ssl_lightning import Encoder, EncoderConfig

    torch.manual_seed(0)
    return Encoder(EncoderConfig(**{**TINY_VIT, **config}, in_channels=channels, input_size=size, mean=(0.5,) * channels,
                                 std=(0.25,) * channels)).eval()


@pytest.mark.parametrize("size, channels, patch, tokens", [(28, 1, 4, 7), (28, 1, 7, 4), (32, 3, 4, 8), (96, 3, 8, 12)])
def test_vit_encodes_28_32_and_96_pixel_images(size, channels, patch, tokens):
    encoder = vit_encoder(size, channels, patch_size=None if patch != 7 else 7)  # None: the size's default patch
    assert encoder.config["patch_size"] == patch and encoder.backbone.patch_embed.grid_size == (tokens, tokens)
    assert encoder.out_dim == 192
    with torch.no_grad():
        assert encoder(torch.rand(2, channels, size, size)).shape == (2, 192)
        assert encoder(torch.rand(2, channels, 20, 20)).shape == (2, 192)  # resized to its own side first


def test_cls_and_mean_pooling_against_the_tokens():
    x = torch.rand(3, 1, 28, 28)
    cls, mean = vit_encoder(pooling="cls"), vit_encoder(pooling="mean")
    with torch.no_grad():
        features = {name: encoder(x) for name, encoder in (("cls", cls), ("mean", mean))}
        normalised = (x - 0.5) / 0.25
        tokens = cls.backbone.forward_features(normalised)  # (N, 1 + 49, D), after the last LayerNorm
        assert torch.allclose(features["cls"], tokens[:, 0], atol=1e-6)
        tokens = mean.backbone.forward_features(normalised)  # (N, 1 + 49, D); the LayerNorm comes after the mean
        assert torch.allclose(features["mean"], mean.backbone.fc_norm(tokens[:, 1:].mean(dim=1)), atol=1e-5)
    assert not torch.allclose(features["cls"], features["mean"], atol=1e-2)


def test_a_vit_encodes_local_crops_at_their_own_size():
    encoder = vit_encoder(32, 3)
    crops = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        own, resized = encoder(crops, resize=False), encoder(crops)
    assert own.shape == resized.shape == (2, 192) and not torch.allclose(own, resized, atol=1e-3)
    with pytest.raises(ConfigError, match="make the view's crop_size a multiple of 4"):
        encoder(torch.rand(2, 3, 14, 14), resize=False)


def test_vit_errors_and_the_resnet_settings_it_ignores():
    with pytest.raises(ConfigError, match=r"choose one of \[.*'resnet18'.*'vit_small'.*'vit_tiny'\]"):
        build_backbone("vit_gigantic")
    with pytest.raises(ConfigError, match=r"encoder.patch_size 4 \(the default at 30 px\) does not divide encoder.input_size 30"):
        vit_encoder(30)
    with pytest.raises(ConfigError, match="encoder.patch_size 5 does not divide encoder.input_size 28"):
        vit_encoder(28, patch_size=5)
    with pytest.raises(ConfigError, match=r"encoder.pooling must be one of \['cls', 'mean'\], got 'max'"):
        vit_encoder(pooling="max")
    plain, resnet_settings = vit_encoder(), vit_encoder(width=8, small_images=False, channels_last=True)
    assert plain.state_dict().keys() == resnet_settings.state_dict().keys()
    assert all(torch.equal(v, resnet_settings.state_dict()[k]) for k, v in plain.state_dict().items())
    assert not resnet_settings.channels_last  # a layout for convolution stacks; a ViT's tokens are not one


def test_simclr_trains_a_vit_and_its_checkpoint_gives_the_same_features(tmp_path):
    from conftest import RandomImages, fit
    from ssl_lightning import EncoderConfig, load_encoder
    from ssl_lightning.methods import SimCLR

    torch.manual_seed(0)
    model = SimCLR(projection_hidden_dim=16, projection_dim=8,
                   encoder=EncoderConfig(**TINY_VIT, in_channels=1, input_size=16, mean=(0.5,), std=(0.29,)))
    before = model.encoder.backbone.blocks[0].attn.qkv.weight.clone()
    _, checkpoint = fit(model, RandomImages(batch_size=16, val_size=32), tmp_path, max_steps=2, limit_val_batches=0)
    assert not torch.equal(before, model.encoder.backbone.blocks[0].attn.qkv.weight)
    loaded = load_encoder(checkpoint.last_model_path)
    assert loaded.config == model.encoder.config and loaded.config["patch_size"] == 4
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.encoder.eval()(x))
