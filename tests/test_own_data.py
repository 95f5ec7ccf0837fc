"""Pretraining on one's own images through the real command line: every method on a generated
folder, grey and colour, held in memory and streamed, labelled and not."""

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, TINY_HEADS, cli_here
from test_cli import run_cli
from test_image_folder import write_images

pytestmark = pytest.mark.slow
# Tiny runs: 2 epochs of 4 steps (batch 16 of 64 train images), validation on 16.
TINY_FOLDER = ["--model.init_args.encoder.width=8", "--data.init_args.batch_size=16", "--data.init_args.val_size=16",
               "--trainer.max_epochs=2", "--trainer.log_every_n_steps=2", "--trainer.enable_progress_bar=false", "--projector.num_images=8"]
# (channels, image size, in_memory) per method: both colour modes, both sizes, both ways of holding images.
# The data path is the same for every method: these five cover it (each method's CLI smoke test is in test_cli.py).
SETTINGS = {"simclr": (3, 32, "true"), "moco": (1, 32, "false"), "byol": (3, 64, "false"), "barlow_twins": (1, 64, "auto"),
            "supervised": (3, 32, "false")}
METHODS = {**{m: TINY_HEADS[m] for m in SETTINGS if m in TINY_HEADS}, "supervised": ["--model.init_args.num_classes=2"]}


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_images(root / "cats", 40, size=(48, 36), ext="jpg")
    write_images(root / "dogs", 40, size=(36, 48), ext="png", start=100)
    return root


def logged_scalars(run: Path) -> set[str]:
    (events,) = run.glob("events.out.tfevents.*")
    return set(EventAccumulator(str(events)).Reload().Tags()["scalars"])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_pretrains_on_an_image_folder(method, class_folders, tmp_path, monkeypatch, capfd, caplog):
    # In this process (the console script's start-up adds nothing here: the flat-folder test below runs it).
    channels, size, in_memory = SETTINGS[method]
    cli_here(["fit", "--config", str(CONFIGS / f"{method}.yaml"), *METHODS[method], *TINY_FOLDER,
              "--data.class_path=ImageFolderDataModule", f"--data.init_args.data_dir={class_folders}",
              f"--data.init_args.image_size={size}", f"--data.init_args.num_channels={channels}",
              f"--data.init_args.in_memory={in_memory}", "--data.init_args.num_workers=1"], tmp_path, monkeypatch)
    said = capfd.readouterr().err + caplog.text  # the data module's lines, printed or logged
    (run,) = (tmp_path / "checkpoints").glob("*/version_0")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8
    encoder = checkpoint["hyper_parameters"]["encoder"]
    assert encoder["in_channels"] == channels and encoder["input_size"] == size
    assert "2 classes from the folders" in said
    assert ("streamed" if in_memory == "false" else "held in memory") in said
    scalars = logged_scalars(run)
    assert "val/loss" in scalars and ("val/acc_top5" in scalars or method == "supervised")


def test_a_flat_folder_of_unlabelled_photos_pretrains_and_streams(tmp_path):
    photos = tmp_path / "photos"
    write_images(photos, 50, size=(40, 30), ext="jpg")
    write_images(photos / "2025" / "summer", 30, size=(30, 40), ext="png", start=200)
    base = ["fit", "--config", str(CONFIGS / "simclr.yaml"), *TINY_HEADS["simclr"], *TINY_FOLDER,
            "--data.class_path=ImageFolderDataModule", "--data.init_args.data_dir=photos", "--data.init_args.image_size=32"]
    for in_memory in ("true", "false"):
        result = run_cli(*base, f"--data.init_args.in_memory={in_memory}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "no labels" in result.stderr
    for version in ("version_0", "version_1"):
        run = tmp_path / "checkpoints" / "simclr" / version
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
        scalars = logged_scalars(run)
        assert {"train/loss", "train/acc_top5", "val/loss", "val/acc_top1", "val/acc_top5", "val/acc_mean_pos"} <= scalars, scalars
        assert not {"val/online_probe_acc", "val/knn_acc"} & scalars  # no labels: no online evaluation
