"""LightningDataModules; batches are ``(uint8 images (B, C, H, W), labels (B,))``."""

from ssl_lightning.data.base import ImageData, ImageDataModule
from ssl_lightning.data.digits import DigitsDataModule
from ssl_lightning.data.fashion_mnist import FashionMNISTDataModule
from ssl_lightning.data.image_folder import ImageFolderDataModule
from ssl_lightning.data.shards import ShardedDataModule
from ssl_lightning.data.stl10 import STL10DataModule
from ssl_lightning.data.torchvision_datasets import TorchvisionDataModule

# What `--data.class_path` accepts by its short name.
DATA_MODULES = ("FashionMNISTDataModule", "ImageFolderDataModule", "TorchvisionDataModule", "STL10DataModule", "DigitsDataModule",
                "ShardedDataModule")

__all__ = ["DATA_MODULES", "DigitsDataModule", "FashionMNISTDataModule", "ImageData", "ImageDataModule", "ImageFolderDataModule",
           "STL10DataModule", "ShardedDataModule", "TorchvisionDataModule"]
