"""Collapse monitors: two numbers that show an embedding collapsing (every image mapped to one
point, or to a low-dimensional subspace) long before a probe would."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def normalized_std(z: Tensor) -> Tensor:
    """SimSiam's collapse diagnostic (arXiv:2011.10566, Sec. 4.1): the standard deviation over the
    batch of each dimension of the L2-normalised embeddings, averaged over the D dimensions. 0 when
    collapsed to a point; about 1/sqrt(D) when the embeddings are spread over the sphere.

    Args:
        z: (N, D) embeddings, N >= 2.
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def rankme(z: Tensor, eps: float = 1e-7) -> Tensor:
    """RankMe (Garrido et al., arXiv:2210.02885), the effective rank of the embeddings:
    exp of the entropy of the normalised singular values, p_k = σ_k / ‖σ‖₁ + ε. 1 when collapsed
    to one direction; up to min(N, D) when the embeddings fill every dimension.

    Args:
        z: (N, D) embeddings.
    """
    singular_values = torch.linalg.svdvals(z.float())  # (min(N, D),)
    p = singular_values / singular_values.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
    return torch.exp(-(p * torch.log(p)).sum())


def mean_entropy(p: Tensor) -> Tensor:
    """The mean entropy -Σ_k p_k log p_k of distributions ``p`` (..., K): DINO's collapse analysis
    (arXiv:2104.14294, Sec. 5.3) watches the teacher's. log K when every distribution is uniform
    (uniform collapse), 0 when each puts all its mass on one k."""
    return -(p * p.clamp_min(1e-12).log()).sum(dim=-1).mean()


class CollapseMonitor(Metric):
    """Keeps an epoch's embeddings (every process's, under DDP) and computes ``normalized_std``
    and ``rankme`` on all of them together: both depend on the batch size, so batch means would not
    be comparable across runs. Its states are not saved in checkpoints."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, z: Tensor) -> None:
        self.embeddings.append(z.detach().float())

    def compute(self) -> dict[str, Tensor]:
        z = dim_zero_cat(self.embeddings)  # (N, D), N = the epoch's images
        return {"embedding_std": normalized_std(z), "rankme": rankme(z)}
