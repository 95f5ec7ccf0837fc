"""Frozen-encoder features of a data module's images, computed batch by batch and cached on disk.

The cache key is the hash of the encoder (its config and every weight) and of what picks the
images (the data module's arguments, the split, the images' labels and positions): a changed
checkpoint or a different subset gets new features, and a sweep encodes each image once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ssl_lightning.encoder import Encoder
from ssl_lightning.errors import ConfigError

DEFAULT_CACHE_DIR = "~/.cache/ssl-lightning/features"


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensor_bytes(tensor: Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def encoder_fingerprint(encoder: Encoder) -> str:
    """SHA-256 of the encoder's config and weights: what its features depend on."""
    digest = hashlib.sha256(json.dumps(encoder.config, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def extract_features(
    encoder: Encoder, images: Tensor, batch_size: int = 1024, device: torch.device | None = None, desc: str = "features"
) -> Tensor:
    """(N, D) float32 CPU features of ``images`` (N, C, H, W), uint8 in [0, 255] or float in [0, 1]
    (anything else is refused: see ``unit_images``): the encoder in eval mode, no augmentation,
    batched, on the GPU when there is one. The encoder's mode is restored."""
    return encode(encoder, images.split(batch_size), device, desc)


def loader_features(
    encoder: nn.Module, loader: DataLoader, device: torch.device | None = None, desc: str | None = "features"
) -> tuple[Tensor, Tensor]:
    """(N, D) float32 CPU features and (N,) labels of a loader's ``(uint8 images (B, C, H, W),
    labels (B,))`` batches, as ``extract_features`` computes them: a data module's
    ``eval_dataloader(dataset)`` gives the clean images of any of its datasets, in memory or
    streamed. ``desc``: the progress bar's label (None: no bar)."""
    labels: list[Tensor] = []

    def images() -> Iterator[Tensor]:
        for batch_images, batch_labels in loader:
            labels.append(batch_labels)
            yield batch_images

    features = encode(encoder, images(), device, desc, total=len(loader))
    return features, torch.cat(labels)


@torch.no_grad()  # not inference_mode: callers may train a probe on the features
def encode(
    encoder: nn.Module, batches: Iterable[Tensor], device: torch.device | None = None, desc: str | None = "features", total: int | None = None
) -> Tensor:
    """(N, D) float32 CPU features of image batches (B, C, H, W) (see ``unit_images``), concatenated in order
    (a progress bar labelled ``desc`` over ``total`` batches; none where ``desc`` is None).
    ``encoder``: an ``Encoder``, or any module of float images in [0, 1] (``nn.Flatten()``: raw pixels)."""
    device = device or default_device()
    was_training = encoder.training
    encoder.eval().to(device)
    features = [
        encoder(unit_images(batch.to(device, non_blocking=True))).float().cpu()  # (b, D)
        for batch in tqdm(batches, desc=desc, total=total, unit="batch", leave=False, disable=desc is None)
    ]
    encoder.train(was_training)
    return torch.cat(features)


def unit_images(images: Tensor) -> Tensor:
    """Float images in [0, 1] from uint8 images in [0, 255] (divided by 255) or float images in
    [0, 1] (as they are). Anything else is refused in one line: other dtypes, and floats outside
    [0, 1] (already normalised, or still 0-255), whose features would silently be wrong."""
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise ConfigError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}; convert them to one of those")
    low, high = images.min().item(), images.max().item()
    if not 0 <= low <= high <= 1:  # NaN fails too
        raise ConfigError(f"float images must lie in [0, 1], got values from {low:.4g} to {high:.4g}; "
                          "pass the unnormalised images (the encoder normalises them itself), as uint8 or divided by 255")
    return images


def cached_features(
    encoder: Encoder,
    data: Any,
    dataset: Dataset,
    split: str,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    device: torch.device | None = None,
) -> Tensor:
    """(N, D) features of ``dataset``, one of the data module ``data``'s (or part of one): those of
    ``loader_features`` over ``data.eval_dataloader(dataset)``, read from ``cache_dir`` when the
    same encoder has encoded the same images before (``cache_dir=None``: no cache). Files are
    written atomically.

    The images are known by ``dataset_fingerprint``, without decoding them: image files replaced
    under the same names and labels are not noticed (clear the cache then).
    """
    description = f"{type(data).__name__} {split}"
    if cache_dir is None:
        return loader_features(encoder, data.eval_dataloader(dataset), device, desc=description)[0]
    key = f"{encoder_fingerprint(encoder)[:24]}-{type(data).__name__}-{split}-{dataset_fingerprint(data, dataset)[:12]}"
    path = Path(cache_dir).expanduser() / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    features = loader_features(encoder, data.eval_dataloader(dataset), device, desc=description)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(features, partial)
    partial.replace(path)  # atomic: a killed run never leaves a half-written cache file
    return features


def dataset_fingerprint(data: Any, dataset: Dataset) -> str:
    """SHA-256 of what picks ``dataset``'s images: the data module's class and arguments (files,
    size, split seeds), the dataset's length, labels and positions in its source, where it has them."""
    digest = hashlib.sha256(type(data).__name__.encode())
    digest.update(json.dumps(dict(getattr(data, "hparams", {})), sort_keys=True, default=str).encode())
    digest.update(str(len(dataset)).encode())
    digest.update(_tensor_bytes(dataset.labels))
    indices = getattr(dataset, "indices", None)  # a LabelledSubset's positions (streamed images are one too)
    if indices is not None:
        digest.update(_tensor_bytes(torch.as_tensor(indices)))
    return digest.hexdigest()
