"""Every private member of Lightning and jsonargparse that ssl-lightning relies on, behind named
functions and one CLI base class: the only module that touches them. ``PRIVATE_MEMBERS`` lists them
for ``tests/test_lightning_private.py``, which names the one an upgrade renamed or removed.

Each is here because no public API does the job (Lightning 2.6, jsonargparse 4.53):
- ``ModelCheckpoint`` writes ``last.ckpt`` only with a top-k save (``RunCheckpoint`` refreshes it
  at any step and at a stop signal);
- the fit loop drops a stateful train loader's saved position when ``estimated_stepping_batches``
  was read before the restore (Lightning issue #20550; ``ExactResume`` loads it), and a run that
  stopped inside an epoch (``max_steps``, ``max_time``) records the epoch as processed, so that a
  resumed run would skip the epoch's other batches (``ExactResume`` records it as unfinished,
  through the checkpoint's loop state);
- ``LightningCLI`` silently takes a ``--ckpt_path`` checkpoint's hyperparameters, has no hook for
  a subcommand's own arguments, and no public parser per subcommand;
- jsonargparse exposes neither a parser's actions nor an action's type.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

# (owner, member): the class, or what an instance of it is made by ("instance" rows).
PRIVATE_MEMBERS = [
    ("pytorch_lightning.callbacks.ModelCheckpoint", "_save_last_checkpoint"),
    ("pytorch_lightning.callbacks.ModelCheckpoint", "_monitor_candidates"),
    ("pytorch_lightning.callbacks.ModelCheckpoint", "_should_save_on_train_epoch_end"),
    ("pytorch_lightning.callbacks.ModelCheckpoint", "_should_skip_saving_checkpoint"),
    ("pytorch_lightning.callbacks.ModelCheckpoint instance", "_last_global_step_saved"),
    ("pytorch_lightning.loops._FitLoop", "_load_combined_loader_states"),
    ("pytorch_lightning.loops._FitLoop instance", "_combined_loader_states_to_load"),
    ("pytorch_lightning.loops._FitLoop instance", "_data_fetcher"),
    ("pytorch_lightning.cli.LightningCLI", "_parse_ckpt_path"),
    ("pytorch_lightning.cli.LightningCLI", "_prepare_subcommand_parser"),
    ("pytorch_lightning.cli.LightningCLI", "_parser"),
    ("jsonargparse.ArgumentParser instance", "_actions"),
    ("jsonargparse action instance", "_typehint"),
    ("argparse subcommands action instance", "_name_parser_map"),
]


def save_last_checkpoint(callback: ModelCheckpoint, trainer: Trainer) -> None:
    """Writes ``callback``'s ``last.ckpt`` now, without counting as a save at this step (a top-k
    save at the same step still happens)."""
    saved = callback._last_global_step_saved
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
    callback._last_global_step_saved = saved


def saves_on_train_epoch_end(callback: ModelCheckpoint, trainer: Trainer) -> bool:
    """Whether ``callback`` saves at the end of the training epoch (no validation) rather than
    after validation."""
    return callback._should_save_on_train_epoch_end(trainer)


def skips_saving(callback: ModelCheckpoint, trainer: Trainer) -> bool:
    """Whether ``callback`` saves nothing at this point (sanity check, fast_dev_run, a step saved already)."""
    return callback._should_skip_saving_checkpoint(trainer)


def restore_train_loader_position(trainer: Trainer) -> None:
    """Loads the train loader's position saved in the checkpoint being resumed, where Lightning
    dropped it (issue #20550), and restarts the loader's iterator from there."""
    fit_loop = trainer.fit_loop
    if fit_loop._combined_loader_states_to_load and fit_loop._data_fetcher is not None:
        fit_loop._load_combined_loader_states()
        iter(fit_loop._data_fetcher)  # the iterator made before the restore started at batch 0


def stopped_inside_epoch(trainer: Trainer) -> bool:
    """Whether Lightning ran the end of an epoch that training stopped inside (``max_steps``,
    ``max_time``): the fit loop counts the epoch as processed, but the epoch loop has batches left."""
    batches = trainer.fit_loop.epoch_loop.batch_progress
    epoch = trainer.fit_loop.epoch_progress.current
    at_epoch_end = batches.is_last_batch or batches.current.ready == trainer.num_training_batches
    return trainer.training and epoch.started > 0 and epoch.processed == epoch.started and not at_epoch_end


def mark_cut_epoch_unfinished(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """Where ``stopped_inside_epoch``, rewrites the checkpoint's fit-loop progress to what it is
    mid-epoch (the epoch started, not processed), so that resuming goes on with the epoch's next
    batch instead of the next epoch."""
    if not stopped_inside_epoch(trainer):
        return
    progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    for tracker in ("total", "current"):
        progress[tracker]["processed"] = progress[tracker]["completed"] = progress[tracker]["started"] - 1
    checkpoint["epoch"] = progress["current"]["completed"]


def parser_actions(parser: Any) -> list[Any]:
    """A jsonargparse (or argparse) parser's actions (its options)."""
    return parser._actions


def subcommand_parsers(action: Any) -> list[Any]:
    """The parsers of a subcommands action (argparse's), none for any other action."""
    return list(getattr(action, "_name_parser_map", {}).values())


def action_type(action: Any) -> Any:
    """The type a jsonargparse action parses to (None for an untyped one)."""
    return getattr(action, "_typehint", None)


def set_action_type(action: Any, hint: Any) -> None:
    action._typehint = hint


class HookedLightningCLI(LightningCLI):
    """``LightningCLI`` with its private steps as overridable hooks:

    - ``checkpoint_decides_model()``: False keeps the config's model arguments when ``--ckpt_path``
      is given (Lightning replaces them by the checkpoint's);
    - ``add_subcommand_arguments(parser, subcommand)``: options of one subcommand only;
    - ``subcommand_parser(subcommand)``: the parser of a subcommand, e.g. to dump its config.
    """

    def checkpoint_decides_model(self) -> bool:
        return True

    def add_subcommand_arguments(self, parser: LightningArgumentParser, subcommand: str) -> None:
        """Adds options to ``subcommand``'s parser; none by default."""

    def subcommand_parser(self, subcommand: str | None) -> LightningArgumentParser:
        return self._parser(subcommand)

    def _parse_ckpt_path(self) -> None:
        if self.checkpoint_decides_model():
            super()._parse_ckpt_path()

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        self.add_subcommand_arguments(parser, subcommand)
        return parser
