"""Parts of a data module's datasets: for evaluating on fewer images than it holds, and for
training a classifier on a draw of its labelled images."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class LabelledSubset(Dataset):
    """The items of ``dataset`` (any of a data module's datasets: ``(uint8 (C, S, S), int64 label)``
    items and a ``.labels`` (N,) tensor) at ``indices`` (M,), with their ``.labels`` (M,).

    Items are fetched one at a time (no ``__getitems__``), so the default collate stacks them and
    any data module's ``eval_dataloader`` takes the subset, held in memory or streamed alike.
    """

    def __init__(self, dataset: Dataset, indices: Tensor) -> None:
        self.dataset = dataset
        self.indices = indices.tolist()
        self.labels = dataset.labels[indices]  # (M,)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.dataset[self.indices[index]]


def shuffled_loader(data: Any, dataset: Dataset, indices: Tensor, seed: int) -> DataLoader:
    """Shuffled batches of ``dataset`` (one of ``data``'s) at ``indices``, for training a
    classifier: ``data``'s batch size (at most the number of images) and workers, reshuffled
    every epoch by a generator of its own seeded with ``seed`` (the global RNG is not drawn from)."""
    subset = LabelledSubset(dataset, indices)
    batch_size = min(data.batch_size, len(subset))
    return DataLoader(subset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                      num_workers=data.num_workers,
                      drop_last=len(subset) % batch_size == 1)  # batch norm cannot train on a last batch of one image
