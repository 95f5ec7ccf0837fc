"""What keeps training fast, checked without a GPU (throughput itself lives in scripts/benchmark.py)."""

import pytest
import torch

import host_reads
from conftest import SIMCLR_CONFIG, TINY_DATA, TINY_HEADS
from ssl_lightning.cli import make_cli


@pytest.mark.parametrize("method", ["simclr", "moco", "supervised"])
def test_training_steps_between_logging_steps_read_no_tensor_back_to_the_host(method, tmp_path):
    """A run as `ssl-lightning fit` makes it (progress bar, TensorBoard, online evaluation, checkpoints
    every 100 steps): steps 3 to 8 (logging every 10) read no tensor's value on the host."""
    config = SIMCLR_CONFIG.with_name(f"{method}.yaml")
    heads = TINY_HEADS.get(method, [])
    make_cli(["fit", "--config", str(config), *TINY_DATA, *heads, "--data.init_args.train_size=512", "--trainer.max_steps=9", "--trainer.log_every_n_steps=10",
              f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
              "--trainer.callbacks+=host_reads.RecordHostReads", "--trainer.callbacks.start=3", "--trainer.callbacks.stop=8"])
    assert not host_reads.SEEN, f"host reads in steps 3-8: {dict(host_reads.SEEN)}"


def test_the_recorder_sees_a_read_of_the_loss(tmp_path, monkeypatch):
    """The check above can fail: a method that reads its loss at every step is caught."""
    from ssl_lightning.methods import SimCLR

    compute = SimCLR.compute_loss
    monkeypatch.setattr(SimCLR, "compute_loss", lambda self, x1, x2: (out := compute(self, x1, x2), out.loss.item())[0])
    with pytest.raises(AssertionError, match=r"item at .*test_speed.py"):
        test_training_steps_between_logging_steps_read_no_tensor_back_to_the_host("simclr", tmp_path)


def test_runs_on_a_gpu_default_to_bf16_mixed_precision(monkeypatch):
    from ssl_lightning.cli.run_defaults import default_precision

    assert default_precision("auto") is None  # this machine: no GPU, Lightning's 32-bit
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert default_precision("auto") == default_precision("gpu") == "bf16-mixed"
    assert default_precision("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # before Ampere
    assert default_precision("auto") is None


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "barlow_twins", "supervised"])
def test_every_method_trains_under_bf16_autocast(method, tmp_path):
    """bf16-mixed on the CPU's autocast: the dtypes meet (queue, targets, losses, metrics, online probe)."""
    config = SIMCLR_CONFIG.with_name(f"{method}.yaml")
    cli = make_cli(["fit", "--config", str(config), *TINY_DATA, *TINY_HEADS.get(method, []), "--trainer.fast_dev_run=true",
                    "--trainer.precision=bf16-mixed", f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.precision == "bf16-mixed"
    logged = cli.trainer.logged_metrics
    assert logged and all(torch.isfinite(value).all() for value in logged.values())
