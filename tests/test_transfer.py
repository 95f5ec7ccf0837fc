"""Transfer learning: frozen vs fine-tuned encoders, learning rates, sources, targets, the comparison command."""

import gzip
import urllib.error

import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY_ENCODER, LabelsApart, RandomImages, UnlabelledRandomImages, cli_here, fit, write_colour_squares
from ssl_lightning import Encoder, EncoderConfig, OptimizerConfig, load_encoder
from ssl_lightning.data import DigitsDataModule, FashionMNISTDataModule, TorchvisionDataModule
from ssl_lightning.data.source import UNLABELLED
from ssl_lightning.errors import CheckpointError, ConfigError, DataNotFoundError
from ssl_lightning.evaluation.transfer import ChannelAdapter, TransferClassifier
from ssl_lightning.evaluation.transfer_comparison import compare

DATA = dict(num_classes=4, encoder=TINY_ENCODER)


@pytest.fixture
def encoder_file(tmp_path):
    """An encoder-only checkpoint (the shipped format) of a width-8 encoder at 16x16, with BN statistics that are not the defaults."""
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(width=8, in_channels=1, input_size=16))
    encoder.train()
    with torch.no_grad():
        encoder(torch.rand(8, 1, 16, 16))  # moves the running statistics away from 0/1
    path = tmp_path / "encoder.pt"
    torch.save({"encoder_config": encoder.config, "method": "SimCLR",
                "state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}}, path)
    return path


class EncoderModeProbe:
    """Records the encoder's mode at every training step."""

    def __init__(self):
        self.modes = []

    def __call__(self, trainer, module, batch, batch_idx):
        self.modes.append(module.encoder.training)


def train(model, tmp_path, steps=3):
    from pytorch_lightning import Callback

    probe = EncoderModeProbe()
    callback = type("Probe", (Callback,), {"on_train_batch_start": lambda self, *a: probe(*a)})()
    trainer, _ = fit(model, RandomImages(batch_size=16, val_size=32), tmp_path, callbacks_extra=[callback], max_steps=steps,
                     limit_val_batches=1)
    return trainer, probe.modes


def test_feature_extract_leaves_weights_and_bn_statistics_bitwise_unchanged(encoder_file, tmp_path):
    model = TransferClassifier(source=str(encoder_file), mode="feature_extract", **DATA)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.classifier.weight.clone()
    trainer, modes = train(model, tmp_path)
    assert modes == [False] * 3  # eval mode at every step: batch norm uses and keeps its running statistics
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(before[key], value), key
    assert not torch.equal(head_before, model.classifier.weight)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.classifier.parameters()}


def test_finetune_changes_weights_and_bn_statistics(encoder_file, tmp_path):
    model = TransferClassifier(source=str(encoder_file), mode="finetune", **DATA)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    _, modes = train(model, tmp_path)
    assert modes == [True] * 3
    after = model.encoder.state_dict()
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert not torch.equal(before["backbone.bn1.running_mean"], after["backbone.bn1.running_mean"])


def test_param_groups_get_the_configured_learning_rates(encoder_file, tmp_path):
    model = TransferClassifier(source=str(encoder_file), mode="finetune", optimizer=OptimizerConfig(lr=0.02, weight_decay=0.01),
                               backbone_lr=0.0005, **DATA)
    trainer, _ = train(model, tmp_path, steps=1)
    encoder_ids, head_ids = {id(p) for p in model.encoder.parameters()}, {id(p) for p in model.classifier.parameters()}
    seen = set()
    for group in trainer.optimizers[0].param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= encoder_ids or ids <= head_ids
        assert group["initial_lr"] == (0.0005 if ids <= encoder_ids else 0.02)
        assert group["weight_decay"] == (0.01 if all(p.ndim > 1 for p in group["params"]) else 0.0)
        seen |= ids
    assert seen == encoder_ids | head_ids


def test_checkpoint_source_is_loaded_and_its_tuned_encoder_round_trips(encoder_file, tmp_path):
    model = TransferClassifier(source=str(encoder_file), mode="finetune", **DATA)
    original = load_encoder(encoder_file)
    for key, value in original.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)
    _, _ = train(model, tmp_path, steps=2)
    tuned = load_encoder(tmp_path / "ckpt" / "last.ckpt")  # the fine-tuned encoder, reusable like any checkpoint's
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(tuned.state_dict()[key], value), key


