"""Small sharded datasets for the tests: random uint8 images whose label is their position in the
source, so a batch's labels say which images it holds."""

from pathlib import Path

import torch

from ssl_lightning.data.prepare import write_shards
from ssl_lightning.data.source import TensorSource


def numbered_images(n: int, channels: int = 1, size: int = 16, seed: int = 0) -> TensorSource:
    """``n`` random images (n, C, S, S) uint8; image i has label i."""
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return TensorSource(images, torch.arange(n))


def write_numbered_shards(output: Path, n: int, val_size: int, test_size: int | None = None, seed: int = 0, **kwargs) -> TensorSource:
    """A sharded dataset of ``numbered_images(n)`` (every image its own class) in ``output``: a
    seeded random ``val_size`` of them for validation, the rest for training, both shuffled; small
    chunks (2 KB, 8 images of 16x16), so that even a few images make several shards."""
    source = numbered_images(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test = numbered_images(test_size, seed=1) if test_size else None
    write_shards(source, output, train=order[val_size:], val=order[:val_size], test_source=test,
                 classes=[f"image {i}" for i in range(n)], chunk_bytes=kwargs.pop("chunk_bytes", "2KB"), **kwargs)
    return source
