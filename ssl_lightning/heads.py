"""Projection heads: small MLPs put on top of the backbone during pretraining only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_lightning.errors import ConfigError


class ProjectionHead(nn.Module):
    """An MLP: ``num_layers - 1`` hidden blocks of Linear -> BatchNorm -> ReLU (Linear -> ReLU
    without ``batch_norm``), then a Linear to ``out_dim`` (with a bias unless ``last_bias=False``),
    and with ``last_batch_norm`` a BatchNorm without affine parameters on the output.
    A Linear followed by BatchNorm has no bias: BN's shift makes it redundant.

    Each method builds the head of its paper:

    - SimCLR (arXiv:2002.05709, Sec. 2.1), 2 layers: "We use a MLP with one hidden layer to obtain
      z_i = g(h_i) = W(2) σ(W(1) h_i) where σ is a ReLU non-linearity"; its reference code adds
      BatchNorm (``batch_norm=True``; the UvA tutorial's head has none).
    - MoCo v2 (arXiv:2003.04297, Sec. 2): "we replace the fc head in MoCo with a 2-layer MLP head
      (hidden layer 2048-d, with ReLU)": Linear -> ReLU -> Linear, no BatchNorm
      (``batch_norm=False``, as the authors' code). BN in the head is MoCo v3's design, and BN in
      the key head is one more way for a query to read its key's batch statistics.
    - BYOL's projector and predictor (arXiv:2006.07733, Sec. 3.3), 2 layers: "a linear layer with
      output size 4096 followed by batch normalization, rectified linear units (ReLU), and a final
      linear layer with output dimension 256".
    - Barlow Twins' projector (arXiv:2103.03230, Sec. 3), 3 layers: "The projector network has
      three linear layers, each with 8192 output units. The first two layers of the projector are
      followed by a batch normalization layer and rectified linear units." The authors' code
      (facebookresearch/barlowtwins, main.py) has no bias in any of them (``last_bias=False``).
    - VICReg's expander (arXiv:2105.04906), 3 layers: two fully-connected layers with batch
      normalization and ReLU, then a linear one, 8192 units each; the official code's last layer has
      no bias (``last_bias=False``).
    - SimSiam's projector (arXiv:2011.10566, Sec. 4), 3 layers: "The projection MLP (in f) has BN
      applied to each fully-connected (fc) layer, including its output fc. Its output fc has no
      ReLU. The hidden fc is 2048-d"; the official code's output BN has no affine parameters
      (``last_bias=False, last_batch_norm=True``). Its predictor, 2 layers: "The prediction MLP (h)
      has BN applied to its hidden fc layers. Its output fc does not have BN or ReLU", a 512-d
      bottleneck between 2048-d input and output.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True,
                 last_bias: bool = True, last_batch_norm: bool = False, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim, num_layers) < 1:  # here, in one line, not as torch's tensor-size error
            raise ConfigError(f"a head's widths and layer count must be >= 1, got in {in_dim}, hidden {hidden_dim}, out {out_dim}, "
                              f"{num_layers} layer(s); check the model's head options (projection_dim, ...)")
        layers: list[nn.Module] = []
        for i in range(num_layers - 1):
            layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(activation())
        layers.append(nn.Linear(hidden_dim if num_layers > 1 else in_dim, out_dim, bias=last_bias))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)  # (N, out_dim)


class Prototypes(nn.Linear):
    """SwAV's K prototypes (arXiv:2006.09882, Sec. 3.1): the scores of embeddings z (N, dim) are
    prototypes · z, a Linear without bias whose rows are unit vectors; ``normalize_`` makes them so
    again (the method calls it after every optimizer step)."""

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__(dim, num_prototypes, bias=False)
        self.normalize_()

    @torch.no_grad()
    def normalize_(self) -> None:
        self.weight.copy_(F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """DINO's head (arXiv:2104.14294, Sec. 3.1 and App.; its code's ``DINOHead``): a 3-layer MLP
    with GELU down to a ``bottleneck_dim`` embedding, L2-normalised, then a weight-normalised
    Linear to ``out_dim`` outputs without bias whose norms stay 1 (the code's ``norm_last_layer``):
    its rows are normalised at every call. The hidden layers have batch norm with ``batch_norm``
    (the code's ``use_bn_in_head``: off for ViTs, on in its ResNet-50 recipe)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 65536,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.mlp = ProjectionHead(in_dim, hidden_dim, bottleneck_dim, num_layers=3, batch_norm=batch_norm, activation=nn.GELU)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        nn.init.trunc_normal_(self.last_layer.weight, std=0.02)  # as the code

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(N, in_dim) -> the bottleneck embeddings (N, bottleneck_dim) and the logits (N, out_dim)."""
        z = self.mlp(h)
        return z, F.linear(F.normalize(z, dim=1), F.normalize(self.last_layer.weight, dim=1))
