"""Which checkpoints a run keeps: ``last.ckpt`` always current (also at a stop signal), and the
best by a metric chosen from the run's data."""

from __future__ import annotations

import re
import signal
import sys
import threading
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.online import KNN_METRIC, OnlineEvaluation
from ssl_lightning.lightning_internals import save_last_checkpoint, saves_on_train_epoch_end, skips_saving

AUTO_MONITOR = "auto"  # RunCheckpoint's monitor chosen by selection_metric


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the latest state, refreshed every
    ``save_last_every_n_steps`` optimizer steps too, so a killed run loses at most that many.

    Ctrl-C (SIGINT) or SIGTERM (what SLURM sends before a kill) during training stops the run at the
    end of the current training step, with ``last.ckpt`` written there: it resumes as if never
    stopped. A second signal stops at once (Lightning's KeyboardInterrupt), keeping the last save.

    Lightning 2.6 refreshes ``last.ckpt`` only when a top-k checkpoint is saved at the same step
    (so it goes stale once the monitored metric stops improving), and writes it at the end of
    training even under ``fast_dev_run``. Both are corrected here.
    (The write itself is the trainer's checkpoint IO; the CLI uses ``AtomicCheckpointIO``, so a
    kill during a save leaves the previous ``last.ckpt`` whole.)

    ``monitor="auto"`` (the CLI's default) chooses the metric once the run's data is known
    (``selection_metric``): ``val/knn_acc`` (mode max) where online evaluation logs it, which is
    the same measure for every method; otherwise ``val/loss`` (mode min). The chosen metric's
    value is appended to the file name (``best-epoch=3-step=800-val_knn_acc=0.8123.ckpt``: the
    names in file names have ``_`` for ``/``, ``with_metric_names``), and the checkpoints hold it
    as ``ModelCheckpoint``'s state (``monitor``, ``best_model_score``). A metric named in
    ``monitor`` is used as it is, with ``mode``.

    Args:
        save_last_every_n_steps: refresh ``last.ckpt`` after every this many training steps
            (None: only at validation / epoch ends).
        **kwargs: ``ModelCheckpoint``'s arguments.
    """

    def __init__(self, *args: Any, save_last_every_n_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if save_last_every_n_steps is not None and save_last_every_n_steps < 1:
            raise ConfigError(f"save_last_every_n_steps must be >= 1 or null, got {save_last_every_n_steps}")
        self.save_last_every_n_steps = save_last_every_n_steps
        self._stop_signal: str | None = None  # the signal that asked training to stop, once one has
        self._previous_handlers: dict[int, Any] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        main_thread = threading.current_thread() is threading.main_thread()  # where Python's signal handlers run
        if self.save_last and not trainer.fast_dev_run and main_thread:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous_handlers[signum] = signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: Any) -> None:
        self._restore_handlers()  # the next signal acts as it would without this callback
        self._stop_signal = signal.Signals(signum).name
        print(f"ssl-lightning: {self._stop_signal}: stopping at the end of this training step, with last.ckpt saved "
              "(send it again to stop at once)", file=sys.stderr)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.monitor == AUTO_MONITOR:
            self.monitor, self.mode = selection_metric(trainer)
            self.kth_value = torch.tensor(torch.inf if self.mode == "min" else -torch.inf)  # as ModelCheckpoint starts
            if self.monitor not in (self.filename or ""):
                self.filename = f"{self.filename or '{epoch}-{step}'}-{{{self.monitor}:.4f}}"
        if self.auto_insert_metric_name:  # done here, once, so that a "/" in a metric's name makes no folder
            self.filename, self.auto_insert_metric_name = with_metric_names(self.filename or "{epoch}-{step}"), False
        super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        every = self.save_last_every_n_steps
        due = every and trainer.global_step % every == 0
        if (due or self._stop_signal) and self.save_last and not trainer.fast_dev_run:
            save_last_checkpoint(self, trainer)
        if self._stop_signal:
            print(f"ssl-lightning: saved {self.last_model_path} at step {trainer.global_step}; continue with the same "
                  "command and --ckpt_path last", file=sys.stderr)
            raise KeyboardInterrupt  # Lightning's graceful shutdown: on_exception hooks, loggers closed, exit 1

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_handlers()
        super().teardown(trainer, pl_module, stage)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not saves_on_train_epoch_end(self, trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if saves_on_train_epoch_end(self, trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def _refresh_last(self, trainer: Trainer) -> None:
        if self.save_last and not skips_saving(self, trainer):
            save_last_checkpoint(self, trainer)


def with_metric_names(filename: str) -> str:
    """``ModelCheckpoint``'s ``auto_insert_metric_name`` done beforehand, with a metric's ``/``
    written ``_`` (Lightning would write it as it is, a folder in the path):
    ``best-{epoch}-{val/knn_acc:.4f}`` -> ``best-epoch={epoch}-val_knn_acc={val/knn_acc:.4f}``."""
    return re.sub(r"\{([^:}]+)", lambda group: f"{group[1].replace('/', '_')}={{{group[1]}", filename)


def selection_metric(trainer: Trainer) -> tuple[str, str]:
    """(metric, mode) that ``RunCheckpoint(monitor="auto")`` chooses the best checkpoint by:
    ``val/knn_acc`` where an ``OnlineEvaluation`` callback will log it (labelled data, or its
    ``eval_data``), else ``val/loss``. The ranking metrics (``val/acc_top5``) are not compared:
    their candidates are 2N-1 views for some methods and N for others."""
    online = next((c for c in trainer.callbacks if isinstance(c, OnlineEvaluation)), None)
    if online is not None and online.evaluates(trainer.datamodule):
        return KNN_METRIC, "max"
    return "val/loss", "min"
