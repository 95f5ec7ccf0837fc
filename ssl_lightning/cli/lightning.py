"""``ssl-lightning fit|validate|test|predict``: LightningCLI with our callbacks, logger and data-model links.

    ssl-lightning fit --config ssl_lightning/configs/simclr.yaml [--trainer.max_epochs=5 ...]
    ssl-lightning fit --config ... --ckpt_path last   (resume the newest run of that config; --name names it)
    ssl-lightning predict --config ... --ckpt_path CKPT   (the encoder's features of the test split, to one file)

Option names are whole (no prefix abbreviations); a misspelt one gets the closest valid names.
validate, test and predict print their results and write no logs.
"""

from __future__ import annotations

import functools
import importlib
import operator
import sys
import typing
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.callbacks.progress import ProgressBar as AnyProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

import ssl_lightning.data  # noqa: F401  (registers the data modules for short class names)
import ssl_lightning.methods  # noqa: F401  (registers the methods for short class names)
from ssl_lightning.callbacks import AUTO_MONITOR, EmbeddingProjector, ExactResume, HParamsSummary, LogViewPairs, ProgressBar, RunCheckpoint
from ssl_lightning.checkpoint import read_checkpoint
from ssl_lightning.cli.parsing import with_suggestions
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.online import OnlineEvaluation
from ssl_lightning.outputs import check_can_create, numbered_folders
from ssl_lightning.predictions import FeatureWriter

# Facts about the images that the model takes from the data module: (data attribute, model argument).
DATA_TO_MODEL = [("num_channels", "encoder.in_channels"), ("image_size", "encoder.input_size"), ("mean", "encoder.mean"),
                 ("std", "encoder.std")]

TRAINER_DEFAULTS = {
    "accelerator": "auto",
    "plugins": [{"class_path": "ssl_lightning.checkpoint.AtomicCheckpointIO"}],
    "default_root_dir": "checkpoints",
    "logger": {
        "class_path": "ssl_lightning.logger.GroupedTensorBoardLogger",  # Lightning's, with its epoch counter as train/epoch
        # name None: filled in with the experiment's name (see experiment_name): checkpoints/<name>/version_N.
        # default_hp_metric off: no placeholder "hp_metric = -1" curve in TensorBoard.
        "init_args": {"save_dir": "checkpoints", "name": None, "default_hp_metric": False},
    },
}


class SSLLightningCLI(LightningCLI):
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # Whole option names only: a prefix like --trainer.max_step would silently set max_steps.
        # Parse errors come to main, for one line instead of the usage. The name is the command's
        # however it was started (python -m ssl_lightning.cli too), so a stored help fits every start.
        return super().init_parser(**{"allow_abbrev": False, "exit_on_error": False, "prog": "ssl-lightning", **kwargs})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise with_suggestions(err, parser) from err

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_lightning_class_args(FeatureWriter, "features")  # --features.path FILE
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        ints_first(parser)
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": AUTO_MONITOR,  # val/knn_acc where there are labels, else val/loss (RunCheckpoint)
                "checkpoint.mode": "max",  # for a monitor named in the config; "auto" brings its own
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.save_last_every_n_steps": 100,  # a killed run loses at most 100 steps
            }
        )
        parser.add_argument("--name", type=Optional[str], default=None,
                            help="the experiment's name: runs go to <save_dir>/<name>/version_N, and --ckpt_path last resumes its "
                                 "newest run (default: the config file's name, else the method's)")
        parser.add_argument("--resume_with_changes", action="store_true",
                            help="--ckpt_path last: continue the run even where this config differs from the run's")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(LogViewPairs, "view_pairs")
        parser.add_lightning_class_args(EmbeddingProjector, "projector")
        parser.add_lightning_class_args(OnlineEvaluation, "online_eval")
        for source, target in DATA_TO_MODEL:
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning's CLI replaces the model's arguments by those saved in a ``--ckpt_path``
        checkpoint, silently (even the method). Here the config and the command line decide, and a
        checkpoint that does not fit them is a one-line error (``EncoderMethod.on_load_checkpoint``)."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        tensorboard = getattr(logger, "init_args", None) is not None and "name" in logger.init_args
        if tensorboard and (logger.init_args.name is None or config.get("name")):
            logger.init_args.name = experiment_name(config)
        if config.get("ckpt_path") not in (None, "last", "best", "hpc", "registry"):
            read_checkpoint(config.ckpt_path)  # a missing or corrupt file: one line, before any work
        if config.trainer.get("precision") is None:
            config.trainer.precision = default_precision(config.trainer.accelerator)
        if not wants_our_progress_bar(config.trainer):
            self.trainer_defaults["callbacks"] = [c for c in self.trainer_defaults["callbacks"] if not isinstance(c, ProgressBar)]
        if self.subcommand in ("validate", "test", "predict"):
            # They print their results; a logger and the saved config would only leave a run folder
            # behind (checkpoints/<method>/version_N) that holds no run.
            config.trainer.logger = False
            self.save_config_callback = None
        if self.subcommand == "fit":
            if tensorboard:
                check_can_create(Path(logger.init_args.save_dir), "trainer.logger.init_args.save_dir")
            else:
                check_can_create(Path(config.trainer.default_root_dir or "."), "trainer.default_root_dir")
            if tensorboard and config.ckpt_path == "last" and config.checkpoint.dirpath is None:
                self._resume_latest_run(config, logger.init_args)
            dirpath = config.checkpoint.dirpath
            if config.ckpt_path is None and dirpath and list(Path(dirpath).glob("*.ckpt")):
                raise ConfigError(f"{dirpath} already holds checkpoints of an earlier run; choose another "
                                  "checkpoint.dirpath, or resume that run with --ckpt_path")

    def before_fit(self) -> None:
        if self.trainer.is_global_zero and self.trainer.logger is not None and not self.trainer.fast_dev_run:
            print(f"ssl-lightning: this run's logs, config and checkpoints go to {self.trainer.log_dir}", file=sys.stderr)

    def _resume_latest_run(self, config: Any, logger_args: Any) -> None:
        """``--ckpt_path last``: continue the newest run of this experiment that has a ``last.ckpt``
        and was trained with this config (the newest of all with ``--resume_with_changes``), logging
        into its version folder. Lightning alone would look in a new, empty version folder; a run
        folder without checkpoints (a validate or a run stopped before its first save) is passed over."""
        runs = Path(logger_args.save_dir) / logger_args.name
        candidates = run_checkpoints(runs)
        if not candidates:
            print(f"ssl-lightning: no run with a last.ckpt under {runs}: starting a new run", file=sys.stderr)
            config.ckpt_path = None
            return
        last, version = candidates[0]
        if not config.resume_with_changes:
            config_yaml = self._parser(self.subcommand).dump(config)
            differences = [config_differences(path, config_yaml) for path, _ in candidates]
            if all(differences):
                raise ConfigError(f"the config differs from the one {last.parents[1]} was trained with ({'; '.join(differences[0])}), "
                                  f"and so do those of the other runs under {runs}; run with its config, start a new run with "
                                  "--name NEW, or pass --resume_with_changes to continue it with the new one")
            last, version = candidates[differences.index([])]
        step = read_checkpoint(last)["global_step"]
        print(f"ssl-lightning: resuming {last} at step {step}", file=sys.stderr)
        config.ckpt_path = str(last)
        logger_args.version = version
        # The run's config.yaml stays; each resume saves its own config next to it.
        resumes = len(list(last.parents[1].glob("config*.yaml")))
        self.save_config_kwargs["config_filename"] = f"config-resume-{resumes}.yaml"


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


