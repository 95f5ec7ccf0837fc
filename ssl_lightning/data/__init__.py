"""LightningDataModules; batches are ``(uint8 images (B, C, H, W), labels (B,))``."""

from ssl_lightning.data.base import InMemoryDataModule
from ssl_lightning.data.fashion_mnist import FashionMNISTDataModule

__all__ = ["FashionMNISTDataModule", "InMemoryDataModule"]
