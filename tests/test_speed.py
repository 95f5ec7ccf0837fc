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


def test_runs_default_to_bf16_mixed_where_a_gpu_or_the_cpu_computes_in_bf16(monkeypatch, tmp_path, caplog):
    from ssl_lightning.cli import run_defaults
    from ssl_lightning.cli.run_defaults import default_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert default_precision("auto") == default_precision("gpu") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # before Ampere
    assert default_precision("auto") is None

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run_defaults, "cpu_bf16_instructions", lambda: ["AVX512-BF16"])
    with caplog.at_level("INFO"):
        assert default_precision("auto") == default_precision("cpu") == "bf16-mixed"
    assert "precision bf16-mixed (this CPU has AVX512-BF16;" in caplog.text
    monkeypatch.setattr(run_defaults, "cpu_bf16_instructions", lambda: [])
    assert default_precision("auto") is None


def test_the_cpus_bf16_instructions_are_read_from_its_flags(tmp_path):
    from ssl_lightning.cli.run_defaults import cpu_bf16_instructions

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16 sse\n")
    assert cpu_bf16_instructions(cpuinfo) == ["AVX512-BF16", "AMX-BF16"]
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")  # AVX-512 without bf16: autocast would emulate it
    assert cpu_bf16_instructions(cpuinfo) == []
    assert cpu_bf16_instructions(tmp_path / "absent") == []  # not Linux


def test_an_explicit_precision_wins_over_the_hardwares(tmp_path, monkeypatch):
    from ssl_lightning.cli import run_defaults

    monkeypatch.setattr(run_defaults, "cpu_bf16_instructions", lambda: ["AVX512-BF16"])
    cli = make_cli(["--config", str(SIMCLR_CONFIG), *TINY_DATA, "--trainer.precision=32-true",
                    f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.trainer.precision == "32-true"
    cli = make_cli(["--config", str(SIMCLR_CONFIG), *TINY_DATA, f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "barlow_twins", "vicreg", "simsiam", "moco_v3", "nnclr", "swav", "dino", "autoencoder",
                                    "supervised"])
def test_every_method_trains_under_bf16_autocast(method, tmp_path):
    """bf16-mixed on the CPU's autocast: the dtypes meet (queue, targets, losses, metrics, online probe)."""
    config = SIMCLR_CONFIG.with_name(f"{method}.yaml")
    cli = make_cli(["fit", "--config", str(config), *TINY_DATA, *TINY_HEADS.get(method, []), "--trainer.fast_dev_run=true",
                    "--trainer.precision=bf16-mixed", f"--trainer.default_root_dir={tmp_path}"])
    assert cli.trainer.precision == "bf16-mixed"
    logged = cli.trainer.logged_metrics
    assert logged and all(torch.isfinite(value).all() for value in logged.values())
