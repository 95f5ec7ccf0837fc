"""litdata's ``StreamingDataLoader``, made to resume one epoch only.

litdata forgets a position restored from a checkpoint (its ``restore`` flag) only when an epoch's
iteration runs to its end. Lightning stops after ``len(loader)`` batches without asking for one
more, so every later epoch would replay the rest of the restored one (litdata issues #760 and #770
are the same flaw in its ParallelStreamingDataset). Imported only where shards are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litdata import StreamingDataLoader


class ResumableStreamingLoader(StreamingDataLoader):
    """A ``StreamingDataLoader`` whose restored position serves the first epoch iterated after
    ``load_state_dict`` only; every other epoch starts afresh."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._restored_epoch_next = False

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._restored_epoch_next = self.restore  # False where the checkpoint was at an epoch's end

    def __iter__(self) -> Iterator[Any]:
        if not self._restored_epoch_next:
            self.restore = False  # the restored epoch is over, though it was not iterated to its end
        self._restored_epoch_next = False
        yield from super().__iter__()
