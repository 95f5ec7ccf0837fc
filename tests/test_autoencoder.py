"""The autoencoder baseline: its corruptions, what its loss and ranking metrics compare, its decoder's
shapes, the reconstruction grid in TensorBoard, and a run whose encoder ``load_encoder`` takes out.
(The per-method tests of every pretraining method run it too: fast_dev_run, resume, DDP, bf16.)"""

from types import SimpleNamespace

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONFIGS, TINY_DATA, TINY_ENCODER, TINY_HEADS, RandomImages, cli_here, fit
from ssl_lightning import Autoencoder, load_encoder
from ssl_lightning.callbacks import LogReconstructions
from ssl_lightning.decoders import ConvDecoder
from ssl_lightning.errors import ConfigError
from ssl_lightning.losses import reconstruction_loss
from ssl_lightning.methods import ViewBatch
from ssl_lightning.methods.autoencoder import corrupt


def tiny(**kwargs) -> Autoencoder:
    return Autoencoder(decoder_channels=8, encoder=TINY_ENCODER, **kwargs)


def test_masking_noise_sets_a_fixed_share_of_each_images_values_to_zero():
    images = torch.rand(4, 2, 5, 5) * 0.9 + 0.05  # no zeros of their own
    masked = corrupt(images, "masking", 0.3)
    zeroed = masked == 0  # (4, 2, 5, 5)
    assert zeroed.flatten(1).sum(dim=1).tolist() == [round(0.3 * 50)] * 4  # round(ν d) of d = 50 values per image
    assert torch.equal(masked[~zeroed], images[~zeroed])  # the others untouched
    assert not torch.equal(zeroed[0], zeroed[1])  # a draw per image
    assert corrupt(images, "none", 0.3) is images


def test_gaussian_noise_is_additive_and_clipped_to_the_pixel_range():
    torch.manual_seed(0)
    images = torch.full((64, 1, 8, 8), 0.5)
    noisy = corrupt(images, "gaussian", 0.1)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert (noisy - images).std().item() == pytest.approx(0.1, rel=0.05)
    heavy = corrupt(images, "gaussian", 10.0)
    assert ((heavy == 0) | (heavy == 1)).float().mean() > 0.9  # mostly clipped


@pytest.mark.parametrize("corruption", ["masking", "gaussian"])
def test_denoising_corrupts_the_encoders_input_and_not_the_target(corruption):
    model = tiny(corruption=corruption, noise_level=0.5).eval()
    seen = []
    model.encoder.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    x = torch.rand(6, 1, 16, 16)
    torch.manual_seed(1)
    out = model.compute_loss(x)
    torch.manual_seed(1)
    corrupted = corrupt(x, corruption, 0.5)  # the same draw
    assert torch.equal(seen[0], corrupted) and not torch.equal(corrupted, x)
    with torch.no_grad():
        logits = model.decoder(model.encoder(corrupted))
    assert out.loss.item() == pytest.approx(reconstruction_loss(logits, x).item(), rel=1e-6)  # against the clean image
    # The ranking metrics compare the reconstructions with the clean images; the features are the code.
    assert torch.allclose(out.z1, torch.sigmoid(logits).flatten(1)) and torch.equal(out.z2, x.flatten(1))
    assert out.features.shape == (6, model.encoder.out_dim)


def test_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="unknown corruption 'salt'"):
        tiny(corruption="salt")
    with pytest.raises(ConfigError, match="noise_level must be >= 0 .a share in .0, 1. for masking., got 1.5"):
        tiny(corruption="masking", noise_level=1.5)
    with pytest.raises(ConfigError, match="decoder_channels must be a positive multiple of 4, got 6"):
        ConvDecoder(64, 1, 28, channels=6)
    with pytest.raises(ConfigError, match="reconstructions num_images must be >= 0, got -1"):
        LogReconstructions(num_images=-1)


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32), (1, 30), (3, 96)])
def test_the_decoder_gives_logits_at_the_images_size(channels, size):
    assert ConvDecoder(64, channels, size, channels=8)(torch.randn(2, 64)).shape == (2, channels, size, size)


def test_the_collapse_monitors_watch_the_code_not_the_pixels(tmp_path):
    model = tiny()
    monitored = []
    update = model.collapse_monitor.update
    model.collapse_monitor.update = lambda z: (monitored.append(tuple(z.shape)), update(z))
    trainer, _ = fit(model, RandomImages(batch_size=16, val_size=32), tmp_path, max_epochs=1, limit_train_batches=1,
                     num_sanity_val_steps=0)
    assert monitored == [(16, model.encoder.out_dim)] * 2  # the two full validation batches' codes, not (16, 256) pixels
    assert {"val/rankme", "val/embedding_std", "val/acc_top1"} <= set(trainer.logged_metrics)


def reconstruction_grids(folder):
    events = EventAccumulator(str(folder), size_guidance={"images": 0}).Reload()
    return events.Images("val/reconstructions") if "val/reconstructions" in events.Tags()["images"] else []


@pytest.mark.parametrize("corruption, rows", [("none", 2), ("masking", 3)])
def test_the_grid_shows_the_images_over_their_reconstructions(corruption, rows, tmp_path):
    """Images, then (denoising) the corrupted inputs, then the reconstructions: a row each of 16 px
    tiles with 2 px padding; a method without ``reconstruct`` logs nothing."""
    logger = TensorBoardLogger(tmp_path, name="run")
    images = torch.rand(10, 1, 16, 16)
    batch = ViewBatch([images], torch.zeros(10), images)
    trainer = SimpleNamespace(logger=logger, global_step=3)
    with torch.no_grad():
        LogReconstructions(num_images=8).on_validation_batch_end(trainer, tiny(corruption=corruption).eval(), None, batch, batch_idx=0)
        LogReconstructions(num_images=8).on_validation_batch_end(trainer, SimpleNamespace(), None, batch, batch_idx=0)
    logger.experiment.flush()
    (grid,) = reconstruction_grids(tmp_path / "run" / "version_0")
    assert (grid.width, grid.height, grid.step) == (8 * 18 + 2, rows * 18 + 2, 3)


@pytest.mark.slow
def test_a_denoising_run_logs_reconstructions_and_its_encoder_loads_for_downstream_use(tmp_path, monkeypatch):
    cli_here(["fit", "--config", str(CONFIGS / "autoencoder.yaml"), *TINY_DATA, *TINY_HEADS["autoencoder"],
              "--model.init_args.corruption=masking", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
              "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--projector.num_images=0",
              "--reconstructions.num_images=4", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false"], tmp_path,
             monkeypatch)
    run = tmp_path / "checkpoints" / "autoencoder" / "version_0"
    (grid,) = reconstruction_grids(run)
    assert (grid.width, grid.height, grid.step) == (4 * 30 + 2, 3 * 30 + 2, 2)  # 28 px images, corrupted inputs, reconstructions
    encoder = load_encoder(run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        assert encoder(torch.rand(5, 1, 28, 28)).shape == (5, 64)  # width 8: 8 x 8 features, the code
