"""Where ``evaluate``, ``transfer`` and ``visualize`` write. By default a new ``results/<command>/run_N/``
under the working directory, so that no command replaces earlier results (the tables and pictures
README shows among them); an explicit ``--output_dir`` that already holds files is refused unless
``--overwrite``. Every folder is checked before any work starts, and created only when written to.
"""

from __future__ import annotations

import os
from pathlib import Path

from ssl_lightning.errors import ConfigError

RESULTS = Path("results")
OVERWRITE_HELP = "write into an --output_dir that holds files already"  # every command's --overwrite


def numbered_folders(folder: Path, prefix: str) -> list[tuple[int, Path]]:
    """(N, path) of every ``folder/<prefix>N`` (``run_3``, Lightning's ``version_3``), the highest N first."""
    numbered = ((p.name[len(prefix):], p) for p in Path(folder).glob(f"{prefix}*"))
    return sorted(((int(n), p) for n, p in numbered if n.isdigit()), key=lambda item: item[0], reverse=True)


def next_run_folder(folder: Path) -> Path:
    """``folder/run_N`` with N one above the highest taken (run_0 in a new folder)."""
    taken = numbered_folders(folder, "run_")
    return Path(folder) / f"run_{taken[0][0] + 1 if taken else 0}"


def output_folder(command: str, output_dir: Path | None, overwrite: bool = False) -> Path:
    """The folder ``command`` writes its results to: ``output_dir``, else a new ``results/<command>/run_N``;
    checked (not created) here."""
    if output_dir is None:
        return check_can_create(next_run_folder(RESULTS / command), "--output_dir")
    folder = Path(output_dir)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ConfigError(f"{folder} already holds results; choose another --output_dir (or none, for a new "
                          f"{RESULTS / command}/run_N), or add --overwrite to replace them")
    return check_can_create(folder, "--output_dir")


def check_can_create(folder: Path, option: str) -> Path:
    """``folder``, where it is a folder one can write to or could create; otherwise a one-line
    ``ConfigError`` that names ``option``."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot write to {folder}: {existing} is a file, not a folder; choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to {folder}: {existing} is not writable; choose another {option}")
    return folder
