import pytest
import torch

from ssl_lightning.augment import SIMCLR_VIEWS, blur_kernel_size, build_views, resolve_views
from ssl_lightning.errors import ConfigError


def grey_batch(n=32, size=28, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 3])
def test_views_keep_shape_dtype_and_range(channels):
    views = build_views(SIMCLR_VIEWS, channels=channels, image_size=28)
    x = torch.rand(16, channels, 28, 28)
    out = views(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6  # blur may round a hair past 1


def test_crop_size_sets_the_view_size():
    views = build_views(resolve_views({"crop_size": 20}, SIMCLR_VIEWS), channels=1, image_size=28)
    assert views(grey_batch(4)).shape == (4, 1, 20, 20)


def test_every_image_gets_its_own_random_draw():
    # The same image 32 times: a batch-level augmentation would give 32 equal views.
    views = build_views(SIMCLR_VIEWS, channels=1, image_size=28)
    x = grey_batch(1).expand(32, -1, -1, -1).contiguous()
    out = views(x).flatten(1)
    distinct = {tuple(row.tolist()) for row in out.round(decimals=4)}
    assert len(distinct) == 32


def test_same_seed_same_views_and_other_seed_other_views():
    views = build_views(SIMCLR_VIEWS, channels=3, image_size=28)
    x = torch.rand(8, 3, 28, 28)
    torch.manual_seed(123)
    a = views(x)
    torch.manual_seed(123)
    b = views(x)
    torch.manual_seed(124)
    c = views(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_colour_steps_only_for_colour_images():
    grey = build_views(SIMCLR_VIEWS, channels=1, image_size=28)
    colour = build_views(SIMCLR_VIEWS, channels=3, image_size=28)
    names = lambda seq: [type(m).__name__ for m in seq]  # noqa: E731
    assert "RandomGrayscale" not in names(grey) and "RandomGrayscale" in names(colour)


def test_blur_off_when_probability_is_zero():
    views = build_views(resolve_views({"blur_prob": 0.0}, SIMCLR_VIEWS), channels=1, image_size=28)
    assert "RandomGaussianBlur" not in [type(m).__name__ for m in views]


def test_blur_kernel_is_a_tenth_of_the_side_and_odd():
    assert blur_kernel_size(28) == 3
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(224) == 23


def test_unknown_view_parameter_is_named():
    with pytest.raises(ConfigError, match="crop_scal"):
        resolve_views({"crop_scal": (0.2, 1.0)}, SIMCLR_VIEWS)
