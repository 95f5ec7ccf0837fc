"""The ``ssl-lightning`` command: a table of subcommands, each imported only when it runs, so
``ssl-lightning --help`` and ``checkpoints`` answer without loading torch.

fit, validate, test and predict are LightningCLI's (``ssl_lightning.cli.lightning``); the others are
functions of the package with parsers of their own. Errors caused by input (``UserError``) print as
one line; ``--verbose`` shows the traceback. ``SUBCOMMAND --help`` prints a stored copy of the
help where it has one (``help_cache``). ``docs/cli.md`` describes every subcommand.
"""

from __future__ import annotations

import functools
import importlib
import sys
from argparse import ArgumentError
from typing import Any, NamedTuple

from ssl_lightning.cli import help_cache
from ssl_lightning.cli.known_warnings import silence_known_warnings
from ssl_lightning.cli.parsing import argument_error_line, choose
from ssl_lightning.errors import UserError


class Command(NamedTuple):
    summary: str
    runner: str  # "module:function", called with the arguments after the subcommand's name
    subcommands: tuple[str, ...] = ()  # its own, each with a --help of its own


LIGHTNING = "ssl_lightning.cli.lightning:run"  # called with the subcommand's name too
COMMANDS = {
    "fit": Command("train a method: --config CONFIG.yaml [--trainer.max_epochs=N ...]; --ckpt_path last resumes", LIGHTNING),
    "validate": Command("a checkpoint's loss and metrics on the validation split: --config CONFIG.yaml --ckpt_path CKPT", LIGHTNING),
    "test": Command("a checkpoint's loss and metrics on the test split: --config CONFIG.yaml --ckpt_path CKPT", LIGHTNING),
    "predict": Command("a checkpoint's encoder features of the test split, saved to one file: --config ... --ckpt_path CKPT",
                       LIGHTNING),
    "embed": Command("an encoder's features of a split, saved to one file: SOURCE [--output FILE] [--data NAME --data.*]",
                     "ssl_lightning.embed:main"),
    "evaluate": Command("label-budget sweep (linear probe, kNN, supervised) of checkpoints: CKPT [CKPT ...]",
                        "ssl_lightning.evaluation.label_efficiency:main"),
    "transfer": Command("fine-tuning vs feature extraction vs training from scratch on other data: --sources SRC [...]",
                        "ssl_lightning.evaluation.transfer_comparison:main"),
    "visualize": Command("PNGs of what an encoder learned or of a config's views: embeddings|neighbours|views ...",
                         "ssl_lightning.cli.visualize:main", ("embeddings", "neighbours", "views")),
    "checkpoints": Command("the shipped pretrained checkpoints and their test accuracies", "ssl_lightning.shipped:main"),
    "prepare": Command("write an image folder as litdata shards for ShardedDataModule: --data_dir DIR --output_dir DIR --image_size N",
                       "ssl_lightning.data.prepare:main"),
}

HELP = ("-h", "--help")
EPILOG = "Self-supervised visual representation learning on PyTorch Lightning. --verbose: an error's traceback."


def main(args: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if args is None else args)
    verbose = "--verbose" in args
    args = [arg for arg in args if arg != "--verbose"]
    # LightningCLI reads sys.argv, and so does Lightning's DDP launcher, which starts the other
    # processes with this same command line.
    sys.argv[1:] = args
    silence_known_warnings()
    try:
        dispatch(args)
    except ArgumentError as err:
        if verbose:
            raise
        print(f"ssl-lightning: error: {argument_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        cause = _user_error(err)
        if cause is None or verbose:
            raise
        print(f"ssl-lightning: error: {_one_line(cause)} (run with --verbose for the traceback)", file=sys.stderr)
        sys.exit(1)


def dispatch(args: list[str]) -> None:
    """Runs the subcommand ``args`` names; an option first (``--config X fit``) is LightningCLI's."""
    if args and args[0].startswith("-") and args[0] not in HELP:
        name = "fit"  # any LightningCLI subcommand: they share the runner
    else:
        summaries = {name: command.summary for name, command in COMMANDS.items()}
        name = choose(args, summaries, "ssl-lightning", epilog=EPILOG)
    runner = COMMANDS[name].runner
    run = functools.partial(call, runner, args if runner == LIGHTNING else args[1:])
    topic = help_topic(args)
    if topic:
        help_cache.print_help(topic, build=run)  # exits
    else:
        run()


def call(runner: str, args: list[str]) -> None:
    module, function = runner.split(":")
    getattr(importlib.import_module(module), function)(args)


def help_topic(args: list[str]) -> list[str] | None:
    """The subcommand (``["fit"]``, ``["visualize", "views"]``) whose help ``args`` asks for and
    nothing else, so that the help depends on no other argument; None for any other ``args``."""
    if len(args) in (2, 3) and args[-1] in HELP and args[0] in COMMANDS:
        topic = args[:-1]
        if len(topic) == 1 or topic[1] in COMMANDS[topic[0]].subcommands:
            return topic
    return None


def help_topics() -> list[list[str]]:
    """Every subcommand and subcommand's subcommand that has a help of its own."""
    topics = []
    for name, command in COMMANDS.items():
        topics += [[name]] + [[name, sub] for sub in command.subcommands]
    return topics


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
    fabric = sys.modules.get("lightning_fabric.utilities.exceptions")  # loaded wherever Lightning could raise it
    refusals = (UserError, fabric.MisconfigurationException) if fabric else (UserError,)
    while err is not None:
        if isinstance(err, refusals):
            return err
        err = err.__cause__ or err.__context__
    return None


def __getattr__(name: str) -> Any:
    """``make_cli``, ``SSLLightningCLI`` and the rest of the LightningCLI part, loaded on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module("ssl_lightning.cli.lightning"), name)
