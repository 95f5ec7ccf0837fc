"""Runs have an identity: the experiment's name files them, ``--ckpt_path last`` resumes the newest
run of that experiment with a checkpoint and this config, and refuses a changed config, and Ctrl-C or SIGTERM leave
a ``last.ckpt`` to resume from. Through the CLI, in-process."""

import json
import signal
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

from conftest import SIMCLR_CONFIG, TINY
from ssl_lightning.cli import main
from ssl_lightning.cli.runs import experiment_name

FIT = ["fit", "--config", str(SIMCLR_CONFIG), *TINY, "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
RUN = Path("checkpoints") / "simclr" / "version_0"


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_the_experiment_is_named_by_name_else_the_config_file_else_the_method():
    model = Namespace(class_path="ssl_lightning.methods.SimCLR")
    assert experiment_name(Namespace(name="mine", config=[Path("configs/simclr_gpu.yaml")], model=model)) == "mine"
    assert experiment_name(Namespace(name=None, config=[Path("configs/simclr_gpu.yaml")], model=model)) == "simclr_gpu"
    assert experiment_name(Namespace(name=None, config=None, model=model)) == "simclr"


def test_ckpt_path_last_resumes_the_newest_run_with_a_checkpoint_and_refuses_another_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main([*FIT, "--trainer.max_steps=1"])
    (tmp_path / "checkpoints" / "simclr" / "version_1").mkdir()  # a later run without checkpoints (a validate, say)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        main([*FIT, "--trainer.max_steps=2", "--model.init_args.optimizer.lr=0.5", "--ckpt_path", "last"])
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"ssl-lightning: error: the config differs from the one {RUN} was trained with (model.init_args.optimizer.lr: 0.003 -> 0.5)")
    assert "--resume_with_changes" in line and step_of(RUN / "checkpoints" / "last.ckpt") == 1  # max_steps is free to change
    assert "other runs" not in line  # there is one

    main([*FIT, "--trainer.max_steps=2", "--model.init_args.optimizer.lr=0.5", "--ckpt_path", "last", "--resume_with_changes"])
    assert f"resuming {RUN / 'checkpoints' / 'last.ckpt'} at step 1" in capsys.readouterr().err
    assert step_of(tmp_path / RUN / "checkpoints" / "last.ckpt") == 2
    assert not list((tmp_path / "checkpoints" / "simclr" / "version_1").iterdir())


def test_ckpt_path_last_passes_over_newer_runs_of_the_experiment_trained_with_another_config(tmp_path, monkeypatch, capsys):
    """As after README's own-data examples: a newer run of simclr.yaml on other data (here another
    lr) does not hide the run that this config trained."""
    monkeypatch.chdir(tmp_path)
    main([*FIT, "--trainer.max_steps=1"])
    main([*FIT, "--trainer.max_steps=1", "--model.init_args.optimizer.lr=0.5"])  # version_1
    capsys.readouterr()
    main([*FIT, "--trainer.max_steps=2", "--ckpt_path", "last"])
    assert f"resuming {RUN / 'checkpoints' / 'last.ckpt'} at step 1" in capsys.readouterr().err
    assert step_of(RUN / "checkpoints" / "last.ckpt") == 2
    assert step_of(RUN.with_name("version_1") / "checkpoints" / "last.ckpt") == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_saves_last_ckpt_at_that_step_and_the_run_resumes_from_it(signum, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    callback = {"class_path": "kill_points.SignalAt", "init_args": {"step": 2, "signum": int(signum)}}
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([*FIT, "--trainer.max_steps=6", "--checkpoint.save_last_every_n_steps=100", f"--trainer.callbacks+={json.dumps(callback)}"])
    finally:
        for s, handler in handlers.items():  # Lightning ignores SIGINT after a KeyboardInterrupt
            signal.signal(s, handler)
    assert exit_info.value.code == 1
    last = tmp_path / RUN / "checkpoints" / "last.ckpt"
    assert step_of(last) == 2
    assert f"saved {RUN / 'checkpoints' / 'last.ckpt'} at step 2" in capsys.readouterr().err
    if signum == signal.SIGINT:  # once is enough for the resume: the checkpoint is the same either way
        main([*FIT, "--trainer.max_steps=3", "--ckpt_path", "last"])
        assert "at step 2" in capsys.readouterr().err and step_of(last) == 3


def test_numbered_folders_are_listed_highest_first_and_the_next_run_goes_above_them(tmp_path):
    from ssl_lightning.outputs import next_run_folder, numbered_folders

    assert next_run_folder(tmp_path) == tmp_path / "run_0"
    for name in ("run_0", "run_10", "run_2", "run_x", "version_3", "run_3.txt"):
        (tmp_path / name).mkdir()
    assert numbered_folders(tmp_path, "run_") == [(10, tmp_path / "run_10"), (2, tmp_path / "run_2"), (0, tmp_path / "run_0")]
    assert numbered_folders(tmp_path, "version_") == [(3, tmp_path / "version_3")]
    assert next_run_folder(tmp_path) == tmp_path / "run_11"  # above the highest, not the count


def test_a_run_that_fails_at_setup_leaves_no_run_folder_and_a_started_one_keeps_its_own(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from conftest import CONFIGS, TINY_DATA, TINY_HEADS, cli_here
    from ssl_lightning.callbacks import RemoveUnstartedRun

    with pytest.raises(SystemExit):  # the support set does not tile the batch: a ConfigError at setup
        cli_here(["fit", "--config", str(CONFIGS / "nnclr.yaml"), *TINY_DATA, *TINY_HEADS["nnclr"], "--model.init_args.support_size=40"],
                 tmp_path, monkeypatch)
    said = capsys.readouterr().err
    assert "must be a multiple" in said and not (tmp_path / "checkpoints").exists()
    assert "go to" not in said  # no folder named that is then removed
    # A folder with anything a run wrote after its start (a checkpoint), or a resumed run's, stays.
    run = tmp_path / "runs" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").touch()
    (run / "checkpoints" / "last.ckpt").touch()
    trainer = SimpleNamespace(global_step=0, ckpt_path=None, is_global_zero=True, logger=object(), log_dir=str(run))
    RemoveUnstartedRun().on_exception(trainer, None, RuntimeError())
    assert (run / "checkpoints" / "last.ckpt").exists()
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "checkpoints").rmdir()
    RemoveUnstartedRun().on_exception(SimpleNamespace(**{**vars(trainer), "ckpt_path": "last.ckpt"}), None, RuntimeError())
    assert run.exists()
    RemoveUnstartedRun().on_exception(trainer, None, RuntimeError())
    assert not (tmp_path / "runs").exists()
