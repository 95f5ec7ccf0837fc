"""The CIFAR-10/100 recipes (configs/cifar10, configs/cifar100) on a few generated images in
torchvision's CIFAR file format, read through torchvision's own CIFAR10/CIFAR100 classes."""

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import CONFIGS, TINY_HEADS
from ssl_lightning.augment import view_side
from ssl_lightning.cli import main, make_cli
from ssl_lightning.data import TorchvisionDataModule

METHODS = ["simclr", "moco", "byol", "barlow_twins", "supervised"]
RECIPES = [*(f"{dataset}/{method}" for dataset in ("cifar10", "cifar100") for method in METHODS),
           *(f"cifar10/{method}" for method in ("vicreg", "simsiam", "moco_v3", "nnclr", "swav", "dino", "autoencoder"))]
PER_BATCH = 8  # images in each of CIFAR-10's 5 train batches (CIFAR-100's train file has 5x as many)


def _pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def write_cifar(root: Path, seed: int = 0) -> dict[str, dict[bool, tuple[np.ndarray, np.ndarray]]]:
    """Random images in torchvision's folders and python-pickle files (``cifar-10-batches-py``:
    data_batch_1..5, test_batch, batches.meta; ``cifar-100-python``: train, test, meta), each
    image a row of 3,072 bytes (the red, green and blue 32x32 planes). Returns, per dataset and
    split, the images (N, 3, 32, 32) and labels (N,) a correct reader gives back."""
    rng = np.random.default_rng(seed)
    written = {}

    def split(count: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8), np.arange(count) % classes

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [split(PER_BATCH, 10) for _ in range(5)]
    for i, (images, labels) in enumerate(batches, 1):
        _pickle(folder / f"data_batch_{i}", {"data": images.reshape(len(images), -1), "labels": labels.tolist()})
    test = split(10, 10)
    _pickle(folder / "test_batch", {"data": test[0].reshape(10, -1), "labels": test[1].tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    written["CIFAR10"] = {True: tuple(np.concatenate(parts) for parts in zip(*batches)), False: test}

    folder = root / "cifar-100-python"
    folder.mkdir()
    train, test = split(5 * PER_BATCH, 100), split(10, 100)
    for name, (images, labels) in (("train", train), ("test", test)):
        _pickle(folder / name, {"data": images.reshape(len(images), -1), "fine_labels": labels.tolist(),
                                "coarse_labels": (labels // 5).tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    written["CIFAR100"] = {True: train, False: test}
    return written


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar(root)


@pytest.fixture(autouse=True)
def without_md5(monkeypatch):
    # torchvision checks each file's md5 against the real dataset's, which generated files cannot
    # match (it would then try to download). Only that check is bypassed: the files must exist, and
    # the parsing is torchvision's own, which is what these tests are about.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: os.path.isfile(path))


@pytest.mark.parametrize("name", ["CIFAR10", "CIFAR100"])
def test_generated_files_read_through_torchvision_are_the_images_written(name, cifar):
    root, written = cifar
    data = TorchvisionDataModule(name, root=str(root))
    for train in (True, False):
        images, labels = data.load_split(train)
        assert torch.equal(images, torch.from_numpy(written[name][train][0]))
        assert labels.tolist() == written[name][train][1].tolist()
    assert data.classes[:2] == (["class0", "class1"] if name == "CIFAR10" else ["fine0", "fine1"])


TINY_CIFAR = ["--model.init_args.encoder.width=8", "--data.init_args.batch_size=16", "--data.init_args.val_size=8"]
TINY_METHOD = {**TINY_HEADS, "moco": [*TINY_HEADS["moco"], "--model.init_args.key_bn_splits=2"],  # 8 sub-batches of 2 take twice as long
               "moco_v3": [*TINY_HEADS["moco_v3"], "--model.init_args.encoder.backbone=vit_tiny", "--model.init_args.encoder.depth=1"],  # width does not shrink a ViT
               "dino": [*TINY_HEADS["dino"][:-1], "--model.init_args.encoder.backbone=vit_tiny", "--model.init_args.encoder.depth=1",
                        '--model.init_args.views=[{}, {}, {"copies": 2, "crop_size": 16}]']}  # local crops of whole patches


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_fast_dev_run_through_the_cli(recipe, cifar, tmp_path, monkeypatch):
    root, _ = cifar
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / f"{recipe}.yaml"), f"--data.init_args.root={root}", *TINY_CIFAR,
          *TINY_METHOD.get(recipe.split("/")[1], []), "--trainer.fast_dev_run=true"])


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_its_backbone_at_batch_512(recipe, cifar, monkeypatch):
    root, _ = cifar
    monkeypatch.setattr(sys, "argv", ["ssl-lightning"])  # make_cli is given its arguments
    cli = make_cli(["--config", str(CONFIGS / f"{recipe}.yaml"), f"--data.init_args.root={root}"], run=False)
    model, data = cli.model, cli.datamodule
    dataset, method = recipe.split("/")
    assert data.name == dataset.upper() and data.batch_size == 512 and data.image_size == 32
    if method == "moco_v3":  # the paper's ViT setting, patches of 4 at 32 px
        assert {key: model.encoder.config[key] for key in ("backbone", "patch_size", "pooling")} == {"backbone": "vit_small", "patch_size": 4, "pooling": "cls"}
        assert model.encoder.out_dim == 384 and len(model.projector.layers) == 8  # 3 layers: 2 x (Linear, BN, ReLU), Linear, BN
        assert model.optimizer_config.name == "adamw" and model.hparams.temperature == 0.2
    elif method == "dino":  # the paper's ViT-S setting: 2 global crops of 32 px and 8 local ones of 16 (whole patches of 4)
        assert {key: model.encoder.config[key] for key in ("backbone", "patch_size", "pooling")} == {"backbone": "vit_small", "patch_size": 4, "pooling": "cls"}
        assert [view_side(view, 32) for view in model.view_configs] == [32, 32] + [16] * 8 and model.num_teacher_crops == 2
    else:
        assert {key: model.encoder.config[key] for key in ("backbone", "width", "small_images")} == {"backbone": "resnet18", "width": 64, "small_images": True}
    assert "precision" not in yaml.safe_load((CONFIGS / f"{recipe}.yaml").read_text())["trainer"]  # the hardware decides (default_precision)
    if method == "supervised":
        assert model.hparams.num_classes == data.num_classes
    if method in ("moco", "swav"):
        assert model.hparams.queue_size % data.batch_size == 0
    if method in ("byol", "barlow_twins"):  # solo-learn's asymmetric views: solarization on view 2 only
        assert [(view["blur_prob"], view["solarize_prob"]) for view in model.view_configs] == [(0.0, 0.0), (0.0, 0.2)]
