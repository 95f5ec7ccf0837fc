"""Frozen-encoder features of a dataset split, computed once and cached on disk.

The cache key is the hash of the encoder (its config and every weight), the dataset's name, the
split and a hash of the images themselves: a changed checkpoint or a different subset gets new
features, and a sweep encodes each image once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ssl_lightning.encoder import Encoder

DEFAULT_CACHE_DIR = "~/.cache/ssl-lightning/features"


def default_device() -> torch.device:
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


@torch.inference_mode()
def extract_features(
    encoder: Encoder, images: Tensor, batch_size: int = 1024, device: torch.device | None = None, desc: str = "features"
) -> Tensor:
    """(N, D) float32 CPU features of uint8 ``images`` (N, C, H, W): the encoder in eval mode, no
    augmentation, batched, on the GPU when there is one. The encoder's mode is restored."""
    device = device or default_device()
    was_training = encoder.training
    encoder.eval().to(device)
    features = [
        encoder(batch.to(device, non_blocking=True).float() / 255).float().cpu()  # (b, D)
        for batch in tqdm(images.split(batch_size), desc=desc, unit="batch", leave=False)
    ]
    encoder.train(was_training)
    return torch.cat(features)


def cached_features(
    encoder: Encoder,
    images: Tensor,
    dataset: str,
    split: str,
    cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> Tensor:
    """``extract_features``, read from ``cache_dir`` when the same encoder has seen the same
    dataset split before (``cache_dir=None``: no cache). Files are written atomically."""
    if cache_dir is None:
        return extract_features(encoder, images, batch_size, device, desc=f"{dataset} {split}")
    images_hash = hashlib.sha256(_tensor_bytes(images)).hexdigest()[:12]
    path = Path(cache_dir).expanduser() / f"{encoder_fingerprint(encoder)[:24]}-{dataset}-{split}-{images_hash}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    features = extract_features(encoder, images, batch_size, device, desc=f"{dataset} {split}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(features, partial)
    partial.replace(path)  # atomic: a killed run never leaves a half-written cache file
    return features
