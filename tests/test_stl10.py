"""STL-10 on a few generated images in the dataset's binary layout: our memory-mapped reader
against torchvision's STL10 on the same bytes, the splits, and the tutorial config end to end."""

import os
import pickle
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning import Trainer
from torchvision.transforms.v2.functional import resize

from conftest import CONFIGS, TINY_HEADS
from ssl_lightning.cli import main, make_cli
from ssl_lightning.data import STL10DataModule
from ssl_lightning.data.stl10 import CLASSES
from ssl_lightning.errors import ConfigError, DataNotFoundError

STL10_CONFIG = CONFIGS / "stl10" / "simclr.yaml"
COUNTS = {"train": 30, "test": 10, "unlabeled": 16}


def write_stl10(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Random images in ``root/stl10_binary/`` as the dataset stores them: each image 3 planes of
    96x96 bytes, each plane column by column; labels one byte each, 1..10. Returns, per split, the
    images (N, 3, H, W) in row order and the labels (N,) 0..9 that a correct reader gives back."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in COUNTS.items():
        images = rng.integers(0, 256, (count, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # column by column
        labels = None
        if split != "unlabeled":
            labels = np.arange(count) % 10  # every class present
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        written[split] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    (folder / "fold_indices.txt").write_text("0 1 2\n" * 10)
    return written


@pytest.fixture(scope="module")
def stl10(tmp_path_factory):
    root = tmp_path_factory.mktemp("stl10")
    return root, write_stl10(root)


@pytest.fixture
def without_md5(monkeypatch):
    # torchvision checks each file's md5 against the real dataset's; generated files cannot pass.
    # Only that check is bypassed (the files must still exist), so the parsing compared below is
    # torchvision's own.
    monkeypatch.setattr("torchvision.datasets.stl10.check_integrity", lambda path, md5=None: os.path.isfile(path))


def data(root, **kwargs) -> STL10DataModule:
    return STL10DataModule(root=str(root), val_size=5, batch_size=4, **kwargs)


@pytest.mark.parametrize("split", ["train", "test", "unlabeled"])
def test_reader_gives_the_images_torchvision_reads_from_the_same_bytes(split, stl10, without_md5):
    from torchvision.datasets import STL10

    root, written = stl10
    theirs = STL10(str(root), split=split)
    module = data(root)
    ours = module.split_source(split)
    images, labels = written[split]
    assert np.array_equal(theirs.data, images)  # the generator writes the layout torchvision reads
    assert torch.equal(ours.load_all(), torch.from_numpy(theirs.data))
    assert torch.equal(torch.stack([ours.decode(i) for i in range(len(ours))]), torch.from_numpy(theirs.data))
    assert ours.labels.tolist() == theirs.labels.tolist()  # -1 for unlabeled, as torchvision
    module.source(train=True)
    assert list(module.classes) == theirs.classes


def test_splits_by_pretrain_split(stl10):
    root, written = stl10
    train_images = torch.from_numpy(written["train"][0])
    for split, expected in [("unlabeled", 16), ("train+unlabeled", 25 + 16), ("train", 25)]:
        module = data(root, pretrain_split=split)
        module.setup("fit")
        val, labelled = module.val_set, module.labelled_set
        assert len(val) == 5 and len(labelled) == 25 and len(module.train_set) == expected
        val_images, val_labels = module.take(val, 5)
        labelled_images, _ = module.take(labelled, 25)
        # Validation and the labelled pool are disjoint parts of train, with their own labels.
        all_images = torch.cat([val_images, labelled_images])
        assert sorted(all_images.flatten(1).sum(1).tolist()) == sorted(train_images.flatten(1).sum(1).tolist())
        assert torch.equal(val_labels, torch.from_numpy(written["train"][1])[[_position(train_images, x) for x in val_images]])
        train_images_seen, train_labels = module.take(module.train_set, expected)
        if split == "unlabeled":
            assert torch.equal(train_images_seen, torch.from_numpy(written["unlabeled"][0])) and (train_labels == -1).all()
        if split == "train+unlabeled":
            assert torch.equal(train_images_seen[:25], labelled_images) and (train_labels[25:] == -1).all()
        if split == "train":
            assert module.labelled_set is module.train_set
        module.setup("test")
        assert len(module.test_set) == 10


def _position(images, image):
    return next(i for i, x in enumerate(images) if torch.equal(x, image))


def test_streamed_and_in_memory_give_the_same_batches(stl10):
    root, _ = stl10
    batches = []
    for in_memory in (True, False):
        module = data(root, pretrain_split="train+unlabeled", in_memory=in_memory)
        module.setup("fit")
        batches.append([b for b in module.train_dataloader()])
    for (a_images, a_labels), (b_images, b_labels) in zip(*batches):
        assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    source = data(root).split_source("unlabeled")
    source.decode(0)  # maps opened in this process ...
    copy = pickle.loads(pickle.dumps(source))  # ... are not pickled to DataLoader workers
    assert copy._maps is None and len(pickle.dumps(source)) < 10_000
    assert torch.equal(copy.decode(3), source.decode(3))


def test_smaller_image_size_resizes_each_image(stl10):
    root, written = stl10
    source = data(root, image_size=32).split_source("test")
    expected = resize(torch.from_numpy(written["test"][0]), [32, 32], antialias=True)
    assert source.decode(2).shape == (3, 32, 32)
    assert torch.equal(source.decode(2), expected[2]) and torch.equal(source.load_all(), expected)
    with pytest.raises(ConfigError, match="can shrink them"):
        data(root, image_size=128)


def test_missing_and_broken_files_are_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.stl10.download_and_extract_archive", offline)
    with pytest.raises(DataNotFoundError) as error:
        data(tmp_path).prepare_data()
    message = str(error.value)
    assert "\n" not in message and f"STL-10 is not in {tmp_path / 'stl10_binary'} (missing train_X.bin" in message
    assert "could not be downloaded (URLError" in message and f"extract it into {tmp_path}" in message

    written = tmp_path / "given"
    write_stl10(written)
    data(written / "stl10_binary").prepare_data()  # the folder itself is accepted as root, no download
    with pytest.raises(DataNotFoundError, match="missing unlabeled_X.bin"):
        os.remove(written / "stl10_binary" / "unlabeled_X.bin")
        data(written).setup("fit")
    (written / "stl10_binary" / "test_X.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(DataNotFoundError, match="not a whole number of 27,648-byte"):
        data(written, pretrain_split="train").setup("test")
    (written / "stl10_binary" / "train_y.bin").write_bytes(bytes([0] * 30))
    with pytest.raises(DataNotFoundError, match="expected 30 labels in 1..10"):
        data(written, pretrain_split="train").setup("fit")


def test_tutorial_config_builds_the_tutorial_model(stl10, monkeypatch):
    root, _ = stl10
    monkeypatch.setattr(sys, "argv", ["ssl-lightning"])  # make_cli is given its arguments
    cli = make_cli(["--config", str(STL10_CONFIG), f"--data.init_args.root={root}"], run=False)
    model, module = cli.model, cli.datamodule
    assert module.pretrain_split == "unlabeled" and module.batch_size == 256 and module.image_size == 96
    assert not model.encoder.config["small_images"] and model.encoder.config["width"] == 64 and model.encoder.out_dim == 512
    head = [type(m).__name__ for m in model.projector.layers]
    assert head == ["Linear", "ReLU", "Linear"] and model.projector.layers[-1].out_features == 128
    assert [view["blur_prob"] for view in model.view_configs] == [1.0, 1.0]
    assert model.views.pipelines[0][-1].flags["kernel_size"] == (9, 9)
    assert model.optimizer_config.final_lr_ratio == pytest.approx(1 / 50) and model.hparams.temperature == 0.07


TINY_STL10 = ["--model.init_args.encoder.width=8", "--data.init_args.batch_size=4", "--data.init_args.val_size=5", "--data.init_args.image_size=32"]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["simclr", "supervised"])
def test_tutorial_configs_run_on_the_labelled_split_through_the_cli(config, stl10, tmp_path, monkeypatch):
    root, _ = stl10
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "stl10" / f"{config}.yaml"), f"--data.init_args.root={root}", *TINY_STL10,
          *TINY_HEADS.get(config, []), "--data.init_args.pretrain_split=train", "--trainer.fast_dev_run=true"])


