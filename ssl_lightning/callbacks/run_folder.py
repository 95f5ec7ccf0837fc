"""A run's folder, as the user sees it: named once the run has set up, and gone if the run fails
before its first step (a config error found at setup, a queue that does not fit the batch or data
the model cannot take, would otherwise leave a ``version_N`` with a config and an empty events
file, which looks like a run)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer

# What a new run writes into its folder before its first step.
_STARTUP_FILES = ("config.yaml", "hparams.yaml", "events.out.tfevents.*")


class AnnounceRunFolder(Callback):
    """Prints where the run's logs, config and checkpoints go once setup has passed, so that a run
    failing at setup does not name a folder that ``RemoveUnstartedRun`` then removes."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.logger is None or trainer.fast_dev_run:
            return
        log_dir = trainer.log_dir  # on every process: under DDP it is a broadcast from process 0
        if trainer.is_global_zero:
            print(f"ssl-lightning: this run's logs, config and checkpoints go to {log_dir}", file=sys.stderr)


class RemoveUnstartedRun(Callback):
    """On an exception before the first training step of a new run (not a resumed one), removes
    the run's log folder if it holds nothing but what a start writes (``_STARTUP_FILES``)."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.global_step > 0 or trainer.ckpt_path is not None or not trainer.is_global_zero or trainer.logger is None:
            return
        folder = Path(trainer.log_dir or "")
        if not folder.is_dir() or folder.resolve() == Path.cwd().resolve():
            return
        files = list(folder.rglob("*"))
        if all(path.is_file() and any(path.match(pattern) for pattern in _STARTUP_FILES) for path in files):
            shutil.rmtree(folder)
            for parent in (folder.parent, folder.parent.parent):  # <save_dir>/<name>, then <save_dir>, where now empty
                if parent.resolve() == Path.cwd().resolve() or any(parent.iterdir()):
                    break
                parent.rmdir()
