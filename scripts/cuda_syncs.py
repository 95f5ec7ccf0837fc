"""A callback that finds host-device synchronisations on CUDA, loaded by the CLI
(``--trainer.callbacks+=cuda_syncs.CudaSyncWatch``; scripts/gpu_check.py step 3).

torch's sync debug mode makes the operations that wait for the GPU (``.item()``, a copy to the
host, ``nonzero``, a stream synchronisation...) give a warning; this callback turns
the mode on for a window of training steps and counts the warnings by the code that caused them.
The CPU counterpart, which records reads of tensor values, is tests/host_reads.py.
"""

from __future__ import annotations

import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch
from pytorch_lightning import Callback

SYNC_MESSAGE = "called a synchronizing CUDA operation"  # torch's warning under set_sync_debug_mode("warn")
REPO = Path(__file__).resolve().parents[1]


class CudaSyncWatch(Callback):
    """From the start of step ``start`` to the start of step ``stop``: torch's CUDA sync debug mode
    ("warn"), and every warning it gives counted by the code that caused it (``syncs``). On a CPU
    there is nothing to watch (``watching`` says so); tests/test_speed.py checks host reads there."""

    def __init__(self, start: int = 3, stop: int = 9) -> None:
        self.start, self.stop = start, stop
        self.syncs: Counter[str] = Counter()
        self.steps_watched = 0
        self.watching = ""
        self._catcher: warnings.catch_warnings | None = None
        self._cuda = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.start:
            self._begin(pl_module.device)
        elif trainer.global_step == self.stop:
            self._end()
        if self._catcher is not None:
            self.steps_watched += 1

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._end()  # also where the run ended inside the window

    def _begin(self, device: torch.device) -> None:
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.filterwarnings("always", message=f".*{SYNC_MESSAGE}")  # every occurrence, not once per place
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if SYNC_MESSAGE in str(message):
                self.syncs[sync_place(traceback.extract_stack()[:-1])] += 1
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        self._cuda = device.type == "cuda"
        if self._cuda:
            torch.cuda.set_sync_debug_mode("warn")
        self.watching = "torch.cuda.set_sync_debug_mode('warn')" if self._cuda else f"{device.type}: no CUDA syncs to watch"

    def _end(self) -> None:
        if self._catcher is None:
            return
        if self._cuda:
            torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        self._catcher = None


def sync_place(stack: traceback.StackSummary) -> str:
    """Where a sync came from: the innermost frame of the caller's code, and the innermost
    ssl_lightning frame under it where that is another one."""
    frames = [f for f in stack if not f.filename.endswith(("warnings.py", "cuda_syncs.py"))]
    ours = [f for f in frames if "ssl_lightning" in Path(f.filename).parts]

    def name(frame: traceback.FrameSummary) -> str:
        path = frame.filename.split("site-packages/")[-1].replace(str(REPO) + "/", "")
        return f"{path}:{frame.lineno} ({frame.name})"

    inner = name(frames[-1]) if frames else "?"
    return inner if not ours or ours[-1] is frames[-1] else f"{inner}, from {name(ours[-1])}"
