"""A dataset of uint8 images held in memory, served a whole batch at a time."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and int64 labels (N,).

    The DataLoader's fetcher calls ``__getitems__`` with a batch's indices, so a batch is one
    tensor index instead of N Python calls and a stack; pass ``collate_fn=keep_batch``.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError(f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        return self.images[indices], self.labels[indices]  # (B, C, H, W), (B,)


def keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Collate function for ``InMemoryImages``: the batch is already stacked."""
    return batch
