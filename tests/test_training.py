import copy
import inspect
import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from conftest import TINY_ENCODER, fit
from ssl_lightning import load_encoder
from ssl_lightning.errors import CheckpointError, ConfigError, TrainingDivergedError
from ssl_lightning.methods import BarlowTwins, MoCo, SimCLR, Supervised
from ssl_lightning.optim import OptimizerConfig, clip_grad_norm_per_parameter, linear_ramp, param_groups, scaled_lr, warmup_cosine


def test_views_are_made_after_the_transfer_in_fit_stages_only(random_images, tiny_simclr_kwargs, tmp_path):
    seen = {}

    class Spy(SimCLR):
        def training_step(self, batch, batch_idx):
            seen["train"] = [*(view.shape for view in batch.views), batch.labels.shape, batch.images.shape]
            return super().training_step(batch, batch_idx)

    fit(Spy(**tiny_simclr_kwargs), random_images, tmp_path, max_steps=1, limit_val_batches=0)
    assert seen["train"] == [(16, 1, 16, 16), (16, 1, 16, 16), (16,), (16, 1, 16, 16)]  # view 1, view 2, labels, images
    model = SimCLR(**tiny_simclr_kwargs)
    images, labels = torch.zeros(4, 1, 16, 16, dtype=torch.uint8), torch.zeros(4)
    assert model.on_after_batch_transfer((images, labels), 0) == (images, labels)  # no trainer: untouched


def test_encoder_input_checks(tiny_simclr_kwargs):
    encoder = SimCLR(**tiny_simclr_kwargs).encoder.eval()
    with pytest.raises(ConfigError, match=r"\(N, 1, H, W\)"):
        encoder(torch.rand(2, 3, 16, 16))
    with pytest.raises(ConfigError, match="divide by 255"):
        encoder(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    # other sizes are resized to the training size
    assert encoder(torch.rand(2, 1, 28, 28)).shape == (2, encoder.out_dim)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
@pytest.mark.parametrize("method", [SimCLR, MoCo])
def test_non_positive_temperature_is_refused_at_construction(method, temperature):
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        method(temperature=temperature)


def test_a_batch_of_one_image_is_explained(tiny_simclr_kwargs):
    model = SimCLR(**tiny_simclr_kwargs)
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ConfigError, match="at least 2 images"):
        model.compute_loss(x, x)


def test_no_weight_decay_on_biases_and_norm_weights(tiny_simclr_kwargs):
    model = SimCLR(**tiny_simclr_kwargs)
    decay, no_decay = param_groups(model, lr=0.5, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    bn_weight = model.encoder.backbone.bn1.weight
    assert any(p is bn_weight for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)  # cosine starts at the peak
    assert lrs[8] == pytest.approx(0.5)  # half way through the decay
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_cosine_ends_at_the_final_lr_ratio():
    # The UvA tutorial's CosineAnnealingLR(eta_min=lr/50) over 10 steps, written out by hand:
    # lr_k = lr/50 + (lr - lr/50) * (1 + cos(pi k / 10)) / 2.
    expected = [0.02 + 0.98 * (1 + math.cos(math.pi * k / 10)) / 2 for k in range(12)]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=0, total_steps=10, final_lr_ratio=0.02)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(expected[:11] + [0.02])  # and stays there past the end
    assert lrs[5] == pytest.approx(0.51)
    with pytest.raises(ConfigError, match="final_lr_ratio"):
        warmup_cosine(optimizer, warmup_steps=0, total_steps=10, final_lr_ratio=1.5)


def test_final_lr_ratio_reaches_the_trainer_schedule(random_images, tiny_simclr_kwargs, tmp_path):
    model = SimCLR(**tiny_simclr_kwargs, optimizer=OptimizerConfig(lr=0.1, warmup_epochs=0, final_lr_ratio=0.5))
    trainer, _ = fit(model, random_images, tmp_path, max_steps=4, limit_val_batches=0)
    # After the run's 4 of 4 steps the cosine is at its end: 0.5 x lr (without the ratio, 0).
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)

