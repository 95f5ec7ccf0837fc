"""The pretrained checkpoints that ship inside the package (``ssl_lightning/checkpoints/``, package
data, so an installed wheel has them): encoder-only files, found by name and checked against its
``manifest.json`` (the sha256 of every shipped file) before loading.

    load_encoder("simclr-fashion-mnist")   # ssl_lightning.load_encoder resolves shipped names
    shipped_checkpoints()                  # the names that ship
    ssl-lightning checkpoints              # the same, with each one's headline accuracy

``scripts/train_release.py`` writes them (``checkpoint.export_encoder``, ``write_manifest``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ssl_lightning.errors import CheckpointError

SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"  # read only: runs write to ./checkpoints of the working directory
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    """The manifest's ``checkpoints`` entry: {name: {"weights", "method", "headline", "files": {path: sha256}}},
    with "selection" (``run_selection`` of the run's last checkpoint, which the weights are) where recorded."""
    path = (directory or SHIPPED_DIR) / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text())["checkpoints"]


def shipped_checkpoints() -> list[str]:
    """The names of the checkpoints that ship, for ``load_encoder(name)``."""
    return sorted(read_manifest())


def verify(name: str, directory: Path | None = None, files: list[str] | None = None) -> None:
    """Raises ``CheckpointError`` unless the shipped files of ``name`` (default: all) match the manifest."""
    directory = directory or SHIPPED_DIR
    entry = read_manifest(directory)[name]
    for relative in files or list(entry["files"]):
        path = directory / relative
        if not path.is_file():
            raise CheckpointError(f"shipped checkpoint {name!r}: {path} is missing; restore it with `git checkout -- {path}` or reinstall ssl-lightning")
        if sha256(path) != entry["files"][relative]:
            raise CheckpointError(
                f"shipped checkpoint {name!r}: {path} does not match its sha256 in {directory / MANIFEST} (changed or damaged); "
                f"restore it with `git checkout -- {path}` or reinstall ssl-lightning"
            )


def resolve(source: str | Path) -> Path:
    """The file behind ``source``: an existing path as it is, else a shipped name, whose weights are
    checked against the manifest first."""
    path = Path(source)
    if path.is_file():
        return path
    entry = read_manifest().get(str(source))
    if entry is None:
        names = ", ".join(shipped_checkpoints()) or "none"
        raise CheckpointError(f"checkpoint not found: {source} is neither a file nor a shipped checkpoint (shipped: {names})")
    verify(str(source), files=[entry["weights"]])
    return SHIPPED_DIR / entry["weights"]


def run_selection(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What chose the best checkpoint of the run that wrote ``checkpoint`` (a training checkpoint,
    as ``read_checkpoint`` returns it), from the ``ModelCheckpoint`` state saved in it:
    {"monitor": metric name, "best_score": its best value, "best_checkpoint": that file's name}."""
    state = next((value for key, value in checkpoint.get("callbacks", {}).items() if "monitor" in value and "best_model_score" in value), None)
    if state is None or state["best_model_score"] is None:
        raise CheckpointError("the checkpoint holds no ModelCheckpoint state with a best monitored value; validate before packaging it")
    return {"monitor": state["monitor"], "best_score": round(float(state["best_model_score"]), 4),
            "best_checkpoint": Path(state["best_model_path"]).name}


def write_manifest(entries: dict[str, dict[str, Any]], directory: Path) -> None:
    """Adds or replaces ``entries`` ({name: {"weights", "method", "headline", "selection", "files": [paths]}}) in
    the manifest of ``directory`` (no default: nothing writes into an installed package), with the
    sha256 of each file (paths relative to ``directory``)."""
    manifest = read_manifest(directory)
    for name, entry in entries.items():
        manifest[name] = {**entry, "files": {relative: sha256(directory / relative) for relative in sorted(entry["files"])}}
    (directory / MANIFEST).write_text(json.dumps({"checkpoints": dict(sorted(manifest.items()))}, indent=2) + "\n")


def describe(directory: Path | None = None) -> str:
    """``ssl-lightning checkpoints``: a table of the shipped checkpoints and their headline test accuracies."""
    manifest = read_manifest(directory)
    if not manifest:
        return f"no shipped checkpoints in {directory or SHIPPED_DIR}"
    columns = list(next(iter(manifest.values()))["headline"])
    rows = [["name", "method", "encoder", *columns, "run's best by"]]
    for name, entry in manifest.items():
        selection = entry.get("selection")
        best = f"{selection['monitor']} {selection['best_score']:.4f}" if selection else "not recorded"
        rows.append([name, entry["method"], entry["encoder"], *(f"{100 * entry['headline'][c]:.1f}%" for c in columns), best])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    where = directory or SHIPPED_DIR
    return "\n".join([*lines, "", f"test accuracy on Fashion-MNIST; model cards: {where}/<name>.md; load with ssl_lightning.load_encoder(name)",
                      "the weights are each run's last checkpoint; \"run's best by\": the metric (and its best value) that chose "
                      "the run's best-* checkpoint, which does not ship"])


def main(args: list[str]) -> None:
    """``ssl-lightning checkpoints``."""
    from ssl_lightning.cli.parsing import argument_parser, parse

    parse(argument_parser("ssl-lightning checkpoints", description=describe.__doc__.split(": ", 1)[1]), args)
    print(describe())
