"""A run killed with SIGKILL (mid-epoch, or in the middle of writing a checkpoint) and started again
with the same command plus ``--ckpt_path last`` ends where an uninterrupted run ends: the same step
count and the same weights, optimizer, scheduler, queue and target networks."""

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, TINY_DATA, TINY_HEADS, cli_here
from test_cli import CONSOLE_SCRIPT, run_cli

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
METHOD_ARGS = {**{m: [str(CONFIGS / f"{m}.yaml"), *TINY_HEADS[m]] for m in TINY_HEADS}, "supervised": [str(CONFIGS / "supervised.yaml")]}
# 8 steps per epoch (256 images, batch 32), a checkpoint after every step.
RUN = [*TINY_DATA, "--trainer.max_epochs=2", "--trainer.limit_val_batches=1", "--checkpoint.save_last_every_n_steps=1",
       "--trainer.enable_progress_bar=false"]


def last_checkpoint(cwd: Path) -> Path:
    (run,) = (cwd / "checkpoints").glob("*/version_0")
    return run / "checkpoints" / "last.ckpt"


def kill_at(args: list[str], cwd: Path, step: int, in_save: bool = False) -> None:
    """Runs the console script until it reaches ``step`` (``WaitToBeKilled``), then SIGKILLs it."""
    marker = cwd / "reached"
    callback = {"class_path": "kill_points.WaitToBeKilled", "init_args": {"step": step, "marker": str(marker), "in_save": in_save}}
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([CONSOLE_SCRIPT, *args, f"--trainer.callbacks+={json.dumps(callback)}"], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.05)
    process.kill()  # SIGKILL: no handler, no cleanup
    process.wait()
    process.stderr.close()


def assert_same_state(resumed: dict, reference: dict) -> None:
    assert resumed["global_step"] == reference["global_step"]
    assert resumed["epoch"] == reference["epoch"]
    for key, value in reference["state_dict"].items():  # weights, BN statistics, MoCo's queue, EMA targets
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["lr_schedulers"] == reference["lr_schedulers"]
    for a, b in zip(resumed["optimizer_states"][0]["state"].values(), reference["optimizer_states"][0]["state"].values()):
        for name, value in b.items():
            assert torch.equal(torch.as_tensor(a[name]), torch.as_tensor(value)), name


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_end(method, tmp_path, monkeypatch, capsys):
    config, *heads = METHOD_ARGS[method]
    args = ["fit", "--config", config, *heads, *RUN, "--data.init_args.train_size=128"]  # 2 epochs of 4 steps
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    cli_here(args, tmp_path / "reference", monkeypatch)

    kill_at(args, tmp_path / "killed", step=3)  # before step 3's checkpoint (checkpoint callbacks run last)
    assert torch.load(last_checkpoint(tmp_path / "killed"), weights_only=True)["global_step"] == 2
    capsys.readouterr()
    cli_here([*args, "--ckpt_path", "last"], tmp_path / "killed", monkeypatch)
    assert "resuming" in capsys.readouterr().err

    end = torch.load(last_checkpoint(tmp_path / "killed"), weights_only=True)
    assert end["global_step"] == 8
    assert_same_state(end, torch.load(last_checkpoint(tmp_path / "reference"), weights_only=True))
    assert not list((tmp_path / "killed" / "checkpoints").glob("*/version_1"))  # resumed in the same run folder


def test_a_streamed_run_with_two_workers_resumes_to_the_uninterrupted_end(tmp_path, monkeypatch, caplog):
    """The same, on an image folder decoded in 2 DataLoader workers: torchdata's loader restores
    its position (and each worker's) from the checkpoint."""
    from test_image_folder import LIGHTNING_LOG, write_images

    for cls, start in (("a", 0), ("b", 500)):
        write_images(tmp_path / "photos" / cls, 160, size=(20, 18), ext="jpg", start=start)
    args = ["fit", "--config", *METHOD_ARGS["simclr"], *RUN, "--data.class_path=ImageFolderDataModule",
            f"--data.init_args.data_dir={tmp_path / 'photos'}", "--data.init_args.image_size=16", "--data.init_args.num_channels=1",
            "--data.init_args.in_memory=false", "--data.init_args.num_workers=2"]
    (tmp_path / "reference").mkdir()
    (tmp_path / "killed").mkdir()
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        cli_here(args, tmp_path / "reference", monkeypatch)
    assert "streamed (decoded in 2 DataLoader worker(s))" in caplog.text
    kill_at(args, tmp_path / "killed", step=5)
    cli_here([*args, "--ckpt_path", "last"], tmp_path / "killed", monkeypatch)
    end = torch.load(last_checkpoint(tmp_path / "killed"), weights_only=True)
    assert end["global_step"] == 16
    assert_same_state(end, torch.load(last_checkpoint(tmp_path / "reference"), weights_only=True))


