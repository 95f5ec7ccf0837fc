"""Subsets: k labelled images per class, drawn stratified and seeded; and plain seeded subsets."""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_lightning.errors import ConfigError


def sample_per_class(labels: Tensor, per_class: int, seed: int) -> Tensor:
    """Positions in ``labels`` (N,) of ``per_class`` images of every class, drawn without
    replacement under ``seed``; sorted, shape (per_class * num_classes,).

    Every class present in ``labels`` gets exactly ``per_class`` images; a class with fewer is an error.
    """
    if per_class < 1:
        raise ConfigError(f"labels per class must be >= 1, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in labels.unique(sorted=True).tolist():
        members = (labels == cls).nonzero().squeeze(1)  # (n_cls,)
        if len(members) < per_class:
            raise ConfigError(
                f"{per_class} labels per class asked for, but class {cls} has only {len(members)} images "
                f"to draw from; use at most {len(members)} per class (or 'all')"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def seeded_subset(count: int, size: int, seed: int = 0) -> Tensor:
    """``size`` distinct positions in ``range(count)`` (all of them where ``size >= count``), in a seeded random order."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size]


def stratified_subset(labels: Tensor, size: int, seed: int = 0) -> Tensor:
    """Sorted positions of ``size`` of ``labels`` (N,) (all of them where ``size >= N``), drawn under
    ``seed`` with each class in its share of ``labels`` (scikit-learn's stratified split)."""
    from sklearn.model_selection import train_test_split

    if size < 1:
        raise ConfigError(f"the subset size must be >= 1, got {size}")
    if size >= len(labels):
        return torch.arange(len(labels))
    positions, _ = train_test_split(torch.arange(len(labels)).numpy(), train_size=size, stratify=labels.numpy(), random_state=seed)
    return torch.as_tensor(positions).sort().values
