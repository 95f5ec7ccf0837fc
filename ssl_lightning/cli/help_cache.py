"""``ssl-lightning SUBCOMMAND --help`` from a stored copy: building the text imports torch and
Lightning (seconds), printing the copy does not.

A copy lives in ``$XDG_CACHE_HOME/ssl-lightning/help`` (default ``~/.cache/ssl-lightning/help``)
under a fingerprint of everything the text depends on: the package's version, location and source
files (the sizes and mtimes of its .py and .yaml files), every installed distribution's version,
Python's version, and the terminal width that argparse wraps to. A cache folder that cannot be
read or written costs only time: the help is built as without one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import ssl_lightning

PACKAGE = Path(ssl_lightning.__file__).resolve().parent
KEEP_FINGERPRINTS = 4  # folders kept side by side: a few checkouts or environments, each with its own


def print_help(topic: list[str], build: Callable[[], object]) -> None:
    """Prints the help of ``topic`` (``["fit"]``, ``["visualize", "views"]``) and exits 0: the
    stored copy, else what ``build`` prints (it prints the help and exits), stored for next time."""
    entry = cache_entry(topic)
    text = _read(entry)
    if text is None:
        text = _printed_by(build)
        _store(entry, text)
    sys.stdout.write(text)
    sys.exit(0)


def cache_entry(topic: list[str]) -> Path | None:
    """The file that holds the help of ``topic`` as things are now; None where the fingerprint
    cannot be taken (a source file gone while it is read)."""
    try:
        folder = cache_folder() / fingerprint()
    except OSError:
        return None
    return folder / f"{'-'.join(topic)}-{shutil.get_terminal_size().columns}.txt"


def cache_folder() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(root):  # unset, or relative, which the XDG specification says to ignore
        root = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "ssl-lightning" / "help"


def fingerprint() -> str:
    """A hash of all that the help texts depend on but the terminal width."""
    digest = hashlib.sha256()
    for part in (ssl_lightning.__version__, str(PACKAGE), sys.version, *installed_distributions(), *_source_stats()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def installed_distributions() -> list[str]:
    """The names of the metadata folders in the environment's site-packages (``torch-2.5.1.dist-info``):
    every installed distribution with its version, from a directory listing, without reading
    metadata. Not every ``sys.path`` entry: ``python -c`` adds the working directory, and a
    source checkout's ``*.egg-info`` there would give each folder a fingerprint of its own."""
    names = []
    for folder in {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}:
        with contextlib.suppress(OSError):  # a folder that is not there
            names += [name for name in os.listdir(folder) if name.endswith((".dist-info", ".egg-info"))]
    return sorted(names)


def _source_stats() -> list[str]:
    paths = sorted(path for pattern in ("*.py", "*.yaml") for path in PACKAGE.rglob(pattern))
    return [f"{path.relative_to(PACKAGE)} {path.stat().st_size} {path.stat().st_mtime_ns}" for path in paths]


def _read(entry: Path | None) -> str | None:
    try:
        return entry.read_text(encoding="utf-8") if entry else None
    except (OSError, UnicodeError):
        return None


def _printed_by(build: Callable[[], object]) -> str:
    """What ``build`` prints to stdout until it exits 0 (or returns). Where it ends otherwise, its
    output is printed as it would have been, and its exit or exception goes on."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            build()
    except BaseException as end:
        if isinstance(end, SystemExit) and end.code in (0, None):
            return buffer.getvalue()
        sys.stdout.write(buffer.getvalue())
        raise
    return buffer.getvalue()


def _store(entry: Path | None, text: str) -> None:
    """Writes ``entry`` whole or not at all (a renamed temporary file), then removes all but the
    newest fingerprints' folders; where the cache folder cannot be written, does nothing."""
    if entry is None:
        return
    partial = entry.with_name(f".{entry.name}.{os.getpid()}")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, entry)
        folders = sorted(entry.parents[1].iterdir(), key=lambda folder: folder.stat().st_mtime, reverse=True)
    except (OSError, UnicodeError):
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return
    for old in folders[KEEP_FINGERPRINTS:]:
        shutil.rmtree(old, ignore_errors=True)


def warm() -> None:
    """Builds and stores the help of every subcommand, in this one process (``make install``)."""
    from ssl_lightning.cli import help_topics, main

    for topic in help_topics():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main([*topic, "--help"])
