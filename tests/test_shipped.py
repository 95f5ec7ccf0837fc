"""The shipped checkpoints: manifest, loading by name, trained weights, and safe loading."""

import argparse
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

import ssl_lightning.shipped as shipped
from conftest import REPO, TINY_DATA
from ssl_lightning import Encoder, EncoderConfig, load_encoder, shipped_checkpoints
from ssl_lightning.cli import main
from ssl_lightning.data import FashionMNISTDataModule
from ssl_lightning.errors import CheckpointError
from ssl_lightning.data.label_budget import sample_per_class
from ssl_lightning.data.subset import LabelledSubset
from ssl_lightning.evaluation import extract_features, fit_linear_probe, loader_features
from ssl_lightning.evaluation.label_efficiency import Split, evaluate_features

RELEASE = ["simclr", "moco", "byol", "barlow-twins", "supervised"]
RELEASE_NAMES = sorted(f"{name}-fashion-mnist" for name in RELEASE)


def test_every_method_ships_and_matches_its_manifest():
    assert shipped_checkpoints() == RELEASE_NAMES
    for name in shipped_checkpoints():
        shipped.verify(name)  # every file: weights, card, config, TensorBoard events
        entry = shipped.read_manifest()[name]
        assert any(path.startswith(f"{name}/events.out.tfevents.") for path in entry["files"])
        assert (shipped.SHIPPED_DIR / entry["weights"]).stat().st_size < 25e6


@pytest.fixture(scope="module")
def fashion_mnist_subset():
    """50 labelled train images per class and 1,000 test images, as uint8."""
    data = FashionMNISTDataModule()
    images, labels = data.load_split(train=True)
    train_idx = sample_per_class(labels, 50, seed=0)
    test_images, test_labels = data.load_split(train=False)
    return (images[train_idx], labels[train_idx]), (test_images[:1000], test_labels[:1000])


def probe_accuracy(encoder, subset):
    (train_images, train_labels), (test_images, test_labels) = subset
    train = extract_features(encoder, train_images, desc="train"), train_labels
    test_features = extract_features(encoder, test_images, desc="test")
    _, test_accuracy = fit_linear_probe(train, (test_features, test_labels), num_classes=10, weight_decay=1e-3)
    return test_accuracy


@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_shipped_encoder_is_trained(name, fashion_mnist_subset):
    encoder = load_encoder(name)
    features = encoder(torch.rand(2, 1, 28, 28))
    assert features.shape == (2, encoder.out_dim) and torch.isfinite(features).all()
    torch.manual_seed(0)
    random_encoder = Encoder(encoder.config).eval()
    trained, random = probe_accuracy(encoder, fashion_mnist_subset), probe_accuracy(random_encoder, fashion_mnist_subset)
    assert trained > random + 0.05, (trained, random)


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(CheckpointError, match="neither a file nor a shipped checkpoint.*simclr-fashion-mnist"):
        load_encoder("simclr-imagenet")


def copy_of_shipped(tmp_path, monkeypatch):
    for name in [shipped.MANIFEST, *(f for n in shipped_checkpoints() for f in shipped.read_manifest()[n]["files"])]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shipped.SHIPPED_DIR / name, tmp_path / name)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    return tmp_path


def test_tampered_weights_are_refused_in_one_line(tmp_path, monkeypatch):
    folder = copy_of_shipped(tmp_path, monkeypatch)
    load_encoder("byol-fashion-mnist")  # the copy loads
    weights = folder / "byol-fashion-mnist.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1  # one bit in a tensor: torch.load would not notice
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sha256") as error:
        load_encoder("byol-fashion-mnist")
    assert "\n" not in str(error.value) and "git checkout" in str(error.value)
    weights.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_encoder("byol-fashion-mnist")