def test_load_encoder_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_encoder(bad)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an ssl-lightning checkpoint"):
        load_encoder(foreign)


def test_last_checkpoint_is_current_when_the_metric_stops_improving(tmp_path):
    from pytorch_lightning.demos.boring_classes import BoringModel

    from ssl_lightning.callbacks import RunCheckpoint

    class Worsening(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val/acc_top5", 1.0 / (1 + self.current_epoch))  # best at epoch 0
            return super().validation_step(batch, batch_idx)

    checkpoint = RunCheckpoint(dirpath=tmp_path, monitor="val/acc_top5", mode="max", save_last=True)
    trainer = Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[checkpoint])
    trainer.fit(Worsening())
    assert torch.load(checkpoint.best_model_path, weights_only=False)["global_step"] == 2
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == trainer.global_step == 6


def test_fast_dev_run_writes_no_checkpoint(tmp_path):
    from pytorch_lightning.demos.boring_classes import BoringModel

    from ssl_lightning.callbacks import RunCheckpoint

    trainer = Trainer(fast_dev_run=True, default_root_dir=tmp_path, enable_progress_bar=False,
                      callbacks=[RunCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    trainer.fit(BoringModel())
    assert not list(tmp_path.rglob("*.ckpt"))


def test_lars_step_matches_the_formula():
    from ssl_lightning.optim import LARS

    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ‖w‖ = 5
    b = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    w.grad, b.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([0.5, 0.5])
    optimizer = LARS([{"params": [w], "weight_decay": 0.1, "lars_adapt": True},
                      {"params": [b], "weight_decay": 0.0, "lars_adapt": False}], lr=0.5, momentum=0.9, eta=0.01)
    optimizer.step()
    g = torch.tensor([[0.3, 1.4]])  # grad + 0.1 w
    trust = 0.01 * 5 / g.norm()
    assert torch.allclose(w, torch.tensor([[3.0, 4.0]]) - 0.5 * trust * g)
    assert torch.allclose(b, torch.tensor([0.75, -1.25]))  # plain SGD: no decay, no adaptation
    w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
    before = b.detach().clone()
    optimizer.step()  # momentum carries the last step on
    assert torch.allclose(b, before - 0.5 * 0.9 * torch.tensor([0.5, 0.5]))


def test_lars_clip_caps_each_layers_rate_at_lr():
    from ssl_lightning.optim import LARS

    for lr, eta in [(0.5, 0.01), (0.001, 0.01)]:  # t/lr = 0.036/0.5 < 1 (kept), then 0.036/0.001 > 1 (clipped)
        w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ‖w‖ = 5
        w.grad = torch.tensor([[0.0, 1.0]])
        LARS([{"params": [w], "weight_decay": 0.1, "lars_adapt": True}], lr=lr, eta=eta, clip=True).step()
        g = torch.tensor([[0.3, 1.4]])  # grad + 0.1 w
        rate = min(eta * 5 / g.norm().item(), lr)  # solo-learn's clip_lr: min(lr x t, lr)
        assert torch.allclose(w, torch.tensor([[3.0, 4.0]]) - rate * g)


@pytest.mark.parametrize("method", ["simclr", "supervised"])
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(method, random_images, tiny_simclr_kwargs, tmp_path):
    model = nan_at_step_2(method, tiny_simclr_kwargs)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    trainer = Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[checkpoint], max_epochs=3)
    with pytest.raises(TrainingDivergedError, match=r"is (nan|inf) at step 2 \(epoch 0\)"):
        trainer.fit(model, datamodule=random_images)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2  # the save after the bad step was refused
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_a_non_finite_loss_is_read_back_at_the_next_logging_step_not_at_every_step(random_images, tiny_simclr_kwargs, tmp_path):
    model = nan_at_step_2("simclr", tiny_simclr_kwargs)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                      enable_model_summary=False, max_epochs=3, log_every_n_steps=4)
    with pytest.raises(TrainingDivergedError, match=r"is nan at step 2 \(epoch 0\)"):
        trainer.fit(model, datamodule=random_images)
    assert trainer.global_step == 4


