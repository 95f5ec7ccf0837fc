"""A dataset that decodes its images on demand, in DataLoader worker processes, for data larger
than memory."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

from ssl_lightning.data.source import ImageSource


class StreamingImages(Dataset):
    """The images of ``source`` at positions ``indices`` (M,), each decoded when a batch asks for
    it: (uint8 (C, S, S), int64 label). Decoding is deterministic (a fixed resize and centre crop);
    the random views are made later, on the device."""

    def __init__(self, source: ImageSource, indices: Tensor) -> None:
        self.source = source
        self.indices = indices.tolist()
        self.labels = source.labels[indices]  # (M,)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.source.decode(self.indices[index]), self.labels[index]
