"""Ranking metrics of the positive pair, shared by every pretraining method.

For each of the 2N anchors (views), its positive (the other view of the same image) is ranked
by cosine similarity among the candidates; rank 0 means the positive is the most similar.
Candidates are the other 2N-1 views (UvA tutorial) or, with ``cross_view=True``, the N views of
the other side only: for methods whose two embeddings come from different networks (MoCo's
queries and keys, BYOL's predictions and targets), similarities within one side say nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.losses import check_view_pair, cosine_similarity_matrix, float32_math, positive_index


def ranking_metrics(z1: Tensor, z2: Tensor, cross_view: bool = False) -> dict[str, Tensor]:
    """``acc_top1`` (share of anchors with rank 0), ``acc_top5`` (rank < 5) and ``acc_mean_pos``
    (1 + mean rank), as defined in the UvA SimCLR tutorial.

    Ties count against the positive: a negative exactly as similar as the positive ranks above it,
    so a collapsed embedding (all views equal) scores the worst rank (2N-2; N-1 across views),
    not the best. Similarities are float32 even under bf16 autocast, whose 8-bit mantissa would
    make near neighbours tie with the positive.

    Args:
        z1: (N, D) embeddings of the first views; row n comes from image n.
        z2: (N, D) embeddings of the second views, row for row.
        cross_view: rank each anchor among the other side's N embeddings only.
    Returns:
        dict of scalar tensors (kept on the device: no host synchronisation).
    """
    check_view_pair(z1, z2)
    n = z1.shape[0]
    z1, z2 = z1.detach().float(), z2.detach().float()
    with float32_math(z1):
        if cross_view:
            across = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T  # (N, N)
            sim = torch.cat([across, across.T])  # (2N, N): view-1 anchors vs view 2, then view-2 anchors vs view 1
            pos_idx = torch.arange(n, device=sim.device).repeat(2)  # (2N,): positives on the diagonal
        else:
            sim = cosine_similarity_matrix(z1, z2)  # (2N, 2N)
            pos_idx = positive_index(n, sim.device)  # (2N,)
    pos_sim = sim.gather(1, pos_idx[:, None])  # (2N, 1)
    # Rank = number of candidates at least as similar as the positive, the positive excluded.
    rank = (sim >= pos_sim).sum(dim=1) - 1  # (2N,)
    return {
        "acc_top1": (rank == 0).float().mean(),
        "acc_top5": (rank < 5).float().mean(),
        "acc_mean_pos": 1 + rank.float().mean(),
    }