def nan_at_step_2(method, tiny_simclr_kwargs):
    """A model whose training loss is non-finite at step 2 only."""
    if method == "simclr":
        model = SimCLR(**tiny_simclr_kwargs)
        compute = model.compute_loss
        model.compute_loss = lambda x1, x2: compute(x1, x2)._replace(loss=compute(x1, x2).loss * (float("nan") if model.global_step == 2 else 1))
    else:
        model = Supervised(num_classes=4, encoder=TINY_ENCODER)
        classifier = model.classifier
        model.classifier = torch.nn.Sequential(classifier)
        model.classifier.register_forward_hook(lambda m, i, out: out * float("inf") if model.global_step == 2 and model.training else out)
    return model


def test_images_that_do_not_fit_the_model_are_refused(random_images, tmp_path):
    model = SimCLR(encoder=replace(TINY_ENCODER, in_channels=3, mean=(0.5,) * 3, std=(0.29,) * 3), projection_hidden_dim=16, projection_dim=8)
    with pytest.raises(ConfigError, match="expects 3-channel images of side 16, but the data has 1 channel"):
        fit(model, random_images, tmp_path, max_steps=1)


def test_last_checkpoint_is_refreshed_every_n_steps(random_images, tiny_simclr_kwargs, tmp_path):
    from pytorch_lightning import Callback

    from ssl_lightning.callbacks import RunCheckpoint

    seen = []

    class ReadLast(Callback):  # runs before the checkpoint callback at each step
        def on_train_batch_end(self, trainer, *args):
            last = tmp_path / "last.ckpt"
            seen.append(torch.load(last, weights_only=True)["global_step"] if last.exists() else None)

    checkpoint = RunCheckpoint(dirpath=tmp_path, save_last=True, save_last_every_n_steps=3)
    trainer = Trainer(accelerator="cpu", max_steps=7, limit_val_batches=0, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[checkpoint, ReadLast()])
    trainer.fit(SimCLR(**tiny_simclr_kwargs), datamodule=random_images)
    assert seen == [None, None, None, 3, 4, 4, 6]  # steps 3 and 6, and the end of the 4-step epoch
    with pytest.raises(ConfigError, match="save_last_every_n_steps"):
        RunCheckpoint(save_last_every_n_steps=0)


def test_checkpoint_of_another_method_or_architecture_is_refused(tiny_simclr_kwargs):
    from ssl_lightning.checkpoint import check_compatible

    simclr = SimCLR(**tiny_simclr_kwargs)
    checkpoint = {"state_dict": simclr.state_dict(), "method": "SimCLR"}
    check_compatible(checkpoint, simclr)  # its own: fine
    with pytest.raises(CheckpointError, match="written by SimCLR, not MoCo"):
        check_compatible(checkpoint, MoCo(encoder=TINY_ENCODER, projection_hidden_dim=16, projection_dim=8, queue_size=32))
    wider = SimCLR(**{**tiny_simclr_kwargs, "encoder": replace(TINY_ENCODER, width=16)})
    with pytest.raises(CheckpointError, match=r"another architecture \(\d+ tensors differ: encoder\.backbone\."):
        check_compatible(checkpoint, wider)


@pytest.mark.slow
def test_compiled_backbones_train_and_keep_their_checkpoint_keys(random_images, tmp_path, monkeypatch):
    # Dynamo and AOTAutograd trace forward and backward as with the default backend; inductor's C++
    # code generation (about 90 s here on a cold cache) is PyTorch's to test, not ours.
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: compile_module(self, backend="aot_eager", **kwargs))
    model = MoCo(encoder=replace(TINY_ENCODER, compile=True), projection_hidden_dim=16, projection_dim=8, queue_size=32)
    keys = set(model.state_dict())
    _, checkpoint = fit(model, random_images, tmp_path, max_steps=2, limit_val_batches=1)
    assert model.encoder.backbone._compiled_call_impl is not None and model.key_encoder.backbone._compiled_call_impl is not None
    assert set(model.state_dict()) == keys  # no "_orig_mod." prefixes: checkpoints load as usual
    assert load_encoder(checkpoint.last_model_path)(torch.rand(2, 1, 16, 16)).shape == (2, 64)


