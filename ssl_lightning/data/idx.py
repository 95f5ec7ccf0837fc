"""Reader for the IDX format of (Fashion-)MNIST (http://yann.lecun.com/exdb/mnist/), gzipped or not.

Hand-written because torchvision's reader is private API and needs its own folder layout.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ssl_lightning.errors import DataNotFoundError

_UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> torch.Tensor:
    """The uint8 array stored in an IDX file, as a tensor shaped by the file's header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataNotFoundError(f"cannot read {path} ({err}); reinstall the dataset (make install)") from err
    zero, dtype, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype != _UNSIGNED_BYTE:
        raise DataNotFoundError(f"{path} is not an IDX file of unsigned bytes; reinstall the dataset (make install)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataNotFoundError(f"{path} is truncated: header says {shape}, found {len(body)} bytes; reinstall the dataset (make install)")
    return torch.from_numpy(np.frombuffer(body, dtype=np.uint8).reshape(shape).copy())
