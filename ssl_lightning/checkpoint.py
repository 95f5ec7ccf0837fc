"""The checkpoint format, in one place: what our methods add to Lightning's checkpoints, what an
encoder-only checkpoint (the shipped format) holds, how both are read (one-line errors for a
missing, corrupt or truncated file, or one of another method or architecture), and how they are
written (atomically).

A checkpoint of ours is Lightning's dict plus ``ENCODER_CONFIG_KEY`` (the ``EncoderConfig`` as a
dict) and ``METHOD_KEY`` (the class name); the encoder's tensors are the ``state_dict`` entries
under ``ENCODER_PREFIX``. An encoder-only checkpoint has those three entries alone."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from ssl_lightning.errors import CheckpointError

ENCODER_CONFIG_KEY = "encoder_config"  # the encoder's config: what rebuilds it alone
METHOD_KEY = "method"  # the LightningModule's class name
ENCODER_PREFIX = "encoder."  # the key prefix of the encoder's tensors in state_dict


def add_encoder_entries(checkpoint: dict[str, Any], encoder_config: dict[str, Any], method: str) -> None:
    """What a method adds to the checkpoint Lightning writes (``EncoderMethod.on_save_checkpoint``)."""
    checkpoint[ENCODER_CONFIG_KEY] = encoder_config
    checkpoint[METHOD_KEY] = method


def encoder_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a checkpoint (full or encoder-only), named as in the ``Encoder``."""
    return {k[len(ENCODER_PREFIX):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(ENCODER_PREFIX)}


def export_encoder(checkpoint_path: Path, out: Path, half: bool = True) -> None:
    """Writes the encoder of a training checkpoint alone (no heads, optimizer or loop state), in
    float16 if ``half``, in the same layout, so ``load_encoder`` reads both."""
    checkpoint = read_checkpoint(checkpoint_path)
    state = {ENCODER_PREFIX + k: v.half() if half and v.is_floating_point() else v for k, v in encoder_state(checkpoint).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({ENCODER_CONFIG_KEY: checkpoint[ENCODER_CONFIG_KEY], METHOD_KEY: checkpoint.get(METHOD_KEY), "state_dict": state}, out)


def read_checkpoint(path: str | Path, trusted: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, read onto the CPU; it must be one written by an
    ssl-lightning method (or exported from one).

    By default the file is read with ``weights_only=True``: tensors and plain values only, since
    unpickling arbitrary objects can run arbitrary code. ``trusted=True`` lifts that, for files
    whose source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(err))
        if unsafe is None:
            raise _unreadable(path, err) from err
        raise CheckpointError(
            f"{path} holds a pickled Python object ({unsafe.group(1)}) and is refused: unpickling can run arbitrary code. "
            "If you trust its source, opt in with load_encoder(path, trusted=True) or read_checkpoint(path, trusted=True)"
        ) from err
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise _unreadable(path, err) from err
    if not isinstance(checkpoint, dict) or ENCODER_CONFIG_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an ssl-lightning checkpoint: it has no {ENCODER_CONFIG_KEY!r} entry")
    return checkpoint


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"cannot read checkpoint {path}: the file is corrupt, truncated or not a torch checkpoint ({type(err).__name__}); "
        "use another checkpoint of the run (e.g. best-*.ckpt next to it)"
    )


def check_compatible(checkpoint: dict[str, Any], module: nn.Module) -> None:
    """Raises ``CheckpointError`` unless ``checkpoint`` was written by ``module``'s method for the
    same architecture (the same parameter and buffer names and shapes)."""
    method, expected = checkpoint.get(METHOD_KEY), type(module).__name__
    if method is not None and method != expected:
        raise CheckpointError(f"the checkpoint was written by {method}, not {expected}; use the {method} config, or a {expected} checkpoint")
    saved = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    differences = [f"{k}: missing in the checkpoint" for k in ours.keys() - saved.keys()]
    differences += [f"{k}: not in this model" for k in saved.keys() - ours.keys()]
    differences += [f"{k}: {saved[k]} in the checkpoint, {ours[k]} here" for k in ours.keys() & saved.keys() if saved[k] != ours[k]]
    if differences:
        listed = "; ".join(sorted(differences)[:3]) + ("; ..." if len(differences) > 3 else "")
        encoder = checkpoint.get(ENCODER_CONFIG_KEY, {})
        raise CheckpointError(
            f"the checkpoint is for another architecture ({len(differences)} tensors differ: {listed}); "
            f"its encoder was {encoder}: set the model's arguments to those of the run that wrote it"
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint next to its target, syncs it to disk, then renames it over the target, so
    a process killed during a save leaves the previous file whole.

    Hand-written because Lightning 2.6 writes through a file in the system temp folder and moves it
    into place: where that folder is another filesystem (tmpfs, a cluster node's local disk) the
    move is a copy into the target, and a kill during the copy truncates ``last.ckpt``. Remote
    paths (``s3://`` ...) keep Lightning's way.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or "file" not in get_filesystem(path).protocol:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")  # a killed save's leftover is overwritten by the next
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)  # atomic on POSIX and Windows within one filesystem
        if os.name == "posix":  # the rename itself survives a power cut
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
