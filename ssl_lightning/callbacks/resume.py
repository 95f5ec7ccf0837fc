"""Exact resume: what a checkpoint must restore, beyond Lightning's own, for a resumed run to go on
as if never stopped."""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from ssl_lightning.lightning_internals import mark_cut_epoch_unfinished, restore_train_loader_position


class ExactResume(Callback):
    """Restores what Lightning's own resume leaves out, so that a resumed run goes on exactly as a
    run that was never interrupted:

    - the random generators of every process (Python, NumPy, torch on CPU and CUDA), saved in each
      checkpoint: the resumed run draws the same views (and MoCo the same key shuffles);
    - the train loader's position: Lightning 2.6 drops a stateful loader's saved state when
      ``estimated_stepping_batches`` was read before the restore, as our schedules do
      (Lightning issue #20550); it is loaded here, and the loader iterated afresh from it;
    - the epoch a run stopped inside (``--trainer.max_steps``, ``max_time``): Lightning records it
      as processed, and a resumed run would start the next epoch; its checkpoints record it as
      unfinished, so the resumed run goes on with its next batch.
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

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        mark_cut_epoch_unfinished(trainer, checkpoint)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict.get("per_rank")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        restore_train_loader_position(trainer)  # Lightning issue #20550
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