def test_channel_adapter_against_hand_computed_pixels():
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.4, 0.6]]).view(4, 3, 1, 1)
    gray = ChannelAdapter(3, 1)(rgb).flatten()
    assert torch.allclose(gray, torch.tensor([0.299, 0.587, 0.114, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6]))
    image = Image.new("RGB", (1, 1), (51, 102, 153))  # PIL's own conversion agrees (to its integer rounding)
    assert abs(ChannelAdapter(3, 1)(torch.tensor([51, 102, 153.0]).view(1, 3, 1, 1) / 255).item() * 255 - image.convert("L").getpixel((0, 0))) < 1
    x = torch.rand(2, 1, 5, 5)
    assert torch.equal(ChannelAdapter(1, 3)(x), x.repeat(1, 3, 1, 1))
    assert ChannelAdapter(1, 1)(x) is x


def test_transfer_without_labels_says_so_before_training(tmp_path):
    with pytest.raises(ConfigError, match="transfer needs labelled data, but num_classes is None"):
        TransferClassifier(source="random", **{**DATA, "num_classes": None})
    model = TransferClassifier(source="random", **DATA)
    with pytest.raises(ConfigError, match=r"transfer needs labelled data, but UnlabelledRandomImages\(\) has none"):
        fit(model, UnlabelledRandomImages(batch_size=16, val_size=32), tmp_path, max_steps=1)
    assert not (tmp_path / "ckpt").exists()


def test_random_source_is_untrained_with_the_target_normalisation():
    model = TransferClassifier(source="random", **DATA)
    assert model.encoder.config["mean"] == [0.5] and model.encoder.config["input_size"] == 16


