"""Where runs are filed (``<save_dir>/<name>/version_N``) and which one ``--ckpt_path last`` resumes:
the newest with a ``last.ckpt`` that was trained with the same config, options that may change
freely aside (``RESUME_FREE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ssl_lightning.errors import ConfigError
from ssl_lightning.outputs import numbered_folders


def experiment_name(config: Any) -> str:
    """The name runs are filed under (``checkpoints/<name>/version_N``): ``--name``, else the first
    config file's stem (simclr_gpu for simclr_gpu.yaml), else the method's lowercased class name."""
    if config.get("name"):
        return config.name
    if config.get("config"):
        return Path(str(config.config[0])).stem
    return config.model.class_path.rsplit(".", 1)[-1].lower()


def run_checkpoints(runs: Path) -> list[tuple[Path, int]]:
    """The ``last.ckpt`` of every ``runs/version_N`` that has one, with N, the newest first."""
    lasts = ((folder / "checkpoints" / "last.ckpt", n) for n, folder in numbered_folders(runs, "version_"))
    return [(last, n) for last, n in lasts if last.is_file()]


def run_to_resume(candidates: list[tuple[Path, int]], config_yaml: str | None, runs: Path) -> tuple[Path, int]:
    """The (``last.ckpt``, N) of ``candidates`` (``run_checkpoints``, the newest first) to resume
    with the config ``config_yaml``: the newest trained with it (with ``None``: the newest). A
    ``ConfigError`` that names the differences where none was."""
    if config_yaml is None:
        return candidates[0]
    differences = [config_differences(path, config_yaml) for path, _ in candidates]
    if all(differences):
        others = f", and so do those of the other runs under {runs}" if len(candidates) > 1 else ""
        raise ConfigError(f"the config differs from the one {candidates[0][0].parents[1]} was trained with ({'; '.join(differences[0])})"
                          f"{others}; run with its config, start a new run with --name NEW, or pass --resume_with_changes to "
                          "continue it with the new one")
    return candidates[differences.index([])]


# Options a resumed run may change freely: how long it trains, how it logs and shows progress, and
# the options that choose the run itself. Keys are dotted config paths; a trailing "." is a prefix.
RESUME_FREE = (
    "ckpt_path", "config", "name", "resume_with_changes",
    "trainer.max_epochs", "trainer.min_epochs", "trainer.max_steps", "trainer.min_steps", "trainer.max_time",
    "trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches", "trainer.limit_predict_batches",
    "trainer.log_every_n_steps", "trainer.val_check_interval", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.num_sanity_val_steps", "trainer.callbacks", "trainer.logger.init_args.version",
    "checkpoint.verbose", "checkpoint.save_last_every_n_steps", "view_pairs.", "reconstructions.", "projector.",
)


def config_differences(last: Path, config_yaml: str) -> list[str]:
    """Each difference (``key: old -> new``) between the config the run of ``last``
    (``<run>/checkpoints/last.ckpt``) was trained with and ``config_yaml``, in anything but the
    options in ``RESUME_FREE``. The run's config is the newest that LightningCLI saved in its folder
    (``config.yaml``, then ``config-resume-N.yaml`` at each resume); a run without one has none."""
    saved = sorted(last.parents[1].glob("config*.yaml"), key=lambda p: (len(p.name), p.name))  # config.yaml, -resume-1, ..., -resume-10
    if not saved:
        return []
    old, new = flatten(yaml.safe_load(saved[-1].read_text()) or {}), flatten(yaml.safe_load(config_yaml) or {})
    return [f"{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key) and not any(key == free or (free.endswith(".") and key.startswith(free)) for free in RESUME_FREE)]


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
