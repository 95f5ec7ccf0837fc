import os
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Trainer
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

from ssl_lightning.data import ImageDataModule
from ssl_lightning.data.in_memory import InMemoryImages
from ssl_lightning.data.source import UNLABELLED
from ssl_lightning.encoder import EncoderConfig

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores, and so do the console scripts
    it starts (they inherit OMP_NUM_THREADS): two workers of two OpenMP threads each on two cores
    ran the suite about 3x slower, each thread waiting for one that had no core."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
CONFIGS = REPO / "ssl_lightning" / "configs"
SIMCLR_CONFIG = CONFIGS / "simclr.yaml"

# CLI overrides that make a config tiny: a width-8 ResNet-18 on 256 Fashion-MNIST images.
TINY_DATA = [
    "--model.init_args.encoder.width=8",
    "--data.init_args.batch_size=32",
    "--data.init_args.val_size=64",
    "--data.init_args.train_size=256",
]
TINY_HEADS = {
    "simclr": ["--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16"],
    "moco": ["--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16",
             "--model.init_args.queue_size=64"],
    "byol": ["--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16"],
    "barlow_twins": ["--model.init_args.projector_dim=32"],
    "vicreg": ["--model.init_args.expander_dim=32"],
    "simsiam": ["--model.init_args.projection_dim=32", "--model.init_args.predictor_hidden_dim=8"],
    "moco_v3": ["--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16"],
    "nnclr": ["--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16",
              "--model.init_args.predictor_hidden_dim=32", "--model.init_args.support_size=64"],
    # Multi-crop with two local crops (the configs: 6)
    "swav": ["--model.init_args.num_prototypes=16", "--model.init_args.projection_hidden_dim=32", "--model.init_args.projection_dim=16",
             '--model.init_args.views=[{}, {"copies": 2}]'],
    "dino": ["--model.init_args.out_dim=32", "--model.init_args.head_hidden_dim=32", "--model.init_args.head_bottleneck_dim=16",
             '--model.init_args.views=[{}, {}, {"copies": 2}]'],
    "autoencoder": ["--model.init_args.decoder_channels=16"],
}
TINY = TINY_DATA + TINY_HEADS["simclr"]


# A width-8 ResNet-18 on RandomImages' images.
TINY_ENCODER = EncoderConfig(width=8, in_channels=1, input_size=16, mean=(0.5,), std=(0.29,))



def tiny_pretraining_methods() -> dict:
    """{name: a maker of a tiny model of that method, on RandomImages' images}: the pretraining
    methods as the in-process tests build them (made when called, so importing costs nothing)."""
    from ssl_lightning.methods import BYOL, DINO, NNCLR, Autoencoder, BarlowTwins, MoCo, MoCoV3, SimCLR, SimSiam, SwAV, VICReg

    return {
        "simclr": lambda: SimCLR(projection_hidden_dim=16, projection_dim=8, encoder=TINY_ENCODER),
        "moco": lambda: MoCo(queue_size=32, projection_hidden_dim=16, projection_dim=8, key_bn_splits=2, encoder=TINY_ENCODER),
        "byol": lambda: BYOL(projection_hidden_dim=16, projection_dim=8, encoder=TINY_ENCODER),
        "barlow_twins": lambda: BarlowTwins(projector_dim=16, encoder=TINY_ENCODER),
        "vicreg": lambda: VICReg(expander_dim=16, encoder=TINY_ENCODER),
        "simsiam": lambda: SimSiam(projection_dim=16, predictor_hidden_dim=4, encoder=TINY_ENCODER),
        "moco_v3": lambda: MoCoV3(projection_hidden_dim=16, projection_dim=8, encoder=TINY_ENCODER),
        "nnclr": lambda: NNCLR(support_size=32, projection_hidden_dim=16, projection_dim=8, predictor_hidden_dim=16, encoder=TINY_ENCODER),
        # Two local crops each (the papers: 6 and 8); SwAV's queue on from the start, so that the
        # resume and DDP tests cover it.
        "swav": lambda: SwAV(num_prototypes=12, projection_hidden_dim=16, projection_dim=8, queue_size=32, queue_start_epoch=0,
                             encoder=TINY_ENCODER, views=[{}, {"copies": 2}]),
        "dino": lambda: DINO(out_dim=24, head_hidden_dim=16, head_bottleneck_dim=8, encoder=TINY_ENCODER, views=[{}, {}, {"copies": 2}]),
        "autoencoder": lambda: Autoencoder(decoder_channels=8, encoder=TINY_ENCODER),
    }


class RandomImages(ImageDataModule):
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


class UnlabelledRandomImages(RandomImages):
    """``RandomImages`` without labels, as a data module of unlabelled images has them."""

    num_classes = None

    def load_split(self, train: bool):
        images, labels = super().load_split(train)
        return images, torch.full_like(labels, UNLABELLED)


class LabelsApart(RandomImages):
    """Like STL-10: pretrains on images without labels (``train_set``) and draws labels from other
    images (``labelled_set``); here the same pixels, marked ``UNLABELLED`` for pretraining."""

    _labelled = None

    @property
    def labelled_set(self):
        return self._labelled

    def setup(self, stage: str) -> None:
        fresh = stage in ("fit", "validate") and self.train_set is None
        super().setup(stage)
        if fresh:
            self._labelled = self.train_set
            self.train_set = InMemoryImages(self._labelled.images, torch.full_like(self._labelled.labels, UNLABELLED))


def write_colour_squares(root, size=20):
    """root/{train,val}/{red,blue}/*.png: two classes of noisy colour squares."""
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", 16), ("val", 6)):
        for label, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / ("red", "blue")[label]
            folder.mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(-30, 30, (size, size, 3), generator=generator)
                pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")


def save_encoder(path: Path, **config) -> Path:
    """A seeded random ``Encoder(EncoderConfig(**config))`` saved as an encoder-only checkpoint (the shipped format) of "SimCLR"."""
    from ssl_lightning import Encoder

    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(**config))
    torch.save({"encoder_config": encoder.config, "method": "SimCLR",
                "state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}}, path)
    return path


@pytest.fixture(autouse=True)
def help_cache_of_the_session(tmp_path_factory, monkeypatch):
    """``SUBCOMMAND --help`` run in a test stores its text in the session's tmp folder, not in the
    user's cache: a test process has classes of its own (RandomImages) that the help would list."""
    folder = tmp_path_factory.getbasetemp() / "help-cache"
    monkeypatch.setattr("ssl_lightning.cli.help_cache.cache_folder", lambda: folder)


@pytest.fixture
def random_images():
    return RandomImages(batch_size=16, val_size=32)


@pytest.fixture
def tiny_simclr_kwargs():
    return dict(encoder=TINY_ENCODER, projection_hidden_dim=16, projection_dim=8)


def fit(model, data, tmp_path, callbacks_extra=(), ckpt_path=None, **trainer_kwargs):
    """Train in-process on the CPU without logger or progress bar; returns (trainer, checkpoint)."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[checkpoint, *callbacks_extra], **trainer_kwargs)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer, checkpoint


def cli_here(args, cwd: Path, monkeypatch) -> None:
    """``ssl-lightning *args`` in this process, in ``cwd``, for tests where a console-script
    start-up (seconds of imports) adds nothing; errors end in ``SystemExit`` as they do there."""
    from ssl_lightning.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # main() hands its arguments to LightningCLI through sys.argv
    main(list(args))
