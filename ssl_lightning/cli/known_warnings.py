"""Warnings that say nothing to a user of ssl-lightning, silenced by the command (never at import:
a library user's own warnings filters stay as they are)."""

from __future__ import annotations

import os
import warnings


def silence_known_warnings() -> None:
    """Filters the known warnings for the rest of the process (the ``ssl-lightning`` command calls it once)."""
    # Our methods make their views in on_after_batch_transfer by design, and Lightning 2.6 uses a
    # pytree API that torch deprecated: both warnings are noise to a user.
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer` in `LightningModule`")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # RunCheckpoint refuses a folder with another run's checkpoints; a resumed run's folder is fine.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata 0.11 under torch >= 2.10
    warnings.filterwarnings("ignore", message="Found .* module.* in eval mode at the start of training")  # frozen encoders, on purpose
    # The model summary's size estimate under bf16-mixed (the default on bf16 hardware): it falls back to 32 bits, as it should.
    warnings.filterwarnings("ignore", message="Precision bf16-mixed is not supported by the model summary")
    # litdata's StreamingDataset (ShardedDataModule) knows its length; Lightning warns about any that does.
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
    # Lightning 2.6 calls jsonargparse APIs that 4.49+ deprecates; jsonargparse's own switch.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
