"""Sharded datasets: written with litdata's optimize, read back with its StreamingDataset."""

import itertools
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shard_data import TensorSource, numbered_images, write_numbered_shards
from ssl_lightning.data import ImageFolderDataModule, ShardedDataModule
from ssl_lightning.data.prepare import write_shards
from ssl_lightning.errors import ConfigError, DataNotFoundError

TESTS = Path(__file__).resolve().parent


def process_state() -> tuple:
    return (random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state().numpy().tobytes(),
            multiprocessing.get_start_method(allow_none=True), dict(os.environ))


def orphaned_forks() -> list[int]:
    """Processes forked from this one (the same command line) whose parent is gone."""
    me = Path("/proc/self/cmdline").read_bytes()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == me and (proc / "stat").read_text().split()[3] == "1":
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            pass
    return found


def assert_images_are_their_sources(images, labels, source):
    """Image i of a batch is the source image its label names (every image is its own class)."""
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, source.images[labels])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """100 numbered images: 80 train, 20 val, and a test split of 12, by 2 litdata workers."""
    folder = tmp_path_factory.mktemp("data") / "shards"
    state = process_state()
    source = write_numbered_shards(folder, n=100, val_size=20, test_size=12, num_workers=2)
    assert process_state() == state  # litdata's optimize changed the caller's generators, start method and env: all put back
    return folder, source


def test_shards_are_read_back_image_for_image(shards):
    folder, source = shards
    assert len(list((folder / "train").glob("chunk-*.bin"))) > 4  # several shards from each worker
    data = ShardedDataModule(str(folder), batch_size=8)
    data.setup("fit")
    data.setup("test")
    train, val = data.train_set.labels, data.val_set.labels
    assert len(train) == 80 and len(val) == 20 and sorted(train.tolist() + val.tolist()) == list(range(100))
    assert train.tolist() != sorted(train.tolist())  # written in a shuffled order
    for dataset, images in ((data.train_set, source), (data.val_set, source), (data.test_set, numbered_images(12, seed=1))):
        for position in range(len(dataset)):
            image, label = dataset[position]
            assert label == dataset.labels[position] and torch.equal(image, images.images[label])
    batches = list(data.eval_dataloader(data.val_set))  # in order, nothing dropped
    assert torch.equal(torch.cat([labels for _, labels in batches]), val)

    assert (data.num_channels, data.image_size, data.num_classes, data.labelled) == (1, 16, 100, True)
    assert data.class_names(torch.tensor([3, 0])) == ["image 3", "image 0"]
    pixels = source.images[train].double() / 255  # the train split's statistics, measured while writing
    assert data.mean == pytest.approx((pixels.mean().item(),)) and data.std == pytest.approx((pixels.std(correction=0).item(),))


def test_training_batches_are_full_shuffled_each_epoch_and_resume_mid_epoch(shards):
    folder, source = shards
    data = ShardedDataModule(str(folder), batch_size=8, num_workers=2)
    data.setup("fit")
    loader = data.train_dataloader()
    epochs = [list(itertools.islice(loader, len(loader))) for _ in range(2)]
    assert len(loader) == len(epochs[0]) == 10
    for images, labels in epochs[0]:
        assert images.shape == (8, 1, 16, 16)
        assert_images_are_their_sources(images, labels, source)
    first, second = (torch.cat([labels for _, labels in epoch]) for epoch in epochs)
    assert sorted(first.tolist()) == sorted(second.tolist()) == sorted(data.train_set.labels.tolist())
    assert not torch.equal(first, second)

    interrupted = data.train_dataloader()
    batches = iter(interrupted)
    seen = [next(batches)[1] for _ in range(3)]
    state = interrupted.state_dict()  # what Lightning saves in a checkpoint
    resumed = ShardedDataModule(str(folder), batch_size=8, num_workers=2).train_dataloader()
    resumed.load_state_dict(state)
    # as Lightning iterates: len(loader) batches, without asking for one more
    rest = [labels for _, labels in itertools.islice(resumed, len(resumed) - 3)]
    assert torch.equal(torch.cat(seen + rest), first)
    assert torch.equal(torch.cat([labels for _, labels in itertools.islice(resumed, len(resumed))]), second)


