"""Callbacks for the resume tests, loaded by the CLI (``--trainer.callbacks+=``): one stops the run
at a chosen step and waits there for the test's SIGKILL, one signals the run at a chosen step, one
records what each training step was given."""

import io
import os
import time
from pathlib import Path

import torch
from pytorch_lightning import Callback


class WaitToBeKilled(Callback):
    """At training step ``step``, touches ``marker`` and sleeps. With ``in_save``, it sleeps inside
    that step's checkpoint save instead, half of the file written (``save_last_every_n_steps=1``
    makes a save at every step; checkpoint callbacks run after this one)."""

    def __init__(self, step: int, marker: str, in_save: bool = False) -> None:
        self.step = step
        self.marker = Path(marker)
        self.in_save = in_save

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if not self.in_save:
            self._wait()
        real_save = torch.save

        def half_save(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            self._wait()

        torch.save = half_save

    def _wait(self) -> None:
        self.marker.touch()
        time.sleep(600)


class SignalAt(Callback):
    """Sends this process ``signum`` (SIGINT: what Ctrl-C sends; SIGTERM: what SLURM sends before a
    kill) at the end of training step ``step``, as a user would mid-run."""

    def __init__(self, step: int, signum: int) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class RecordBatches(Callback):
    """Appends a line per training step to ``path``: the step, the epoch, the batch's index, and
    sums of its images and of its first views (which images, and which random draws)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with self.path.open("a") as f:
            f.write(f"{trainer.global_step} {trainer.current_epoch} {batch_idx} {batch.images.sum().item():.6f} "
                    f"{batch.views[0].sum().item():.6f}\n")