def test_channels_last_is_the_default_layout_and_gives_the_same_features(tiny_simclr_kwargs):
    wider = replace(TINY_ENCODER, width=16)  # width 8 keeps the contiguous layout (next test)
    fast = SimCLR(**{**tiny_simclr_kwargs, "encoder": wider}).eval()
    plain = SimCLR(**{**tiny_simclr_kwargs, "encoder": replace(wider, channels_last=False)}).eval()
    plain.load_state_dict(fast.state_dict())
    conv = lambda model: model.encoder.backbone.layer1[0].conv1.weight  # noqa: E731  (3x3: the layouts differ)
    assert conv(fast).is_contiguous(memory_format=torch.channels_last) and not conv(plain).is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fast(x), plain(x), atol=1e-5)


CHANNELS_LAST_WIDTH_8_STEP = """
import torch
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.methods import SimCLR
model = SimCLR(encoder=EncoderConfig(width=8, input_size=64, channels_last=True), projection_hidden_dim=16, projection_dim=8)
x = torch.rand(2, 1, 64, 64)
model.compute_loss(x, x.flip(-1)).loss.backward()
assert not model.encoder.backbone.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
"""


def test_channels_last_at_width_8_keeps_the_contiguous_layout_and_trains():
    # In channels-last this step crashes the process (SIGSEGV in oneDNN's 1x1 backward), hence the subprocess.
    result = subprocess.run([sys.executable, "-c", CHANNELS_LAST_WIDTH_8_STEP], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit code {result.returncode}: {result.stderr[-2000:]}"


def test_lars_matches_lightly_on_the_same_parameters_and_gradients():
    """Several LARS steps with momentum, weight decay and excluded 1-d parameters against lightly's
    LARS (Lightning Bolts' code), an independent implementation.

    The two differ by design in the trust ratio's denominator: ours is η‖w‖/‖∇ + λw‖, the form of
    SimCLR's, BYOL's and Barlow Twins' code (the norm of the decayed gradient); lightly's is You et
    al.'s Eq. 6, η‖w‖/(‖∇‖ + λ‖w‖ + ε). They exclude the same parameters (ours: the group without
    ``lars_adapt``; lightly: a group whose weight decay is 0). For one semantics, lightly gets the
    decayed gradient ∇ + λw as its gradient and a weight decay of 1e-30 (not 0, so it still adapts;
    too small to add anything), which makes its ratio η‖w‖/(‖∇ + λw‖ + ε)."""
    from lightly.utils.lars import LARS as LightlyLARS

    from ssl_lightning.optim import LARS

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 3))  # smooth: no kink to amplify rounding
    twin = copy.deepcopy(model)
    lr, momentum, weight_decay, eta = 0.5, 0.9, 1e-2, 0.02
    ours = LARS(param_groups(model, lr, weight_decay), lr=lr, momentum=momentum, eta=eta)
    adapted = [p for p in twin.parameters() if p.ndim > 1]
    theirs = LightlyLARS([{"params": adapted, "weight_decay": 1e-30}, {"params": [p for p in twin.parameters() if p.ndim <= 1],
                          "weight_decay": 0.0}], lr=lr, momentum=momentum, trust_coefficient=eta)
    initial = [p.detach().clone() for p in model.parameters()]
    for _ in range(5):
        x = torch.randn(16, 6)
        for net in (model, twin):
            net.zero_grad()
            net(x).pow(2).sum().backward()
        with torch.no_grad():
            for p in adapted:
                p.grad.add_(p, alpha=weight_decay)  # the decayed gradient, as ours decays the adapted group
        ours.step()
        theirs.step()
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b)
    assert all(not torch.equal(a, b) for a, b in zip(model.parameters(), initial))  # every parameter moved


