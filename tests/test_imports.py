"""Importing ssl-lightning changes no process-wide state: the warnings filters, the matplotlib
backend and the logging levels are as they were (a notebook keeps its inline plots and its own
warnings and log levels)."""

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: pytest's own warnings filters and the modules other tests imported
# would hide what an import changes. The libraries the package builds on are imported first, so
# the comparison sees only what ssl-lightning's own modules do.
PROBE = textwrap.dedent(
    """
    import importlib, logging, pkgutil, warnings
    import jsonargparse, kornia, litdata, matplotlib, matplotlib.pyplot, numpy, PIL, pytorch_lightning
    import seaborn, sklearn, tensorboard, torch, torchmetrics, torchvision, tqdm, yaml
    import ssl_lightning

    def state():
        levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
                  if isinstance(logger, logging.Logger)}
        return list(warnings.filters), matplotlib.rcParams._get("backend"), logging.root.level, levels

    filters, backend, root_level, levels = state()
    modules = [m.name for m in pkgutil.walk_packages(ssl_lightning.__path__, "ssl_lightning.")
               if not m.name.endswith("__main__")]  # __main__ runs the command line
    for name in modules:
        importlib.import_module(name)
    new_filters, new_backend, new_root_level, new_levels = state()
    added = [f for f in new_filters if f not in filters]
    assert not added, f"importing ssl_lightning added warnings filters: {added}"
    assert new_backend == backend, f"importing ssl_lightning changed the matplotlib backend: {backend} -> {new_backend}"
    assert new_root_level == root_level, f"importing ssl_lightning changed the root log level: {root_level} -> {new_root_level}"
    changed = {name: (level, new_levels[name]) for name, level in levels.items() if new_levels[name] != level}
    assert not changed, f"importing ssl_lightning changed log levels (old, new): {changed}"
    print(len(modules), "modules")
    """
)


def test_importing_every_module_changes_no_global_state():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[0]) > 40  # every module was imported, not a handful


# Rooms that must not reach into others: the methods into the downstream side, the pictures into
# the command line (each would close a cycle, as both are built on the methods and the pictures).
LAYERING = [("ssl_lightning.methods", "ssl_lightning.evaluation"), ("ssl_lightning.visualize", "ssl_lightning.cli")]


def test_rooms_import_no_room_built_on_them():
    probe = "import sys\n" + "".join(
        f"import {room}\n"
        f"assert not [m for m in sys.modules if m.startswith('{forbidden}')], '{room} imports {forbidden}'\n"
        for room, forbidden in LAYERING
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_rooms_have_no_deferred_imports_of_a_room_built_on_them():
    """The same, for imports inside functions, which an import alone does not run."""
    from pathlib import Path

    import ssl_lightning

    package = Path(ssl_lightning.__file__).parent
    for room, forbidden in LAYERING:
        path = package.joinpath(*room.split(".")[1:])
        sources = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        for source in sources:
            assert f"from {forbidden}" not in source.read_text(), f"{source.name} imports {forbidden}"
