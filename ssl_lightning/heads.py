"""Projection heads: small MLPs put on top of the backbone during pretraining only."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear, mapping features h to the embedding z = g(h).

    SimCLR (arXiv:2002.05709, Sec. 2.1): "a MLP with one hidden layer to obtain
    z_i = g(h_i) = W(2) σ(W(1) h_i)"; its reference code adds BatchNorm after the hidden layer.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),  # BN right after makes a bias redundant
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.layers(h)  # (N, out_dim)
