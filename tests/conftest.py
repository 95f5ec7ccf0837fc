from pathlib import Path

import pytest
import torch

from ssl_lightning.data import InMemoryDataModule

REPO = Path(__file__).resolve().parents[1]
SIMCLR_CONFIG = REPO / "ssl_lightning" / "configs" / "simclr.yaml"

# CLI overrides that make the default config tiny: a width-8 ResNet-18 on 256 Fashion-MNIST images.
TINY = [
    "--model.init_args.width=8",
    "--model.init_args.projection_hidden_dim=32",
    "--model.init_args.projection_dim=16",
    "--data.init_args.batch_size=32",
    "--data.init_args.val_size=64",
    "--data.init_args.train_size=256",
]


class RandomImages(InMemoryDataModule):
    """Synthetic uint8 images for fast in-process tests."""

    num_channels = 1
    image_size = 16
    num_classes = 4
    mean = (0.5,)
    std = (0.29,)

    def load_split(self, train: bool):
        g = torch.Generator().manual_seed(int(train))
        n = 96 if train else 32
        return torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=g), torch.arange(n) % 4


@pytest.fixture
def random_images():
    return RandomImages(batch_size=16, val_size=32)


@pytest.fixture
def tiny_simclr_kwargs():
    return dict(width=8, projection_hidden_dim=16, projection_dim=8, in_channels=1, image_size=16, mean=(0.5,), std=(0.29,))
