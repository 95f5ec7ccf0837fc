"""A queue of past embeddings (MoCo's keys, NNCLR's support set): a first-in, first-out ring buffer
that lives in the state dict, so a checkpoint restores it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.errors import ConfigError


class KeyQueue(nn.Module):
    """K keys of dimension D; ``enqueue`` overwrites the oldest ones.

    Starts with random unit vectors, as MoCo does. Keys are stored detached and L2-normalised.
    ``setting`` names its size's setting in error messages.
    """

    def __init__(self, size: int, dim: int, setting: str = "MoCo queue_size") -> None:
        super().__init__()
        self.setting = setting
        if size < 1:
            raise ConfigError(f"{setting} must be >= 1, got {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # (K, D)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to write, saved in checkpoints
        self._next = 0  # the same, on the host: reading the buffer every step would wait for the GPU

    def check_batch_size(self, n: int) -> None:
        """Batches of n keys must tile the queue exactly, so a batch never wraps."""
        size = self.keys.shape[0]
        if size % n:
            raise ConfigError(f"{self.setting} ({size}) must be a multiple of the batch size summed over processes ({n}); change one of them")

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write a batch of N keys over the N oldest."""
        n, size = keys.shape[0], self.keys.shape[0]
        self.check_batch_size(n)
        start = self._next
        self.keys[start : start + n] = F.normalize(keys.detach(), dim=1).to(self.keys.dtype)
        self._next = (start + n) % size
        self.pointer.fill_(self._next)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "pointer" in state_dict:  # a restored queue continues where it was
            self._next = int(state_dict[prefix + "pointer"])