def test_pickled_object_is_refused_without_the_opt_in(tmp_path):
    encoder = Encoder(EncoderConfig(width=8))
    checkpoint = {"encoder_config": encoder.config, "state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                  "hyper_parameters": argparse.Namespace(lr=0.1)}  # an object: unpickling it runs its class's code
    torch.save(checkpoint, tmp_path / "pickled.ckpt")
    with pytest.raises(CheckpointError, match=r"pickled Python object \(argparse.Namespace\).*trusted=True") as error:
        load_encoder(tmp_path / "pickled.ckpt")
    assert "\n" not in str(error.value)
    loaded = load_encoder(tmp_path / "pickled.ckpt", trusted=True)
    assert torch.equal(loaded.backbone.conv1.weight, encoder.backbone.conv1.weight)


def test_checkpoints_command_lists_names_and_accuracy(capsys):
    main(["checkpoints"])
    out = capsys.readouterr().out
    for name in RELEASE_NAMES:
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "%" in line
        # What chose each release run's best checkpoint, as its shipped config says.
        assert ("val_acc " if name.startswith("supervised") else "val_acc_top5 ") in line


@pytest.mark.slow
def test_release_script_trains_packages_and_loads(tmp_path, monkeypatch):
    """scripts/train_release.py end to end, made tiny: 2 methods, 256 images, a small sweep."""
    out = tmp_path / "shipped"
    command = [sys.executable, str(REPO / "scripts" / "train_release.py"), "--methods", "simclr", "supervised",
               "--max_epochs", "1", "--runs_dir", str(tmp_path / "runs"), "--out", str(out), "--results", str(tmp_path / "results"),
               "--quick", "--fit_args", *TINY_DATA, "--trainer.limit_val_batches=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())["checkpoints"]
    assert sorted(manifest) == ["simclr-fashion-mnist", "supervised-fashion-mnist"]
    monkeypatch.setattr(shipped, "SHIPPED_DIR", out)
    for name, entry in manifest.items():
        shipped.verify(name)
        weights = torch.load(out / entry["weights"], weights_only=True)
        assert all(not k.startswith(("projector", "classifier")) for k in weights["state_dict"])  # the encoder alone
        assert weights["state_dict"]["encoder.backbone.conv1.weight"].dtype == torch.float16
        card = (out / entry["card"]).read_text()
        assert "Training time" in card and "linear probe" in card and "ssl-lightning fit" in card
        assert 0 <= entry["headline"]["linear probe, all labels"] <= 1
        monitor = "val/acc" if name.startswith("supervised") else "val/knn_acc"  # the supervised config names its own
        assert entry["selection"]["monitor"] == monitor and f"chosen by `{monitor}`" in card
        assert entry["selection"]["best_checkpoint"].startswith("best-")
        assert load_encoder(name)(torch.rand(2, 1, 28, 28)).shape == (2, 8 * 8)
    assert (tmp_path / "results" / "results.md").is_file()
    # A second sitting with --resume skips the runs that trained for --max_epochs
    at = command.index("--quick")  # --fit_args takes the rest of the line
    result = subprocess.run([*command[:at], "--stage", "train", "--resume", *command[at:]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.count("for 1 epochs already; skipped") == 2, result.stdout + result.stderr[-2000:]
    # Packaging one method keeps the others shipped, and the sweep still covers them all
    supervised_entry = manifest["supervised-fashion-mnist"]
    result = subprocess.run([*command[:at], "--stage", "package", "--methods", "simclr", *command[at:]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["checkpoints"]["supervised-fashion-mnist"] == supervised_entry
    assert set(pd.read_csv(tmp_path / "results" / "results.csv")["model"]) >= {"simclr-fashion-mnist", "supervised-fashion-mnist"}


def test_release_training_time_adds_up_every_sitting(tmp_path, monkeypatch):
    """Each sitting of a resumed release run writes its own events file: the card's training time is
    the sum of their spans (first to last event), and a run is finished once its train stage returned."""
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import train_release

    for start, stop in ((1000.0, 1100.0), (5000.0, 5030.5)):  # a killed sitting, then the one that finished
        with SummaryWriter(tmp_path, filename_suffix=f".{start}") as writer:
            for step, wall_time in enumerate((start, (start + stop) / 2, stop)):
                writer.add_scalar("train/loss", 1.0, step, walltime=wall_time)
    assert train_release.training_seconds(tmp_path) == (pytest.approx(130.5), 2)
    assert not train_release.finished(tmp_path, 8) and not train_release.finished(None, 8)
    (tmp_path / "release-timing.json").write_text(json.dumps({"command": "ssl-lightning fit", "max_epochs": 8}))
    assert train_release.finished(tmp_path, 8) and not train_release.finished(tmp_path, 50)


@pytest.mark.slow
@pytest.mark.parametrize("name", RELEASE_NAMES)
def test_model_card_accuracy_is_what_a_user_gets(name):
    """The card's linear probe at 10 labels per class (seed 0), recomputed from the shipped file: the
    same draw, the weight decay that validation chose for the card, the 10,000 test images. (The
    validation split only reports here, so 100 of its images stand in for its 5,000.)"""
    cards = pd.read_csv(REPO / "results" / "release" / "results.csv")
    row = cards[(cards["model"] == name) & (cards["evaluator"] == "linear probe") & (cards["labels_per_class"] == "10")
                & (cards["seed"] == 0)]
    assert len(row) == 1
    data = FashionMNISTDataModule()
    split = Split.from_data(data)
    drawn = Split(LabelledSubset(split.pool, sample_per_class(split.pool.labels, 10, seed=0)),  # "all" of a draw = the draw
                  LabelledSubset(split.val, torch.arange(100)), split.test)
    encoder = load_encoder(name)
    features = {part: loader_features(encoder, data.eval_dataloader(dataset), desc=None)[0] for part, dataset in drawn.parts().items()}
    [result] = evaluate_features(name, features, drawn, ["all"], 1, [float(row["weight_decay"].iloc[0])], 200, 0.1, 10)[:1]
    assert result.test_acc == pytest.approx(float(row["test_acc"].iloc[0]), abs=0.002)
