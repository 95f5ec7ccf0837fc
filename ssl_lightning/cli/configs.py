"""The configs the package ships (``ssl_lightning/configs/``), found by name for ``--config``."""

from __future__ import annotations

from pathlib import Path

from ssl_lightning.errors import ConfigError

PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def with_packaged_configs(args: list[str]) -> list[str]:
    """``args`` with each ``--config`` that is not a file here but names a config the package ships
    (``simclr``, ``cifar10/moco.yaml``, or ``ssl_lightning/configs/simclr.yaml`` typed in another
    folder) replaced by that file's path; a missing ``.yaml`` file that is neither is one line."""
    resolved = list(args)
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            resolved[i + 1] = packaged_config(args[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = f"--config={packaged_config(arg[len('--config='):])}"
    return resolved


def packaged_config(value: str) -> str:
    if Path(value).is_file():
        return value
    name = value.replace("\\", "/").split("ssl_lightning/configs/", 1)[-1]
    for candidate in (PACKAGED_CONFIGS / name, PACKAGED_CONFIGS / f"{name}.yaml"):
        if candidate.is_file() and candidate.resolve().is_relative_to(PACKAGED_CONFIGS):
            return str(candidate)
    if value.endswith((".yaml", ".yml")):  # anything else may be YAML text, which --config also takes
        shipped = ", ".join(sorted(str(p.relative_to(PACKAGED_CONFIGS).with_suffix("")) for p in PACKAGED_CONFIGS.rglob("*.yaml")))
        raise ConfigError(f"config file not found: {value}; give a path to a YAML file, or the name of a config the package ships: {shipped}")
    return value