def test_a_run_stopped_by_max_steps_inside_an_epoch_resumes_with_that_epochs_next_batch(tmp_path, monkeypatch):
    """Lightning runs an epoch's end (validation, checkpoints) where max_steps stops inside it, and
    counts the epoch as done: resumed, the run would skip its other batches. It goes on with step 6
    of epoch 0 instead, on the batches and views of an uninterrupted run. (The weights differ from
    that run's: max_steps=5 made the first 5 steps' schedule 5 steps long.)"""
    runs = {}
    for name in ("reference", "stopped"):
        (tmp_path / name).mkdir()
        runs[name] = [*RUN, "--trainer.callbacks+=kill_points.RecordBatches", f"--trainer.callbacks.path={tmp_path / name / 'batches'}"]
    cli_here(["fit", "--config", *METHOD_ARGS["simclr"], *runs["reference"]], tmp_path / "reference", monkeypatch)
    cli_here(["fit", "--config", *METHOD_ARGS["simclr"], *runs["stopped"], "--trainer.max_steps=5"], tmp_path / "stopped", monkeypatch)
    stopped = torch.load(last_checkpoint(tmp_path / "stopped"), weights_only=True)
    assert (stopped["global_step"], stopped["epoch"]) == (5, 0)
    cli_here(["fit", "--config", *METHOD_ARGS["simclr"], *runs["stopped"], "--ckpt_path", "last"], tmp_path / "stopped", monkeypatch)
    assert torch.load(last_checkpoint(tmp_path / "stopped"), weights_only=True)["global_step"] == 16  # 2 epochs of 8, not 5 + 8
    reference, resumed = ((tmp_path / name / "batches").read_text().splitlines() for name in ("reference", "stopped"))
    assert resumed[5].startswith("6 0 5 ")  # step 6 is epoch 0's batch 5
    assert resumed == reference  # steps 1-16: the same images and the same views, in the same order


def test_a_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    args = ["fit", "--config", *METHOD_ARGS["moco"], *RUN]
    kill_at(args, tmp_path, step=11, in_save=True)  # half of step 11's last.ckpt written
    last = last_checkpoint(tmp_path)
    assert last.with_name("last.ckpt.partial").stat().st_size > 0  # the save was under way
    assert torch.load(last, weights_only=True)["global_step"] == 10  # the previous one, readable
    cli_here([*args, "--ckpt_path", "last"], tmp_path, monkeypatch)
    assert torch.load(last, weights_only=True)["global_step"] == 16


def test_ckpt_path_last_without_an_earlier_run_of_the_experiment_starts_a_new_one(tmp_path, monkeypatch, capsys):
    """Runs are filed by the config file's name: a run of a copy of simclr.yaml is another experiment."""
    from conftest import SIMCLR_CONFIG, TINY
    from ssl_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "simclr" / "version_0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "checkpoints" / "simclr" / "version_0" / "checkpoints" / "last.ckpt").write_bytes(b"another experiment's")
    config = tmp_path / "simclr_small.yaml"
    config.write_text(SIMCLR_CONFIG.read_text())
    main(["fit", "--config", str(config), *TINY, "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--ckpt_path", "last"])
    assert "no run with a last.ckpt under checkpoints/simclr_small: starting a new run" in capsys.readouterr().err
    assert (tmp_path / "checkpoints" / "simclr_small" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_ddp_run_through_the_cli_saves_every_process_state_and_resumes(tmp_path):
    """2 CPU processes through the console script (Lightning's launcher starts the second one with
    the same command line), then the same command resumed with more steps."""
    args = ["fit", "--config", *METHOD_ARGS["moco"], *TINY_DATA, "--trainer.strategy=ddp", "--trainer.devices=2",
            "--trainer.accelerator=cpu", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
    first = run_cli(*args, "--trainer.max_steps=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = run_cli(*args, "--trainer.max_steps=4", "--ckpt_path", "last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    checkpoint = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert checkpoint["global_step"] == 4
    assert len(checkpoint["callbacks"]["ExactResume"]["per_rank"]) == 2  # each process's random states
