"""The one place where tensors cross processes: ``gather`` for the losses that compare every image
of the global batch (SimCLR, Barlow Twins), MoCo's queue and online evaluation."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(x: Tensor) -> Tensor:
    """``x`` (N, ...) of every process, concatenated in rank order: (world_size * N, ...). Every
    process passes the same N. Without ``torch.distributed`` (one process) it returns ``x``.

    Gradients: where ``x`` requires grad, the gather is ``torch.distributed.nn``'s, whose backward
    sums over processes the gradient that each process's loss sends to this process's slice. DDP
    then averages the processes' parameter gradients. So when every process computes the loss of
    the whole gathered batch, the update equals one process's on the concatenated batch (a gather
    that passes back only the local gradient is off by 1/world_size: lightly issue #1977).
    Tensors without grad (keys, labels: any dtype, also under gloo) take the plain collective.
    """
    if world_size() == 1:
        return x
    if x.requires_grad:
        with warnings.catch_warnings():
            # torch >= 2.14 deprecates torch.distributed.nn for a private module; the public API
            # still works and test_distributed.py checks its gradients, so the notice is not shown.
            warnings.filterwarnings("ignore", message="torch.distributed.nn.functional.all_gather is deprecated")
            gathered = torch.cat(dist_nn.all_gather(x))
        # Its backward sends each process its slice of this gradient with gloo's all-to-all, which
        # reads a non-contiguous slice (of a transposed gradient) as if it were contiguous.
        gathered.register_hook(lambda grad: grad.contiguous())
        return gathered
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
