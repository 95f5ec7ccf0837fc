"""MoCo's queue of past keys: a first-in, first-out ring buffer that lives in the state dict, so a
checkpoint restores it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.errors import ConfigError


class KeyQueue(nn.Module):
    """K keys of dimension D; ``enqueue`` overwrites the oldest ones.

    Starts with random unit vectors, as MoCo does. Keys are stored detached and L2-normalised.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # (K, D)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to write

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write a batch of N keys over the N oldest; N must divide K so a batch never wraps."""
        size, n = self.keys.shape[0], keys.shape[0]
        if size % n:
            raise ConfigError(f"queue_size ({size}) must be a multiple of the batch size ({n}); change one of them")
        start = int(self.pointer)
        self.keys[start : start + n] = F.normalize(keys.detach(), dim=1).to(self.keys.dtype)
        self.pointer.fill_((start + n) % size)
