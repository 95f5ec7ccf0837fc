import math

import pytest
import torch

from ssl_lightning.augment import (
    BYOL_VIEWS,
    SIMCLR_VIEW,
    SIMCLR_VIEWS,
    ViewPipelines,
    blur_kernel_size,
    build_view,
    resolve_view,
    resolve_views,
    view_side,
)
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.errors import ConfigError
from ssl_lightning.methods import BYOL, Supervised

# Only the op under test: the whole image, unflipped, no jitter (the crop is then the identity).
PLAIN = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip_prob": 0.0, "jitter_prob": 0.0, "blur_prob": 0.0}


def grey_batch(n=32, size=28, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 3])
def test_views_keep_shape_dtype_and_range(channels):
    views = build_view(SIMCLR_VIEW, channels=channels, image_size=28)
    x = torch.rand(16, channels, 28, 28)
    out = views(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6  # blur may round a hair past 1


def test_crop_size_sets_the_view_size():
    views = build_view(resolve_view({"crop_size": 20}, SIMCLR_VIEW), channels=1, image_size=28)
    assert views(grey_batch(4)).shape == (4, 1, 20, 20)


def test_every_image_gets_its_own_random_draw():
    # The same image 32 times: a batch-level augmentation would give 32 equal views.
    views = build_view(SIMCLR_VIEW, channels=1, image_size=28)
    x = grey_batch(1).expand(32, -1, -1, -1).contiguous()
    out = views(x).flatten(1)
    distinct = {tuple(row.tolist()) for row in out.round(decimals=4)}
    assert len(distinct) == 32


def test_same_seed_same_views_and_other_seed_other_views():
    views = ViewPipelines(BYOL_VIEWS, channels=3, image_size=28)
    x = torch.rand(8, 3, 28, 28)
    torch.manual_seed(123)
    a = views(x)
    torch.manual_seed(123)
    b = views(x)
    torch.manual_seed(124)
    c = views(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not any(torch.allclose(u, v) for u, v in zip(a, c))


def test_colour_steps_only_for_colour_images():
    grey = build_view(SIMCLR_VIEW, channels=1, image_size=28)
    colour = build_view(SIMCLR_VIEW, channels=3, image_size=28)
    names = lambda seq: [type(m).__name__ for m in seq]  # noqa: E731
    assert "RandomGrayscale" not in names(grey) and "RandomGrayscale" in names(colour)


def test_blur_and_solarize_off_when_their_probability_is_zero():
    views = build_view(resolve_view({"blur_prob": 0.0, "solarize_prob": 0.0}, SIMCLR_VIEW), channels=1, image_size=28)
    assert {"RandomGaussianBlur", "RandomSolarize"}.isdisjoint(type(m).__name__ for m in views)


def test_blur_kernel_is_a_tenth_of_the_side_and_odd():
    assert blur_kernel_size(28) == 3
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(224) == 23


def test_unknown_view_parameter_is_named():
    with pytest.raises(ConfigError, match="crop_scal"):
        resolve_views({"crop_scal": (0.2, 1.0)}, SIMCLR_VIEWS)
    with pytest.raises(ConfigError, match="crop_scal"):
        resolve_views([{}, {"crop_scal": (0.2, 1.0)}], SIMCLR_VIEWS)


def test_a_mapping_overrides_every_view_and_a_list_each_view():
    both = resolve_views({"blur_prob": 0.3}, BYOL_VIEWS)
    assert [v["blur_prob"] for v in both] == [0.3, 0.3]
    assert [v["solarize_prob"] for v in both] == [0.0, 0.2]  # keys left out: the method's per-view defaults
    each = resolve_views([{"solarize_prob": 0.5}, {}], BYOL_VIEWS)
    assert [(v["blur_prob"], v["solarize_prob"]) for v in each] == [(1.0, 0.5), (0.1, 0.2)]
    assert resolve_views(None, BYOL_VIEWS) == BYOL_VIEWS


def test_a_list_of_the_wrong_length_says_how_many_entries_the_method_has():
    with pytest.raises(ConfigError, match="views have 2 entries.*lists 3.*one mapping"):
        BYOL(encoder=EncoderConfig(width=8), views=[{}, {}, {}])


def test_one_mapping_makes_the_views_the_single_pipeline_made():
    """A mapping for two alike views: the same views, draw for draw, as one pipeline on the
    batch twice over (``pipeline(cat([x, x])).chunk(2)``), and as the list of the mapping twice."""
    x = grey_batch(8)
    mapping = {"crop_scale": (0.2, 1.0), "blur_prob": 0.5}
    pipeline = build_view(resolve_view(mapping, SIMCLR_VIEW), channels=1, image_size=28)
    torch.manual_seed(0)
    single = pipeline(torch.cat([x, x])).chunk(2)
    for views in (mapping, [mapping, mapping]):
        torch.manual_seed(0)
        made = ViewPipelines(resolve_views(views, SIMCLR_VIEWS), channels=1, image_size=28)(x)
        assert len(made) == 2 and all(torch.equal(a, b) for a, b in zip(made, single))


def test_a_list_of_one_mapping_is_the_one_view_mapping():
    x = grey_batch(8)
    made = []
    for views in ({"crop_scale": (0.5, 1.0)}, [{"crop_scale": (0.5, 1.0)}]):
        torch.manual_seed(0)
        made.append(Supervised(encoder=EncoderConfig(width=8), views=views).views(x))
    assert len(made[0]) == len(made[1]) == 1 and torch.equal(made[0][0], made[1][0])


def test_multi_crop_views_have_their_own_sizes():
    """Two global crops and four small ones, as multi-crop (SwAV, DINO) asks."""
    small = {**SIMCLR_VIEW, "crop_size": 12, "crop_scale": (0.05, 0.4)}
    views = ViewPipelines([SIMCLR_VIEW, SIMCLR_VIEW, *[small] * 4], channels=3, image_size=32)
    made = views(torch.rand(5, 3, 32, 32))
    assert [tuple(v.shape) for v in made] == [(5, 3, 32, 32)] * 2 + [(5, 3, 12, 12)] * 4
    assert views.repeats == [2, 4]  # alike views made in one call each
    assert not torch.allclose(made[2], made[3])  # each small crop its own draw


def test_solarize_inverts_pixels_at_or_above_the_configured_threshold():
    x = torch.tensor([0.1, 0.29, 0.3, 0.5, 0.8, 1.0]).view(1, 1, 1, 6)
    for threshold, expected in ((0.5, [0.1, 0.29, 0.3, 0.5, 0.2, 0.0]), (0.3, [0.1, 0.29, 0.7, 0.5, 0.2, 0.0])):
        config = resolve_view({**PLAIN, "solarize_prob": 1.0, "solarize_threshold": threshold}, SIMCLR_VIEW)
        out = build_view(config, channels=1, image_size=6)[-1](x.expand(4, 1, 1, 6))  # the solarization step
        assert torch.allclose(out, torch.tensor(expected).expand(4, 1, 1, 6)), threshold


def within_binomial(count: int, n: int, p: float) -> bool:
    """``count`` successes of ``n`` are within 4 standard deviations of a Binomial(n, p)."""
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1e-9


def test_each_view_follows_its_own_blur_and_solarize_probabilities():
    """BYOL's asymmetric views on 2,000 images: view 1 always blurred and never solarized, view 2
    blurred 10% and solarized 20% of the time, each image drawn on its own.

    The images are noise in [0, 0.4] on the left and a bright 0.9 block on the right; with the crop
    an identity, a view is blurred iff its left interior changed (blur mixes values below 0.4, which
    solarization at 0.5 leaves alone) and solarized iff the bright block is gone (no pixel >= 0.5)."""
    n, side = 2000, 16
    x = torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0)) * 0.4
    x[..., side // 2 :] = 0.9
    configs = [resolve_view({**PLAIN, **byol, "blur_sigma": (1.0, 2.0)}, SIMCLR_VIEW) for byol in
               ({"blur_prob": 1.0, "solarize_prob": 0.0}, {"blur_prob": 0.1, "solarize_prob": 0.2})]
    torch.manual_seed(0)
    views = ViewPipelines(configs, channels=1, image_size=side)(x)
    interior = (..., slice(1, side - 1), slice(1, side // 2 - 2))
    for view, config in zip(views, configs):
        blurred = ((view - x)[interior].abs().flatten(1).amax(1) > 1e-3).sum().item()
        solarized = (view.flatten(1).amax(1) < 0.5).sum().item()
        assert within_binomial(blurred, n, config["blur_prob"]), (blurred, config["blur_prob"])
        assert within_binomial(solarized, n, config["solarize_prob"]), (solarized, config["solarize_prob"])


def test_copies_and_a_share_of_the_side_make_multi_crop():
    """An entry with copies n stands for n views; a float crop_size is a share of the images' side."""
    configs = resolve_views([{}, {"copies": 3}], [SIMCLR_VIEW, {**SIMCLR_VIEW, "crop_size": 96 / 224}])
    assert len(configs) == 4
    made = ViewPipelines(configs, channels=1, image_size=28)(grey_batch(2))
    assert [v.shape[-1] for v in made] == [28, 12, 12, 12]
    assert view_side({**SIMCLR_VIEW, "crop_size": 20}, 28) == 20 and view_side(SIMCLR_VIEW, 28) == 28
    assert len(resolve_views([{}, {"copies": 0}], [SIMCLR_VIEW, SIMCLR_VIEW])) == 1  # copies 0 leaves a view out
    for bad, message in (({"copies": -1}, "copies must be an integer >= 0"), ({"copies": 0}, "at least one view"),
                         ({"crop_size": 1.5}, "share of the images' side in"), ({"crop_size": 0.01}, "at least 3 pixels, got 0")):
        with pytest.raises(ConfigError, match=message):
            view_side(resolve_views([bad], [SIMCLR_VIEW])[0], 28)
