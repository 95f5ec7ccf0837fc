"""Callbacks: what makes training visible (TensorBoard, the progress bar), and what makes a run resumable."""

from __future__ import annotations

import random
import re
import signal
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid

from ssl_lightning.augment import describe_view
from ssl_lightning.data.labelled import is_labelled
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.features import extract_features
from ssl_lightning.evaluation.online import KNN_METRIC, PROBE_METRIC, OnlineEvaluation
from ssl_lightning.methods.base import ViewBatch

AUTO_MONITOR = "auto"  # RunCheckpoint's monitor chosen by selection_metric


class LogViewPairs(Callback):
    """Logs a grid of the augmented views (image n's views side by side, each made by its own
    view pipeline: view 1, view 2, ...) at the first validation, so one can see what the network is
    asked to match; the text ``views/configs`` says what sets each view apart. Views smaller than
    the first (multi-crop) are shown enlarged to its side.

    Args:
        num_pairs: how many images' views to show.
    """

    def __init__(self, num_pairs: int = 16) -> None:
        self.num_pairs = num_pairs
        self._done = False

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # Only pretraining methods have views to show (the supervised baseline validates on plain images).
        if self._done or batch_idx != 0 or not isinstance(trainer.logger, TensorBoardLogger) or not isinstance(batch, ViewBatch):
            return
        side = batch.views[0].shape[-1]
        shown = [F.interpolate(v[: self.num_pairs].float(), size=(side, side), mode="nearest") for v in batch.views]
        per_image = torch.stack(shown, dim=1).flatten(0, 1)  # (n * views, C, S, S): image 1's views, image 2's, ...
        columns = len(shown) * max(1, 8 // len(shown))  # whole images per grid row
        grid = make_grid(per_image.detach().cpu(), nrow=columns, padding=2, pad_value=1.0)
        trainer.logger.experiment.add_image("views/pairs", grid, global_step=trainer.global_step)
        legend = " | ".join(f"view {v + 1}: {describe_view(config)}" for v, config in enumerate(pl_module.view_configs))
        trainer.logger.experiment.add_text("views/configs", legend, global_step=trainer.global_step)
        self._done = True


class EmbeddingProjector(Callback):
    """At the end of training, logs the encoder features of the first ``num_images`` validation
    images to TensorBoard's Projector (PCA, t-SNE, UMAP in the browser), with the images as
    sprites and, where the data has labels, their class names as metadata.

    Args:
        num_images: how many validation images to embed (0: none).
    """

    def __init__(self, num_images: int = 1000) -> None:
        if num_images < 0:
            raise ConfigError(f"projector num_images must be >= 0, got {num_images}")
        self.num_images = num_images

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data = getattr(trainer, "datamodule", None)
        val_set = getattr(data, "val_set", None)  # ssl-lightning's data modules' validation images
        if not self.num_images or not trainer.is_global_zero or not isinstance(trainer.logger, TensorBoardLogger) or val_set is None:
            return
        images, labels = data.take(val_set, self.num_images)
        features = extract_features(pl_module.encoder, images, batch_size=256, device=pl_module.device, desc="projector")  # (N, D)
        metadata = data.class_names(labels) if is_labelled(data) else None  # unlabelled: the points and their pictures
        trainer.logger.experiment.add_embedding(features, metadata=metadata, label_img=images.float() / 255,
                                                global_step=trainer.global_step, tag="val_features")


# The HParams tab's metric columns, the same in every run (a run leaves blank what it does not log),
# so runs of different methods line up in one table: the methods' validation metrics, the
# classifiers' accuracy, and online evaluation's.
HPARAMS_METRICS = ("val/loss", "val/acc", "val/acc_top1", "val/acc_top5", "val/acc_mean_pos", KNN_METRIC, PROBE_METRIC)


class HParamsSummary(Callback):
    """At the start of training, writes the run's method and hyperparameters (the logger's: the
    model's, the data's, the effective learning rate) to TensorBoard's HParams tab, with the
    metric columns ``HPARAMS_METRICS``, so runs can be compared in one table. TensorBoard fills
    each column with the last value of the scalar of that name: the run's latest validation, also
    for a run stopped early. (Lightning's ``log_hyperparams(params, metrics)`` would write each
    metric again, as a scalar point of its own.)"""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = trainer.logger
        if not isinstance(logger, TensorBoardLogger) or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        params = tensorboard_hparams({"method": type(pl_module).__name__, **logger.hparams})
        for summary in hparams(params, dict.fromkeys(HPARAMS_METRICS, 0.0)):  # the metrics' values are not written
            logger.experiment.file_writer.add_summary(summary)


def tensorboard_hparams(params: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``params`` as the HParams tab takes them: nested mappings and dataclasses flattened to
    ``outer/inner`` names, values other than numbers, booleans and strings as their text, names
    starting with ``_`` (LightningCLI's bookkeeping, ``_instantiator``) left out."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in params.items():
        if str(key).startswith("_"):
            continue
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, Mapping):
            flat.update(tensorboard_hparams(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar, showing the step metrics ``step_metrics`` as of the first step and
    the last logging step (every ``log_every_n_steps`` steps). Lightning reads metrics logged with
    ``prog_bar=True`` to the host at every step, and each read makes the host wait for the GPU to
    finish the step; so the methods leave their step metrics out of ``prog_bar`` and this bar reads
    them when the logger does.

    Args:
        step_metrics: names of logged step metrics to show, where the method logs them.
        refresh_rate: as Lightning's (steps between redraws).
    """

    def __init__(self, step_metrics: tuple[str, ...] = ("train/loss", "train/acc_top5"), refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.step_metrics = step_metrics
        self._latest: dict[str, float] = {}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0 or trainer.global_step == 1 or trainer.fast_dev_run:
            logged = trainer.callback_metrics
            self._latest = {name: float(logged[name]) for name in self.step_metrics if name in logged}
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | str | float]:
        return {**super().get_metrics(trainer, pl_module), **self._latest}


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
            saved = self._last_global_step_saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = saved  # this save must not stop a top-k save at the same step
        if self._stop_signal:
            print(f"ssl-lightning: saved {self.last_model_path} at step {trainer.global_step}; continue with the same "
                  "command and --ckpt_path last", file=sys.stderr)
            raise KeyboardInterrupt  # Lightning's graceful shutdown: on_exception hooks, loggers closed, exit 1

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_handlers()
        super().teardown(trainer, pl_module, stage)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)

    def _refresh_last(self, trainer: Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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


class ExactResume(Callback):
    """Restores what Lightning's own resume leaves out, so that a resumed run goes on exactly as a
    run that was never interrupted:

    - the random generators of every process (Python, NumPy, torch on CPU and CUDA), saved in each
      checkpoint: the resumed run draws the same views (and MoCo the same key shuffles);
    - the train loader's position: Lightning 2.6 drops a stateful loader's saved state when
      ``estimated_stepping_batches`` was read before the restore, as our schedules do
      (Lightning issue #20550); it is loaded here, and the loader iterated afresh from it.
    """

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = random_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank has its own
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict.get("per_rank")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        fit_loop = trainer.fit_loop
        if fit_loop._combined_loader_states_to_load and fit_loop._data_fetcher is not None:  # #20550
            fit_loop._load_combined_loader_states()
            iter(fit_loop._data_fetcher)  # the iterator made before the restore started at batch 0
        states, self._to_restore = self._to_restore, None
        if not states:
            return
        if len(states) != trainer.world_size:
            warnings.warn(f"the checkpoint holds random states of {len(states)} process(es), this run has "
                          f"{trainer.world_size}: the random draws start afresh", stacklevel=2)
            return
        set_random_states(states[trainer.global_rank])


def random_states() -> dict[str, Any]:
    """The generators' states as plain Python values (bytes, ints): checkpoints stay readable with
    ``torch.load(weights_only=True)``, and ``all_gather_object`` need not pickle tensors."""
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (name, key.tobytes(), pos, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [state.numpy().tobytes() for state in torch.cuda.get_rng_state_all()]
    return states


def set_random_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, key, pos, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.frombuffer(key, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(_byte_tensor(states["torch"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_byte_tensor(state) for state in states["cuda"]])


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)
