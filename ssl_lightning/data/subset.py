"""Part of a data module's dataset, for evaluating on fewer images than it holds."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset


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
