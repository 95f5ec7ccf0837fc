import math

import pytest
import torch

from ssl_lightning.errors import ConfigError
from ssl_lightning.losses import info_nce


def nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """NT-Xent written straight from SimCLR's Eq. 1, one anchor at a time, in float64."""
    views = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n = len(z1)
    total = 0.0
    for i, anchor in enumerate(views):
        positive = (i + n) % (2 * n)
        numerator = math.exp(float(anchor @ views[positive]) / temperature)
        denominator = sum(math.exp(float(anchor @ views[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(numerator / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("n, d, temperature", [(2, 3, 0.5), (5, 8, 0.1), (16, 4, 1.0), (7, 32, 0.07)])
def test_info_nce_matches_the_papers_formula(n, d, temperature):
    g = torch.Generator().manual_seed(n * d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert info_nce(z1, z2, temperature).item() == pytest.approx(nt_xent_loop(z1, z2, temperature), rel=1e-5)


def test_info_nce_closed_form_for_orthogonal_images():
    # Two images, views identical to their image, images orthogonal: every anchor has
    # sim(positive) = 1 and two negatives with sim 0, so l = -log(e^(1/T) / (e^(1/T) + 2)).
    z1 = torch.eye(2)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert info_nce(z1, z1.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_scale_invariant_and_differentiable():
    z1 = torch.randn(6, 5, requires_grad=True)
    z2 = torch.randn(6, 5)
    loss = info_nce(z1, z2, 0.2)
    assert info_nce(3 * z1, 0.5 * z2, 0.2).item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_info_nce_rejects_non_positive_temperature(temperature):
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        info_nce(torch.randn(4, 3), torch.randn(4, 3), temperature)


def test_info_nce_rejects_a_single_image():
    with pytest.raises(ConfigError, match="at least 2 images"):
        info_nce(torch.randn(1, 3), torch.randn(1, 3), 0.5)


def test_info_nce_rejects_mismatched_views():
    with pytest.raises(ConfigError, match="equal shape"):
        info_nce(torch.randn(4, 3), torch.randn(5, 3), 0.5)
