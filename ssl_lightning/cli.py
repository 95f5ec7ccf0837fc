"""The ``ssl-lightning`` command: LightningCLI with our callbacks, logger and data-model links.

    ssl-lightning fit --config ssl_lightning/configs/simclr.yaml [--trainer.max_epochs=5 ...]
    ssl-lightning fit --config ... --ckpt_path last   (resume the newest run of that config; --name names it)
    ssl-lightning evaluate path/to/last.ckpt [...]   (the label-budget sweep; see --help)
    ssl-lightning transfer --sources CKPT [...]      (fine-tune vs feature extraction vs scratch; see --help)
    ssl-lightning prepare --data_dir FOLDER --output_dir SHARDS --image_size N   (litdata shards for ShardedDataModule)
    ssl-lightning checkpoints                        (the shipped pretrained checkpoints)
    ssl-lightning visualize embeddings|neighbours|views ...   (PNGs; see ssl_lightning/visualize.py)

Errors caused by input (``UserError``) print as one line; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.callbacks.progress import ProgressBar as AnyProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

import ssl_lightning.data  # noqa: F401  (registers the data modules for short class names)
import ssl_lightning.methods  # noqa: F401  (registers the methods for short class names)
from ssl_lightning.callbacks import EmbeddingProjector, ExactResume, HParamsSummary, LogViewPairs, ProgressBar, RunCheckpoint
from ssl_lightning.checkpoint import read_checkpoint
from ssl_lightning.errors import ConfigError, UserError
from ssl_lightning.evaluation.online import OnlineEvaluation
from ssl_lightning.shipped import describe

# Facts about the images that the model takes from the data module: (data attribute, model argument).
DATA_TO_MODEL = [("num_channels", "in_channels"), ("image_size", "image_size"), ("mean", "mean"), ("std", "std")]

TRAINER_DEFAULTS = {
    "accelerator": "auto",
    "plugins": [{"class_path": "ssl_lightning.checkpoint.AtomicCheckpointIO"}],
    "default_root_dir": "checkpoints",
    "logger": {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        # name None: filled in with the experiment's name (see experiment_name): checkpoints/<name>/version_N.
        # default_hp_metric off: no placeholder "hp_metric = -1" curve in TensorBoard.
        "init_args": {"save_dir": "checkpoints", "name": None, "default_hp_metric": False},
    },
}


class SSLLightningCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc_top5",
                "checkpoint.mode": "max",
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
        if self.subcommand == "fit":
            check_writable(Path(logger.init_args.save_dir if tensorboard else config.trainer.default_root_dir))
            if tensorboard and config.ckpt_path == "last" and config.checkpoint.dirpath is None:
                self._resume_latest_run(config, logger.init_args)
            dirpath = config.checkpoint.dirpath
            if config.ckpt_path is None and dirpath and list(Path(dirpath).glob("*.ckpt")):
                raise ConfigError(f"{dirpath} already holds checkpoints of an earlier run; choose another "
                                  "checkpoint.dirpath, or resume that run with --ckpt_path")

    def _resume_latest_run(self, config: Any, logger_args: Any) -> None:
        """``--ckpt_path last``: continue the newest run of this experiment that has a ``last.ckpt``,
        logging into its version folder. Lightning alone would look in a new, empty version folder;
        a run folder without checkpoints (a validate or a run stopped before its first save) is passed over."""
        runs = Path(logger_args.save_dir) / logger_args.name
        last, version = latest_checkpoint(runs)
        if last is None:
            print(f"ssl-lightning: no run with a last.ckpt under {runs}: starting a new run", file=sys.stderr)
            config.ckpt_path = None
            return
        if not config.resume_with_changes:
            check_same_config(last, self._parser(self.subcommand).dump(config))
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


def latest_checkpoint(runs: Path) -> tuple[Path | None, int | None]:
    """The ``last.ckpt`` of the highest-numbered ``runs/version_N`` that has one, and N."""
    versions = sorted((int(p.name[len("version_"):]) for p in runs.glob("version_*") if p.name[len("version_"):].isdigit()), reverse=True)
    for version in versions:
        last = runs / f"version_{version}" / "checkpoints" / "last.ckpt"
        if last.is_file():
            return last, version
    return None, None


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


def check_same_config(last: Path, config_yaml: str) -> None:
    """Stops, in one line listing each difference (``key: old -> new``), where the run of ``last``
    (``<run>/checkpoints/last.ckpt``) was trained with another config than ``config_yaml`` in
    anything but the options in ``RESUME_FREE``. The run's config is the newest that LightningCLI
    saved in its folder (``config.yaml``, then ``config-resume-N.yaml`` at each resume)."""
    run = last.parents[1]
    saved = sorted(run.glob("config*.yaml"), key=lambda p: (len(p.name), p.name))  # config.yaml, -resume-1, ..., -resume-10
    if not saved:
        return
    old, new = flatten(yaml.safe_load(saved[-1].read_text()) or {}), flatten(yaml.safe_load(config_yaml) or {})
    changed = [key for key in sorted(old.keys() | new.keys())
               if old.get(key) != new.get(key) and not any(key == free or (free.endswith(".") and key.startswith(free)) for free in RESUME_FREE)]
    if changed:
        differences = "; ".join(f"{key}: {old.get(key)} -> {new.get(key)}" for key in changed)
        raise ConfigError(f"the config differs from the one {run} was trained with ({differences}); run with its config, "
                          "start a new run with --name NEW, or pass --resume_with_changes to continue it with the new one")


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
        parser_kwargs={"exit_on_error": False},  # parse errors come here, for one line instead of the usage
        args=args,
        run=run,
    )


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


def check_writable(folder: Path) -> None:
    """Fails before training, with one line, where runs could not save their logs and checkpoints."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise ConfigError(
            f"cannot write to the output folder {folder} ({err.strerror or err}); set trainer.default_root_dir and "
            "trainer.logger.init_args.save_dir to a folder you can write"
        ) from err


