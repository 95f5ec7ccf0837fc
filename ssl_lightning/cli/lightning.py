"""``ssl-lightning fit|validate|test|predict``: LightningCLI with our callbacks, logger and data-model links.

    ssl-lightning fit --config ssl_lightning/configs/simclr.yaml [--trainer.max_epochs=5 ...]
    ssl-lightning fit --config ... --ckpt_path last   (resume the newest run of that config; --name names it)
    ssl-lightning predict --config ... --ckpt_path CKPT   (the encoder's features of the test split, to one file)

Option names are whole (no prefix abbreviations); a misspelt one gets the closest valid names.
validate, test and predict print their results and write no logs.
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import LightningDataModule, LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.cli import LightningArgumentParser

import ssl_lightning.data  # noqa: F401  (registers the data modules for short class names)
import ssl_lightning.methods  # noqa: F401  (registers the methods for short class names)
from ssl_lightning.callbacks import (AUTO_MONITOR, AnnounceRunFolder, EmbeddingProjector, ExactResume, HParamsSummary, LogReconstructions, LogViewPairs,
                                     ProgressBar, RemoveUnstartedRun, RunCheckpoint)
from ssl_lightning.checkpoint import read_checkpoint
from ssl_lightning.cli.configs import with_packaged_configs
from ssl_lightning.cli.parsing import ints_first, with_suggestions
from ssl_lightning.cli.run_defaults import TRAINER_DEFAULTS, default_precision, wants_our_progress_bar
from ssl_lightning.cli.runs import experiment_name, run_checkpoints, run_to_resume
from ssl_lightning.errors import ConfigError
from ssl_lightning.evaluation.online import OnlineEvaluation
from ssl_lightning.lightning_internals import HookedLightningCLI
from ssl_lightning.outputs import check_can_create
from ssl_lightning.predictions import FeatureWriter

# Facts about the images that the model takes from the data module: (data attribute, model argument).
DATA_TO_MODEL = [("num_channels", "encoder.in_channels"), ("image_size", "encoder.input_size"), ("mean", "encoder.mean"),
                 ("std", "encoder.std")]

class SSLLightningCLI(HookedLightningCLI):
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

    def add_subcommand_arguments(self, parser: LightningArgumentParser, subcommand: str) -> None:
        if subcommand == "predict":
            parser.add_lightning_class_args(FeatureWriter, "features")  # --features.path FILE

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
        parser.add_lightning_class_args(LogReconstructions, "reconstructions")  # methods that reconstruct: Autoencoder
        parser.add_lightning_class_args(EmbeddingProjector, "projector")
        parser.add_lightning_class_args(OnlineEvaluation, "online_eval")
        for source, target in DATA_TO_MODEL:
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def checkpoint_decides_model(self) -> bool:
        """False: Lightning's CLI would replace the model's arguments by those saved in a
        ``--ckpt_path`` checkpoint, silently (even the method). Here the config and the command line
        decide, and a checkpoint that does not fit them is a one-line error
        (``EncoderMethod.on_load_checkpoint``)."""
        return False

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

    def after_fit(self) -> None:
        checkpoint = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and checkpoint is not None and checkpoint.last_model_path and not self.trainer.fast_dev_run:
            best = f"; the best by {checkpoint.monitor}: {Path(checkpoint.best_model_path).name}" if checkpoint.best_model_path else ""
            print(f"ssl-lightning: stopped at step {self.trainer.global_step}; {Path(checkpoint.last_model_path).name} is in "
                  f"{Path(checkpoint.last_model_path).parent}{best}", file=sys.stderr)

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
        config_yaml = None if config.resume_with_changes else self.subcommand_parser(self.subcommand).dump(config)
        last, version = run_to_resume(candidates, config_yaml, runs)
        step = read_checkpoint(last)["global_step"]
        print(f"ssl-lightning: resuming {last} at step {step}", file=sys.stderr)
        config.ckpt_path = str(last)
        logger_args.version = version
        # The run's config.yaml stays; each resume saves its own config next to it.
        resumes = len(list(last.parents[1].glob("config*.yaml")))
        self.save_config_kwargs["config_filename"] = f"config-resume-{resumes}.yaml"


def make_cli(args: list[str] | None = None, run: bool = True, cli_class: type[SSLLightningCLI] = SSLLightningCLI) -> SSLLightningCLI:
    """The CLI on ``args`` (default: ``sys.argv``); ``run=False`` builds the model, data and trainer
    of a config (no subcommand) without running anything."""
    argv = sys.argv[1:]
    if args is not None:  # LightningCLI warns where it is given args and sys.argv holds others (another subcommand's)
        sys.argv[1:] = []
    try:
        return cli_class(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            # Callbacks every run has, whatever the config lists.
            trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [AnnounceRunFolder(), ExactResume(), HParamsSummary(), ProgressBar(), RemoveUnstartedRun()]},
            args=args,
            run=run,
        )
    finally:
        sys.argv[1:] = argv


class _ParseOnly(SSLLightningCLI):
    def instantiate_classes(self) -> None:
        """Nothing is built: ``read_model_config`` wants the parsed config alone."""


def read_model_config(config: str | Path) -> tuple[str, dict[str, Any]]:
    """(class path, init args) of the model of a config file, as ``fit`` reads it (packaged names,
    defaults, validation), without building anything; the arguments the data module gives are
    left out (``DATA_TO_MODEL``)."""
    args = with_packaged_configs(["--config", str(config), "--seed_everything=false"])  # reading seeds nothing
    parsed = make_cli(args, run=False, cli_class=_ParseOnly).config
    return parsed.model.class_path, parsed.model.init_args.as_dict()


def run(args: list[str]) -> None:
    """``ssl-lightning fit|validate|test|predict ...`` (``args`` with the subcommand). LightningCLI
    reads them from ``sys.argv``, which ``main`` set to them, as Lightning's DDP launcher does."""
    sys.argv[1:] = with_packaged_configs(args)
    make_cli()