@pytest.fixture
def empty_hub(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


def test_torchvision_weights_offline_is_one_line_naming_the_cache(empty_hub, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)  # the download boundary only
    with pytest.raises(CheckpointError) as error:
        TransferClassifier(source="ResNet18_Weights.IMAGENET1K_V1", **DATA)
    message = str(error.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message and str(empty_hub / "checkpoints") in message


def test_torchvision_weights_in_the_hub_cache_load_offline(empty_hub, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded although cached"))
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    (empty_hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), empty_hub / "checkpoints" / "resnet18-f37072fd.pth")
    model = TransferClassifier(source="ResNet18_Weights.IMAGENET1K_V1", mode="feature_extract", **DATA)
    assert torch.equal(model.encoder.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.encoder.config["input_size"] == 224 and model.encoder.config["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert "grayscale -> RGB" in model.adaptation and "16 -> 224" in model.adaptation
    with torch.no_grad():
        reference.fc = torch.nn.Identity()
        x = torch.rand(2, 1, 16, 16)
        expected = reference.eval()(((torch.nn.functional.interpolate(x, size=224, mode="bilinear", antialias=True).expand(-1, 3, -1, -1))
                                     - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        assert torch.allclose(model.encoder(model.adapter(x)), expected, atol=1e-4)


def test_unknown_torchvision_weights_name():
    with pytest.raises(Exception, match="unknown torchvision weights"):
        TransferClassifier(source="ResNet18_Weights.NOPE", **DATA)


TIMM_WEIGHTS = "vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture
def hugging_face_offline(tmp_path, monkeypatch):
    """An empty Hugging Face cache, HF_HUB_OFFLINE=1 (as the hub reads it), and no network at all."""
    from huggingface_hub import constants

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (the test has none)")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("socket.socket.connect", no_network)
    return tmp_path / "hf"


def test_timm_weights_offline_is_one_line_naming_the_cache(hugging_face_offline):
    with pytest.raises(CheckpointError) as error:
        TransferClassifier(source=f"timm:{TIMM_WEIGHTS}", **DATA)
    message = str(error.value)
    assert "\n" not in message and f"hf download timm/{TIMM_WEIGHTS}" in message
    assert f"{hugging_face_offline}/models--timm--{TIMM_WEIGHTS}" in message


def test_timm_weights_in_the_hugging_face_cache_load_offline(hugging_face_offline):
    """A file in the layout timm's hub download reads (refs/main -> snapshots/<commit>/model.safetensors),
    loaded through timm's own pretrained path: only the download itself is left out."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0).eval()
    repo, commit = hugging_face_offline / f"models--timm--{TIMM_WEIGHTS}", "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(reference.state_dict(), repo / "snapshots" / commit / "model.safetensors")
    model = TransferClassifier(source=f"timm:{TIMM_WEIGHTS}", mode="feature_extract", **DATA)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.encoder.backbone.state_dict()[key], value), key
    config = model.encoder.config
    assert (config["backbone"], config["patch_size"], config["input_size"], config["mean"]) == ("vit_tiny", 16, 224, [0.5] * 3)
    assert "grayscale -> RGB" in model.adaptation and "16 -> 224" in model.adaptation
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        expected = reference((torch.nn.functional.interpolate(x, size=224, mode="bilinear", antialias=True).expand(-1, 3, -1, -1) - 0.5) / 0.5)
        assert torch.allclose(model.encoder(model.adapter(x)), expected, atol=1e-4)


@pytest.mark.parametrize("source, error", [("timm:vit_tiny_patch16_224.nope", "unknown timm weights"),
                                           ("timm:resnet50.a1_in1k", "transfer supports timm's plain ViTs")])
def test_timm_weights_that_transfer_cannot_use(source, error):
    with pytest.raises(ConfigError, match=error):
        TransferClassifier(source=source, **DATA)


def test_digits_split_is_stratified_disjoint_and_fixed():
    data = DigitsDataModule()
    train_images, train_labels = data.load_split(train=True)
    test_images, test_labels = data.load_split(train=False)
    assert train_images.shape == (1437, 1, 8, 8) and test_images.shape == (360, 1, 8, 8) and train_images.dtype == torch.uint8
    assert test_labels.bincount().min() >= 34 and test_labels.bincount().max() <= 37
    train_rows = {tuple(row.tolist()) for row in train_images.flatten(1)}
    assert sum(tuple(row.tolist()) in train_rows for row in test_images.flatten(1)) < 5  # a few digits are pixel-identical
    assert torch.equal(DigitsDataModule(seed=3).load_split(train=False)[1], test_labels)
    assert int(train_images.max()) == 255


def test_torchvision_dataset_from_its_own_files_offline(tmp_path):
    """torchvision's FashionMNIST class reading files laid out as torchvision keeps them (no download)."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    debian = FashionMNISTDataModule()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(gzip.decompress((debian.data_dir / f"{name}.gz").read_bytes()))
    data = TorchvisionDataModule("FashionMNIST", root=str(tmp_path))
    data.prepare_data()
    images, labels = data.load_split(train=False)
    expected_images, expected_labels = debian.load_split(train=False)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_torchvision_dataset_offline_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DataNotFoundError) as error:
        TorchvisionDataModule("CIFAR10", root=str(tmp_path)).prepare_data()
    assert "\n" not in str(error.value) and "CIFAR10 is not in" in str(error.value)


@pytest.mark.slow
def test_comparison_command_on_a_generated_image_folder(encoder_file, tmp_path, monkeypatch):
    write_colour_squares(tmp_path / "bees")
    config = tmp_path / "transfer.yaml"
    config.write_text(f"""
sources: [{encoder_file}]
data:
  class_path: ssl_lightning.data.ImageFolderDataModule
  init_args: {{data_dir: {tmp_path / 'bees' / 'train'}, test_dir: {tmp_path / 'bees' / 'val'}, image_size: 16,
               val_size: 8, batch_size: 8, drop_last: false}}
max_epochs: 2
output_dir: {tmp_path / 'results'}
log_dir: {tmp_path / 'logs'}
""")
    cli_here(["transfer", "--config", str(config)], tmp_path, monkeypatch)
    table = pd.read_csv(tmp_path / "results" / "results.csv")  # --output_dir itself
    assert list(table["run"]) == ["simclr finetune", "simclr feature_extract", "scratch"]
    assert table["test_acc"].between(0, 1).all() and (table["best_epoch"] >= 1).all()
    assert table.loc[1, "trainable_params"] == 8 * 8 * 2 + 2  # the head alone
    assert "RGB -> grayscale" in table.loc[0, "adaptation"]
    assert (tmp_path / "results" / "val_accuracy.png").stat().st_size > 5_000
    assert set(pd.read_csv(tmp_path / "results" / "val_accuracy.csv")["epoch"]) == {1, 2}
    assert "| scratch |" in (tmp_path / "results" / "results.md").read_text()
    for run in ("simclr_finetune", "simclr_feature_extract", "scratch"):
        events = EventAccumulator(str(tmp_path / "logs" / "bees" / "run_0" / run), size_guidance={"scalars": 0}).Reload()
        assert {"val/acc", "train/loss", "test/acc"} <= set(events.Tags()["scalars"])
        assert list((tmp_path / "logs" / "bees" / "run_0" / run / "checkpoints").glob("best-*.ckpt"))


@pytest.mark.slow
def test_comparison_trains_on_the_labelled_images_of_a_module_that_pretrains_apart(encoder_file, tmp_path):
    """Like STL-10: ``train_set`` has no labels, ``labelled_set`` has; transfer fits on the latter."""
    data = LabelsApart(batch_size=16, val_size=32)
    table = compare([str(encoder_file)], data, max_epochs=1, scratch=False, output_dir=tmp_path / "results", log_dir=tmp_path / "logs",
                    accelerator="cpu")
    assert list(table["run"]) == ["simclr finetune", "simclr feature_extract"] and table["test_acc"].between(0, 1).all()
    assert (tmp_path / "results" / "results.md").is_file()
    assert (tmp_path / "logs" / "labelsapart" / "run_0").is_dir()  # the log folder is named by the data module
    assert (data.train_set.labels == UNLABELLED).all() and (data.labelled_set.labels >= 0).all()
