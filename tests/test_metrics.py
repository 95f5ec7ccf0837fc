import pytest
import torch

from ssl_lightning.errors import ConfigError
from ssl_lightning.metrics import ranking_metrics


def values(z1, z2):
    return {k: v.item() for k, v in ranking_metrics(z1, z2).items()}


def test_perfect_alignment():
    z = torch.eye(4)  # 4 orthogonal images, both views equal
    assert values(z, z.clone()) == {"acc_top1": 1.0, "acc_top5": 1.0, "acc_mean_pos": 1.0}


def test_hand_computed_ranks():
    # Two images in 2-D. View 1 of image 0 is at 0 deg, its view 2 at 80 deg; image 1's views at
    # 60 and 90 deg. Cosines (a = i0v1 at 0, b = i1v1 at 60, c = i0v2 at 80, d = i1v2 at 90):
    #   a: positive c (cos 80 = .17), candidates b (.5), d (0)    -> rank 1
    #   b: positive d (cos 30 = .87), candidates a (.5), c (.94)  -> rank 1
    #   c: positive a (.17), candidates b (.94), d (.98)          -> rank 2
    #   d: positive b (.87), candidates a (0), c (.98)            -> rank 1
    def at(deg):
        r = torch.deg2rad(torch.tensor(float(deg)))
        return torch.stack([torch.cos(r), torch.sin(r)])

    z1 = torch.stack([at(0), at(60)])
    z2 = torch.stack([at(80), at(90)])
    m = values(z1, z2)
    assert m["acc_top1"] == 0.0
    assert m["acc_top5"] == 1.0
    assert m["acc_mean_pos"] == pytest.approx(1 + (1 + 1 + 2 + 1) / 4)


def argsort_reference(z1, z2, cross_view=False):
    """The UvA tutorial's way: sort each anchor's candidates by similarity and find the positive."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).double()
    n2 = len(z)
    ranks = []
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        other_side = range(n2 // 2, n2) if i < n2 // 2 else range(n2 // 2)
        others = list(other_side) if cross_view else [k for k in range(n2) if k != i]
        order = sorted(others, key=lambda k: -float(z[i] @ z[k]))
        ranks.append(order.index(positive))
    ranks = torch.tensor(ranks, dtype=torch.float64)
    return {"acc_top1": (ranks == 0).double().mean().item(), "acc_top5": (ranks < 5).double().mean().item(),
            "acc_mean_pos": 1 + ranks.mean().item()}


@pytest.mark.parametrize("cross_view", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_an_argsort_reference(seed, cross_view):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(12, 3, generator=g)
    z2 = z1 + 0.7 * torch.randn(12, 3, generator=g)  # noisy views: ranks spread over 0..22
    got = {k: v.item() for k, v in ranking_metrics(z1, z2, cross_view=cross_view).items()}
    want = argsort_reference(z1, z2, cross_view)
    assert 0.0 < want["acc_top1"] < 1.0 and want["acc_mean_pos"] > 1.5  # positives are not all first
    assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("cross_view", [False, True])
def test_bf16_autocast_does_not_make_near_neighbours_tie(cross_view):
    # Images 0.05 apart, their views 0.005: every cosine similarity is within 0.01 of 1, where bf16's step is 0.004.
    g = torch.Generator().manual_seed(0)
    images = torch.ones(16, 8) + 0.05 * torch.randn(16, 8, generator=g)
    z1, z2 = (images + 0.005 * torch.randn(16, 8, generator=g) for _ in range(2))
    want = {k: v.item() for k, v in ranking_metrics(z1, z2, cross_view=cross_view).items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = {k: v.item() for k, v in ranking_metrics(z1.bfloat16(), z2.bfloat16(), cross_view=cross_view).items()}
    assert want["acc_top1"] == 1.0 and got == pytest.approx(want)


def test_hand_computed_ranks_across_views():
    # The 2-D case above, each anchor ranked among the other view's 2 embeddings only:
    #   a (0 deg):  positive c (.17) vs d (0)      -> rank 0
    #   b (60 deg): positive d (.87) vs c (.94)    -> rank 1
    #   c (80 deg): positive a (.17) vs b (.94)    -> rank 1
    #   d (90 deg): positive b (.87) vs a (0)      -> rank 0
    def at(deg):
        r = torch.deg2rad(torch.tensor(float(deg)))
        return torch.stack([torch.cos(r), torch.sin(r)])

    z1, z2 = torch.stack([at(0), at(60)]), torch.stack([at(80), at(90)])
    m = {k: v.item() for k, v in ranking_metrics(z1, z2, cross_view=True).items()}
    assert m == pytest.approx({"acc_top1": 0.5, "acc_top5": 1.0, "acc_mean_pos": 1.5})


def test_worst_case_rank():
    # The two views of each image point in opposite directions: every positive is the least
    # similar of the 2N-1 candidates, rank 2N-2.
    z1 = torch.randn(6, 4)
    m = values(z1, -z1)
    assert m == {"acc_top1": 0.0, "acc_top5": 0.0, "acc_mean_pos": 1 + 10}


def test_collapsed_embeddings_score_the_worst_rank():
    z = torch.ones(5, 3)
    m = values(z, z.clone())
    assert m["acc_top1"] == 0.0
    assert m["acc_mean_pos"] == 1 + (2 * 5 - 2)


def test_single_image_batch_is_rejected():
    with pytest.raises(ConfigError, match="at least 2 images"):
        ranking_metrics(torch.randn(1, 4), torch.randn(1, 4))
