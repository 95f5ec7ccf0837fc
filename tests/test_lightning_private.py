"""The private members of Lightning and jsonargparse that ssl-lightning relies on, one row each
with the place that uses it. When an upgrade renames or removes one, this test names it, instead
of an override that silently stops being called or an AttributeError in the middle of a run."""

import pytest
from jsonargparse import ArgumentParser
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loops import _FitLoop

PRIVATE_MEMBERS = [
    # callbacks.RunCheckpoint: last.ckpt refreshed every n steps and at a stop signal
    (ModelCheckpoint, "_save_last_checkpoint", "callbacks.RunCheckpoint"),
    (ModelCheckpoint, "_monitor_candidates", "callbacks.RunCheckpoint"),
    (ModelCheckpoint, "_should_save_on_train_epoch_end", "callbacks.RunCheckpoint"),
    (ModelCheckpoint, "_should_skip_saving_checkpoint", "callbacks.RunCheckpoint"),
    # callbacks.ExactResume: the train loader's saved position (Lightning issue #20550)
    (_FitLoop, "_load_combined_loader_states", "callbacks.ExactResume"),
    # cli.lightning.SSLLightningCLI: overrides that must still be called
    (LightningCLI, "_parse_ckpt_path", "cli.lightning.SSLLightningCLI._parse_ckpt_path"),
    (LightningCLI, "_prepare_subcommand_parser", "cli.lightning.SSLLightningCLI._prepare_subcommand_parser"),
    (LightningCLI, "_parser", "cli.lightning.SSLLightningCLI._resume_latest_run"),
]


@pytest.mark.parametrize(("owner", "name", "user"), PRIVATE_MEMBERS, ids=[f"{o.__name__}.{n}" for o, n, _ in PRIVATE_MEMBERS])
def test_private_lightning_member_still_exists(owner, name, user):
    assert hasattr(owner, name), f"{owner.__module__}.{owner.__name__}.{name} is gone from this Lightning; {user} relies on it"


def test_private_instance_attributes_still_exist(tmp_path):
    """Attributes set in ``__init__`` rather than declared on the class."""
    from pytorch_lightning import Trainer

    checkpoint = ModelCheckpoint(dirpath=tmp_path)
    assert hasattr(checkpoint, "_last_global_step_saved"), "ModelCheckpoint._last_global_step_saved is gone; callbacks.RunCheckpoint relies on it"
    fit_loop = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False).fit_loop
    for name in ("_combined_loader_states_to_load", "_data_fetcher"):
        assert hasattr(fit_loop, name), f"_FitLoop.{name} is gone; callbacks.ExactResume relies on it"
    parser = ArgumentParser()
    parser.add_argument("--x", type=int)
    assert hasattr(parser, "_actions"), "jsonargparse's ArgumentParser._actions is gone; cli.parsing relies on it"
    action = next(a for a in parser._actions if a.dest == "x")
    assert hasattr(action, "_typehint"), "jsonargparse's action._typehint is gone; cli.lightning.ints_first relies on it"
