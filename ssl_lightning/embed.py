"""``ssl-lightning embed SOURCE [--output FILE]``: an encoder's features of one split of a data
module, saved to one file (the layout of ``ssl_lightning.predictions``), without a config.

    ssl-lightning embed simclr-fashion-mnist                  (writes predictions/simclr-fashion-mnist-test.pt)
    ssl-lightning embed run/last.ckpt --data ImageFolderDataModule --data.data_dir photos --data.image_size 32 --split train --output f.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ssl_lightning.data.base import ImageData
from ssl_lightning.data.fashion_mnist import FashionMNISTDataModule
from ssl_lightning.encoder import load_encoder
from ssl_lightning.evaluation.features import loader_features
from ssl_lightning.evaluation.names import source_name
from ssl_lightning.predictions import DEFAULT_DIR, refuse_existing, save_features, unused_path

SPLITS = {"train": ("fit", "train_set"), "val": ("fit", "val_set"), "test": ("test", "test_set")}  # split: (setup stage, dataset)


def embed(source: str, data: ImageData | None = None, split: Literal["train", "val", "test"] = "test", output: Path | None = None) -> Path:
    """The encoder's features of every image of a split, with their labels, saved to a new file.

    Args:
        source: a checkpoint of any ssl-lightning method (full or encoder-only) or a shipped name
            (``ssl-lightning checkpoints``).
        data: the data module (default: Fashion-MNIST).
        split: which images: "train", "val" (held out of train) or "test".
        output: the file to write (a ``.pt`` dict: features (N, F) float32, labels (N,) int64, -1
            where unlabelled, index (N,) each image's position in the split, and for images from
            files, paths: each image's file); refused if it exists.
            Default: predictions/<source>-<split>.pt, numbered (-1, -2 ...) where that exists.
    """
    output = refuse_existing(Path(output)) if output else unused_path(DEFAULT_DIR / f"{source_name(source)}-{split}.pt")
    data = data or FashionMNISTDataModule()
    encoder = load_encoder(source)
    stage, attribute = SPLITS[split]
    data.prepare_data()
    data.setup(stage)
    features, labels = loader_features(encoder, data.eval_dataloader(getattr(data, attribute)), desc=f"embedding {split}")
    return save_features(output, features, labels, split, str(source), data.image_paths(split))


def main(args: list[str]) -> None:
    from ssl_lightning.cli.parsing import run_function

    path = run_function(embed, "ssl-lightning embed", args, default_data="ssl_lightning.data.FashionMNISTDataModule")
    print(f"ssl-lightning: wrote features and labels to {path}")
