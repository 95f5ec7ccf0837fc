"""A run that fails before its first step leaves no folder behind: a config error found at setup
(a queue that does not fit the batch, data the model cannot take) would otherwise leave a
``version_N`` with a config and an empty events file, which looks like a run."""

from __future__ import annotations

import shutil
from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer

# What a new run writes into its folder before its first step.
_STARTUP_FILES = ("config.yaml", "hparams.yaml", "events.out.tfevents.*")


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