# Options a resumed run may change freely: how long it trains, how it logs and shows progress, and
# the options that choose the run itself. Keys are dotted config paths; a trailing "." is a prefix.
RESUME_FREE = (
    "ckpt_path", "config", "name", "resume_with_changes",
    "trainer.max_epochs", "trainer.min_epochs", "trainer.max_steps", "trainer.min_steps", "trainer.max_time",
    "trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches", "trainer.limit_predict_batches",
    "trainer.log_every_n_steps", "trainer.val_check_interval", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.num_sanity_val_steps", "trainer.callbacks", "trainer.logger.init_args.version",
    "checkpoint.verbose", "checkpoint.save_last_every_n_steps", "view_pairs.", "projector.",
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


def make_cli(args: list[str] | None = None, run: bool = True) -> SSLLightningCLI:
    """The CLI on ``args`` (default: ``sys.argv``); ``run=False`` builds the model, data and trainer
    of a config (no subcommand) without running anything."""
    return SSLLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # Callbacks every run has, whatever the config lists.
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [ExactResume(), HParamsSummary(), ProgressBar()]},
        args=args,
        run=run,
    )


def ints_first(parser: LightningArgumentParser) -> None:
    """Makes the parser read ``1`` as an int for the Trainer's ``Union[int, float]`` arguments
    (``limit_val_batches=1``: one batch, not 1.0 = all of them).

    typing caches unions by equality, which ignores order, so Lightning's ``Union[int, float]`` can
    come back as an earlier-made ``Union[float, int]``; jsonargparse tries the types in order.
    """
    for action in parser._actions:
        hint = getattr(action, "_typehint", None)
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Union and {int, float} <= set(args) and args.index(float) < args.index(int):
            if all(isinstance(arg, type) for arg in args):
                action._typehint = functools.reduce(operator.or_, (int, *(arg for arg in args if arg is not int)))


def default_precision(accelerator: Any) -> str | None:
    """bf16 mixed precision where the run will use a GPU with bf16 (NVIDIA Ampere and later);
    otherwise None, Lightning's default (32-bit)."""
    on_gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else None


def wants_our_progress_bar(trainer: Any) -> bool:
    """False where the run has no progress bar, or where the config lists a progress bar of its own."""
    if trainer.get("enable_progress_bar") is False:
        return False
    for callback in trainer.get("callbacks") or []:
        path = callback.class_path if hasattr(callback, "class_path") else f"{type(callback).__module__}.{type(callback).__name__}"
        module, _, name = path.rpartition(".")
        if issubclass(getattr(importlib.import_module(module), name), AnyProgressBar):
            return False
    return True


def run(args: list[str]) -> None:
    """``ssl-lightning fit|validate|test|predict ...`` (``args`` with the subcommand). LightningCLI
    reads them from ``sys.argv``, which ``main`` set to them, as Lightning's DDP launcher does."""
    sys.argv[1:] = with_packaged_configs(args)
    make_cli()


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

