"""Weighted k-nearest-neighbour classification of features (Wu et al., InstDisc, arXiv:1805.01978, Eq. 6).

Hand-written: scikit-learn's KNeighborsClassifier has no temperature-weighted cosine vote and
runs on the CPU only; this is one matmul and a top-k per chunk of queries, on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_lightning.classification import accuracy
from ssl_lightning.errors import ConfigError


def knn_scores(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 4096,
) -> Tensor:
    """Class scores (Q, num_classes) of ``queries`` (Q, D) from their ``k`` nearest neighbours in
    ``bank`` (M, D) with labels ``bank_labels`` (M,).

    Similarity is cosine; neighbour i votes for its class with weight exp(s_i / temperature).
    Where the bank holds fewer than ``k`` features, all of them vote.
    """
    if k < 1 or temperature <= 0:
        raise ConfigError(f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    if len(bank) == 0:
        raise ConfigError("kNN needs at least one labelled feature in its bank")
    k = min(k, len(bank))
    bank = F.normalize(bank.float(), dim=1)
    scores = []
    for chunk in F.normalize(queries.float(), dim=1).split(chunk_size):
        similarity, neighbour = (chunk @ bank.T).topk(k, dim=1)  # (q, k) each
        # Shifted by each row's top similarity so small temperatures cannot overflow; votes keep their ratios.
        weights = ((similarity - similarity[:, :1]) / temperature).exp()  # (q, k)
        votes = torch.zeros(len(chunk), num_classes, device=chunk.device, dtype=weights.dtype)  # (q, C)
        scores.append(votes.scatter_add_(1, bank_labels[neighbour], weights))
    return torch.cat(scores)  # (Q, C)


def knn_accuracy(
    bank: Tensor, bank_labels: Tensor, queries: Tensor, labels: Tensor, num_classes: int, k: int = 200, temperature: float = 0.1
) -> float:
    """Share of ``queries`` whose highest-scoring class (``knn_scores``) is their label."""
    return accuracy(knn_scores(bank, bank_labels, queries, num_classes, k, temperature), labels)