def test_tutorial_config_pretrains_on_the_unlabelled_split(stl10, tmp_path, monkeypatch):
    root, _ = stl10
    monkeypatch.setattr(sys, "argv", ["ssl-lightning"])
    cli = make_cli(["--config", str(STL10_CONFIG), f"--data.init_args.root={root}", *TINY_STL10, *TINY_HEADS["simclr"]], run=False)
    trainer = Trainer(accelerator="cpu", fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path)
    before = {k: v.clone() for k, v in cli.model.encoder.state_dict().items()}
    trainer.fit(cli.model, datamodule=cli.datamodule)
    assert (cli.datamodule.train_set.labels == -1).all()
    assert any(not torch.equal(before[k], v) for k, v in cli.model.encoder.state_dict().items())


def test_online_evaluation_of_the_unlabelled_pretraining_scores_the_labelled_images(stl10, tmp_path, monkeypatch):
    """The tutorial config as the CLI runs it (its online_eval included): the batches carry no labels,
    so the probe and kNN are fitted on the module's labelled train images and scored on its hold-out."""
    from ssl_lightning.evaluation.online import OnlineEvaluation

    root, _ = stl10
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ssl-lightning"])
    cli = make_cli(["--config", str(STL10_CONFIG), f"--data.init_args.root={root}", *TINY_STL10, *TINY_HEADS["simclr"],
                    "--trainer.fast_dev_run=true"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (online,) = (c for c in cli.trainer.callbacks if isinstance(c, OnlineEvaluation))
    assert online.mode == "eval data" and (cli.datamodule.train_set.labels == -1).all()
    assert {"val/online_probe_acc", "val/knn_acc"} <= set(cli.trainer.callback_metrics)