def main(args: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if args is None else args)
    verbose = "--verbose" in args
    args = [arg for arg in args if arg != "--verbose"]
    # LightningCLI reads sys.argv, and so does Lightning's DDP launcher, which starts the other
    # processes with this same command line.
    sys.argv[1:] = args
    # Our methods make their views in on_after_batch_transfer by design, and Lightning 2.6 uses a
    # pytree API that torch deprecated: both warnings are noise to a user.
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer` in `LightningModule`")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # RunCheckpoint refuses a folder with another run's checkpoints; a resumed run's folder is fine.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata 0.11 under torch >= 2.10
    warnings.filterwarnings("ignore", message="Found .* module.* in eval mode at the start of training")  # frozen encoders, on purpose
    # litdata's StreamingDataset (ShardedDataModule) knows its length; Lightning warns about any that does.
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
    # Lightning 2.6 calls jsonargparse APIs that 4.49+ deprecates; jsonargparse's own switch.
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    try:
        if args[:1] == ["evaluate"]:
            from ssl_lightning.evaluation.label_efficiency import main as evaluate

            evaluate(args[1:])
        elif args[:1] == ["transfer"]:
            from ssl_lightning.evaluation.transfer_comparison import main as transfer

            transfer(args[1:])
        elif args[:1] == ["prepare"]:
            from ssl_lightning.data.prepare import main as prepare

            prepare(args[1:])
        elif args[:1] == ["checkpoints"]:
            print(describe())
        elif args[:1] == ["visualize"]:
            from ssl_lightning.visualize import main as visualize

            visualize(args[1:])
        else:
            make_cli()
    except ArgumentError as err:
        if verbose:
            raise
        print(f"ssl-lightning: error: {_argument_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        cause = _user_error(err)
        if cause is None or verbose:
            raise
        print(f"ssl-lightning: error: {_one_line(cause)} (run with --verbose for the traceback)", file=sys.stderr)
        sys.exit(1)


def _argument_error_line(err: ArgumentError) -> str:
    """jsonargparse's multi-line report of a bad argument, as one line that names the fix."""
    text = str(err)
    unknown = re.search(r'^Parser key "(model|data)".*?(?:dot import path string: |[Ii]mport path |has no attribute )[\'"]?([\w.]+)', text, re.S)
    if unknown:
        group, name = unknown.groups()
        kind, valid = ("method", ssl_lightning.methods.METHODS) if group == "model" else ("data module", ssl_lightning.data.DATA_MODULES)
        return f"unknown {kind} {name!r}; choose one of {', '.join(valid)}"
    noise = ("Does not validate", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")
    lines = [line.strip(" -:") for line in text.splitlines() if line.strip() and not line.strip().startswith(noise)]
    return ": ".join(lines) + " (see --help for the accepted options)"


def _one_line(err: Exception) -> str:
    """The error's message; for one raised in a DataLoader worker, which torch re-raises with the
    worker's traceback in the message, the original message alone."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]  # "ssl_lightning.errors.DataNotFoundError: <message>"
    return text


def _user_error(err: BaseException | None) -> Exception | None:
    """The UserError (or Lightning's MisconfigurationException: a Trainer setting it refuses) behind
    ``err``, if any: jsonargparse wraps errors raised while it builds the classes in its own ValueError."""
    while err is not None:
        if isinstance(err, (UserError, MisconfigurationException)):
            return err
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    main()
