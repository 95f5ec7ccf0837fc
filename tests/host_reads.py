"""A callback for the per-step synchronisation test, loaded by the CLI (``--trainer.callbacks+=``).

From the start of step ``start`` to the start of step ``stop`` it records every read of a tensor's
values by the host (``.item()``, ``bool(t)``, ``.tolist()``, ...), with the code that made it. On a
GPU each such read of a device tensor waits for the queued work; on this CPU-only machine the reads
themselves are the evidence. Not recorded, as they read tensors that stay on the host on a GPU too:
reads inside kornia (it draws its random parameters on the host and reads those, kornia 0.9
color_jiggle.py) and torch.optim's ``_get_value`` (the optimizers' step counters stay on the host
unless ``capturable`` or ``fused``)."""

from __future__ import annotations

import traceback
from collections import Counter

import torch
from pytorch_lightning import Callback
from torch.overrides import TorchFunctionMode

HOST_READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.__float__,
              torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu}
SEEN: Counter[str] = Counter()  # "function at file:line" -> number of reads


class _RecordReads(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            frames = [f for f in traceback.extract_stack()[:-1] if "torch/overrides" not in f.filename]
            caller = frames[-1]
            if "/kornia/" not in caller.filename and caller.name != "_get_value":
                SEEN[f"{func.__name__} at {caller.filename.split('site-packages/')[-1]}:{caller.lineno}"] += 1
        return func(*args, **(kwargs or {}))


class RecordHostReads(Callback):
    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self.mode: _RecordReads | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.start:
            SEEN.clear()
            self.mode = _RecordReads()
            self.mode.__enter__()
        elif trainer.global_step == self.stop:
            self._stop()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop()  # also where the run ended inside the window

    def _stop(self) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None