def test_biases_and_norms_follow_the_schedule_at_their_share_of_lr(random_images, tmp_path):
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    paper = inspect.signature(BarlowTwins).parameters["optimizer"].default
    assert paper.bias_norm_lr_ratio == 0.024  # the paper's 0.0048 / 0.2
    model = BarlowTwins(projector_dim=16, encoder=TINY_ENCODER, optimizer=replace(paper, name="lars", lr=0.2, warmup_epochs=0.5))
    monitor = LearningRateMonitor("step")
    trainer = Trainer(accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[monitor], enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, max_steps=4, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(model, datamodule=random_images)
    weights, biases = trainer.optimizers[0].param_groups
    assert weights["initial_lr"] == pytest.approx(0.2) and biases["initial_lr"] == pytest.approx(0.0048)
    assert weights["lr"] != 0.2  # the schedule moved it
    assert biases["lr"] == pytest.approx(0.024 * weights["lr"])
    logged_weights, logged_biases = monitor.lrs["train/lr/weights"], monitor.lrs["train/lr/biases_and_norms"]
    assert len(logged_weights) == 4 and len(set(logged_weights)) > 1
    assert logged_biases == pytest.approx([0.024 * lr for lr in logged_weights])


def test_lr_scaling_rules():
    assert scaled_lr(0.3, "none", 4096) == 0.3
    assert scaled_lr(0.3, "linear", 4096) == pytest.approx(0.3 * 16)  # SimCLR: 0.3 x BatchSize / 256
    assert scaled_lr(0.075, "sqrt", 4096) == pytest.approx(0.075 * 64)  # SimCLR: 0.075 x sqrt(BatchSize)
    with pytest.raises(ConfigError, match="unknown lr_scaling 'log'"):
        scaled_lr(0.1, "log", 256)


def test_lr_scaling_counts_accumulated_batches_and_is_logged(random_images, tiny_simclr_kwargs, tmp_path, caplog):
    from pytorch_lightning.loggers import CSVLogger

    model = SimCLR(**tiny_simclr_kwargs, optimizer=OptimizerConfig(lr=0.1, lr_scaling="linear"))
    logger = CSVLogger(tmp_path)
    trainer = Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                      max_steps=1, limit_val_batches=0, accumulate_grad_batches=4)
    with caplog.at_level("INFO"):
        trainer.fit(model, datamodule=random_images)
    expected = 0.1 * 64 / 256  # 16 images x 4 accumulated batches x 1 process
    assert [group["initial_lr"] for group in trainer.optimizers[0].param_groups] == pytest.approx([expected] * 2)
    assert f"learning rate {expected:.6g} (lr_scaling linear, global batch 64)" in caplog.text
    assert logger.experiment.hparams["effective_lr"] == pytest.approx(expected)
    assert logger.experiment.hparams["global_batch_size"] == 64


def test_linear_ramp_by_hand():
    assert [linear_ramp(step, 4, 0.04, 0.08) for step in (0, 1, 4, 9)] == pytest.approx([0.04, 0.05, 0.08, 0.08])
    assert linear_ramp(0, 0, 0.04, 0.07) == 0.07  # no warm-up


def test_gradient_clipping_per_parameter_scales_each_gradient_to_the_norm_on_its_own():
    """DINO's clip: a gradient of norm 5 becomes norm 1; one of norm 0.5 stays (a joint clip of both would shrink it too)."""
    layer = torch.nn.Linear(2, 1)
    layer.weight.grad, layer.bias.grad = torch.tensor([[3.0, 4.0]]), torch.tensor([0.5])
    clip_grad_norm_per_parameter(layer, 1.0)
    assert layer.weight.grad.tolist()[0] == pytest.approx([0.6, 0.8], rel=1e-5)
    assert layer.bias.grad.item() == pytest.approx(0.5)