def test_a_remote_input_dir_is_read_through_litdatas_downloader(shards, tmp_path):
    """litdata's ``local:`` prefix reads a local folder as it reads cloud storage: downloaded
    into the cache folder (metadata and labels included). s3:// and gs:// differ only in the client."""
    folder, source = shards
    local = ShardedDataModule(str(folder), batch_size=8)
    remote = ShardedDataModule(f"local:{folder}", batch_size=8, cache_dir=str(tmp_path / "cache"))
    assert (remote.mean, remote.std, remote.classes) == (local.mean, local.std, local.classes)
    remote.setup("fit")
    assert torch.equal(remote.val_set.labels, ShardedDataModule(str(folder)).split("val").labels)
    assert_images_are_their_sources(*next(iter(remote.train_dataloader())), source)
    image, label = remote.val_set[5]
    assert torch.equal(image, source.images[label])
    assert list((tmp_path / "cache").rglob("chunk-*.bin"))  # downloaded, not read in place


def test_writing_never_overwrites_and_leaves_nothing_half_written(tmp_path):
    source = numbered_images(40)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    train, val = torch.arange(4, 40), torch.arange(4)
    with pytest.raises(ConfigError, match="taken already exists and is not empty; choose another --output_dir"):
        write_shards(source, tmp_path / "taken", train, val)
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]

    class BrokenAt30(TensorSource):
        def decode(self, index):
            if index == 30:
                raise DataNotFoundError("cannot read image 30.png (OSError); remove or replace the file")
            return super().decode(index)

    with pytest.raises(DataNotFoundError, match="cannot read image 30.png"):  # raised in a worker, back as itself
        write_shards(BrokenAt30(source.images, source.labels), tmp_path / "out", train, val, num_workers=2, chunk_bytes="2KB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no out, no temporary folder
    assert not orphaned_forks()  # litdata's workers ended with their helpers

    (tmp_path / "empty").mkdir()
    write_shards(source, tmp_path / "empty", train, val)  # an empty folder is taken
    no_test = ShardedDataModule(str(tmp_path / "empty"))
    assert no_test.metadata.sizes == {"train": 36, "val": 4}
    with pytest.raises(ConfigError, match="has no test split; write it again with ssl-lightning prepare --test_dir FOLDER"):
        no_test.setup("test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]


@pytest.mark.slow
def test_ddp_ranks_read_disjoint_parts_that_cover_the_train_split(tmp_path):
    """2 gloo processes, batch 8, 2 epochs. litdata gives each process floor(N / (2 * 8)) full
    batches (drop_last): with 64 train images each process sees 32 and together all 64; with 70,
    each sees 32 and 6 images are left out of the epoch."""
    for name, n in (("even", 64), ("uneven", 70)):
        write_numbered_shards(tmp_path / name, n=n + 8, val_size=8)
    result = subprocess.run([sys.executable, str(TESTS / "ddp_shards.py"), str(tmp_path), str(tmp_path / "even"), str(tmp_path / "uneven")],
                            cwd=TESTS.parent, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    for name, n in (("even", 64), ("uneven", 70)):
        train = set(ShardedDataModule(str(tmp_path / name)).split("train").labels.tolist())
        ranks = [torch.load(tmp_path / f"{name}-{rank}.pt", weights_only=True) for rank in (0, 1)]
        orders = []
        for epoch in (0, 1):
            seen = [torch.cat(rank[epoch]) for rank in ranks]
            assert [len(batches) for batches in (rank[epoch] for rank in ranks)] == [4, 4]
            assert all(len(labels) == 32 == len(set(labels.tolist())) for labels in seen)
            assert not set(seen[0].tolist()) & set(seen[1].tolist())  # disjoint
            together = set(seen[0].tolist()) | set(seen[1].tolist())
            assert together <= train and len(together) == 64  # all of them where 64 = 2 processes x 4 batches x 8
            orders.append(seen[0])
        assert not torch.equal(*orders)  # reshuffled for the second epoch


@pytest.mark.slow
def test_prepare_then_fit_and_a_fit_killed_mid_epoch_resumes_to_the_uninterrupted_end(tmp_path, monkeypatch):
    """``ssl-lightning prepare`` on a folder of class folders, then fits on the shards; the model
    takes the image facts from the data module. A fit killed with SIGKILL at step 3 (of 5 per
    epoch, 2 epochs) and resumed from last.ckpt through the console script ends with the weights of
    the uninterrupted fit: litdata's loader state in the checkpoint and ExactResume's random states
    give it the same batches, into the second epoch too."""
    from conftest import SIMCLR_CONFIG, TINY_HEADS, cli_here
    from test_cli import run_cli
    from test_image_folder import write_images
    from test_resume import assert_same_state, kill_at, last_checkpoint
    from ssl_lightning.cli import main

    write_images(tmp_path / "photos" / "cats", 24, size=(30, 20), ext="jpg")
    write_images(tmp_path / "photos" / "dogs", 24, size=(20, 30), ext="png", start=100)
    prepared = run_cli("prepare", "--data_dir", "photos", "--output_dir", "shards", "--image_size", "16", "--num_channels", "1",
                       "--val_size", "8", "--num_workers", "2", "--chunk_bytes", "4KB", cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert "Progress: 100%" in prepared.stderr and "wrote shards (train 40, val 8 images)" in prepared.stderr
    metadata = json.loads((tmp_path / "shards" / "metadata.json").read_text())
    assert metadata["classes"] == ["cats", "dogs"] and metadata["image_size"] == 16 and metadata["num_channels"] == 1
    # the images, and the hold-out, that ImageFolderDataModule makes of the folder with the same settings
    folder = ImageFolderDataModule(str(tmp_path / "photos"), image_size=16, num_channels=1, val_size=8, in_memory=True)
    shards = ShardedDataModule(str(tmp_path / "shards"))
    folder.setup("fit")
    shards.setup("fit")
    for ours, theirs in ((shards.train_set, folder.train_set), (shards.val_set, folder.val_set)):
        assert torch.equal(torch.stack([ours[i][0] for i in range(len(ours))]), theirs.images)
        assert torch.equal(ours.labels, theirs.labels)

    args = ["fit", "--config", str(SIMCLR_CONFIG), *TINY_HEADS["simclr"], "--model.init_args.encoder.width=8",
            "--data.class_path=ShardedDataModule", f"--data.init_args.input_dir={tmp_path / 'shards'}", "--data.init_args.batch_size=8",
            "--trainer.max_epochs=2", "--trainer.limit_val_batches=1", "--checkpoint.save_last_every_n_steps=1",
            "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=2", "--projector.num_images=4"]
    for run in ("reference", "killed"):
        (tmp_path / run).mkdir()
    monkeypatch.chdir(tmp_path / "reference")
    main(args)  # the uninterrupted fit, in this process
    reference = torch.load(last_checkpoint(tmp_path / "reference"), weights_only=True)
    assert reference["global_step"] == 10
    encoder = reference["hyper_parameters"]["encoder"]
    assert (encoder["in_channels"], encoder["input_size"], encoder["mean"], encoder["std"]) == (1, 16, metadata["mean"], metadata["std"])

    kill_at(args, tmp_path / "killed", step=3)
    assert torch.load(last_checkpoint(tmp_path / "killed"), weights_only=True)["global_step"] == 2
    cli_here([*args, "--ckpt_path", "last"], tmp_path / "killed", monkeypatch)
    assert_same_state(torch.load(last_checkpoint(tmp_path / "killed"), weights_only=True), reference)


def test_local_shards_never_reach_the_network(tmp_path, monkeypatch):
    """No version check, no cloud client: writing and reading a local folder opens no connection
    (litdata before 0.2.70 asked PyPI for a newer version of itself on every dataset)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    source = write_numbered_shards(tmp_path / "shards", n=40, val_size=8)
    data = ShardedDataModule(str(tmp_path / "shards"), batch_size=8)
    data.setup("fit")
    assert_images_are_their_sources(*next(iter(data.train_dataloader())), source)
    assert torch.equal(data.val_set[0][0], source.images[data.val_set.labels[0]])
    assert not attempts


@pytest.mark.slow  # a fresh interpreter importing torch and Lightning
def test_the_command_line_imports_litdata_only_where_shards_are_read():
    code = "import sys, ssl_lightning.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'litdata'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]
