"""Projection heads: small MLPs put on top of the backbone during pretraining only."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """An MLP: ``num_layers - 1`` hidden blocks of Linear -> BatchNorm -> ReLU (Linear -> ReLU
    without ``batch_norm``), then a Linear to ``out_dim``.

    - SimCLR's projection head (arXiv:2002.05709, Sec. 2.1), 2 layers: "a MLP with one hidden
      layer to obtain z_i = g(h_i) = W(2) σ(W(1) h_i)"; its reference code adds BatchNorm.
    - MoCo v2's head (arXiv:2003.04297): the same 2-layer MLP.
    - BYOL's projector and predictor (arXiv:2006.07733, Sec. 3.3), 2 layers: "a linear layer ...
      followed by batch normalization, rectified linear units (ReLU), and a final linear layer".
    - Barlow Twins' projector (arXiv:2103.03230, Sec. 3), 3 layers: "three linear layers, each
      with 8192 output units. The first two layers of the projector are followed by a batch
      normalization layer and rectified linear units".
    - The UvA deep-learning tutorial's SimCLR head on STL-10: Linear -> ReLU -> Linear, no
      BatchNorm (``batch_norm=False``).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers - 1):
            layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim, bias=not batch_norm))  # BN makes a bias redundant
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(hidden_dim if num_layers > 1 else in_dim, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)  # (N, out_dim)
