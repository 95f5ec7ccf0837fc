"""The callbacks of every ``ssl-lightning fit`` run, one module per purpose: ``tensorboard`` (view
pairs, reconstructions, projector, HParams), ``progress`` (the progress bar), ``checkpointing``
(which checkpoints a run keeps), ``resume`` (exact resume) and ``run_folder`` (where a run's folder
is, and none for a run that never started)."""

from ssl_lightning.callbacks.checkpointing import AUTO_MONITOR, RunCheckpoint
from ssl_lightning.callbacks.progress import ProgressBar
from ssl_lightning.callbacks.resume import ExactResume
from ssl_lightning.callbacks.run_folder import AnnounceRunFolder, RemoveUnstartedRun
from ssl_lightning.callbacks.tensorboard import EmbeddingProjector, HParamsSummary, LogReconstructions, LogViewPairs

__all__ = ["AUTO_MONITOR", "AnnounceRunFolder", "EmbeddingProjector", "ExactResume", "HParamsSummary", "LogReconstructions", "LogViewPairs", "ProgressBar",
           "RemoveUnstartedRun", "RunCheckpoint"]
