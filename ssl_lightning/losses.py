"""Self-supervised losses, each a pure function of tensors (no state, no logging)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.errors import ConfigError


def check_view_pair(z1: Tensor, z2: Tensor) -> None:
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ConfigError(f"expected two (N, D) embeddings of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ConfigError(
            f"a contrastive batch needs at least 2 images (got {z1.shape[0]}): the negatives are the "
            "other images of the batch; raise the batch size"
        )


def positive_index(n: int, device: torch.device | None = None) -> Tensor:
    """For the 2N views ordered [view 1 of images 0..N-1, view 2 of images 0..N-1], the index of
    each view's positive (the other view of the same image)."""
    return torch.cat([torch.arange(n, 2 * n, device=device), torch.arange(0, n, device=device)])  # (2N,)


def cosine_similarity_matrix(z1: Tensor, z2: Tensor) -> Tensor:
    """Cosine similarities between all 2N views, with each view's similarity to itself set to -inf
    so that it is never a candidate."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    sim = z @ z.T  # (2N, 2N)
    self_mask = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    return sim.masked_fill(self_mask, float("-inf"))  # (2N, 2N)


def info_nce(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent loss (arXiv:2002.05709, Eq. 1), averaged over all 2N anchors.

    For anchor i with positive j(i), and sim the cosine similarity:
        l_i = -log( exp(sim(i, j(i)) / T) / sum_{k != i} exp(sim(i, k) / T) )
    The 2N-2 views of the other images are the negatives.

    Args:
        z1, z2: (N, D) embeddings of the two views; row n of each comes from image n.
        temperature: T > 0.
    Returns:
        scalar loss.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    check_view_pair(z1, z2)
    logits = cosine_similarity_matrix(z1, z2) / temperature  # (2N, 2N)
    return F.cross_entropy(logits, positive_index(z1.shape[0], z1.device))
