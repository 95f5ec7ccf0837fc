"""What every ``ssl-lightning`` parser shares: whole option names only (no prefix abbreviations),
"did you mean" for a misspelt name, and one-line reports of bad arguments.

Light on purpose: nothing here imports torch or Lightning, so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import operator
import re
import sys
import typing
from collections.abc import Callable, Iterable
from typing import Any


def did_you_mean(word: str, valid: Iterable[str], what: str) -> str:
    """``unknown <what> 'word'`` with the closest valid names (difflib), then all of them."""
    valid = list(valid)
    close = difflib.get_close_matches(word, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown {what} {word!r}{hint} (valid: {', '.join(valid)})"


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """The long options of ``parser`` and of its subcommands' parsers."""
    from ssl_lightning.lightning_internals import parser_actions, subcommand_parsers  # here: it loads Lightning, --help does not

    names = []
    for action in parser_actions(parser):
        names += [name for name in action.option_strings if name.startswith("--")]
        for subparser in subcommand_parsers(action):
            names += option_names(subparser)
    return sorted(set(names))


def with_suggestions(err: argparse.ArgumentError, parser: argparse.ArgumentParser) -> argparse.ArgumentError:
    """``err``, where it is about unrecognised options, naming the closest options ``parser`` has."""
    unknown = re.match(r"unrecognized arguments: (.*)", str(err), re.I | re.S)
    if unknown is None:
        return err
    valid = option_names(parser)
    lines = []
    for word in unknown.group(1).split():
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
            lines.append(f"unknown option {name}" + (f"; did you mean {' or '.join(close)}?" if close else ""))
    message = "; ".join(lines) or str(err)
    return argparse.ArgumentError(None, f"{message} (see --help for the accepted options)")


def argument_parser(prog: str, description: str | None = None, **kwargs: Any):
    """A jsonargparse parser that takes whole option names only and raises ``ArgumentError``."""
    from jsonargparse import ArgumentParser

    return ArgumentParser(prog=prog, description=description, allow_abbrev=False, exit_on_error=False, **kwargs)


def parse(parser: argparse.ArgumentParser, args: list[str]) -> Any:
    """``parser.parse_args(args)``, with "did you mean" for a misspelt option."""
    try:
        return parser.parse_args(args)
    except argparse.ArgumentError as err:
        raise with_suggestions(err, parser) from err


def run_function(function: Callable[..., Any], prog: str, args: list[str], default_data: str, flags: dict[str, str] | None = None) -> Any:
    """Calls ``function`` with ``args`` parsed from its signature: the first argument positional,
    the data module ``--data`` (a class name, default ``default_data``) with ``--data.*`` options;
    ``flags`` ({argument: help}) are boolean arguments given as bare ``--name`` switches."""
    flags = flags or {}
    parser = argument_parser(prog, description=_summary(function))
    parser.add_function_arguments(function, as_positional=True, skip=set(flags))
    for name, help in flags.items():
        parser.add_argument(f"--{name}", action="store_true", help=help)
    parser.set_defaults(data={"class_path": default_data})  # so --data.val_size=... works
    return function(**parser.instantiate_classes(parse(parser, args)).as_dict())


def _summary(function: Callable[..., Any]) -> str:
    return (function.__doc__ or "").strip().split("\n\n")[0]


def choose(args: list[str], commands: dict[str, str], prog: str, epilog: str = "") -> str:
    """The subcommand ``args`` starts with, one of ``commands`` ({name: one-line summary}); for
    ``--help`` (or nothing) prints the commands and exits 0; an unknown one is an ``ArgumentError``."""
    width = max(map(len, commands)) + 2
    listing = "\n".join(f"  {name.ljust(width)}{summary}" for name, summary in commands.items())
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(commands)}}} ...\n\nsubcommands ({prog} SUBCOMMAND --help lists its options):\n{listing}"
              + (f"\n\n{epilog}" if epilog else ""))
        sys.exit(0 if args else 2)
    if args[0] not in commands:
        raise argparse.ArgumentError(None, did_you_mean(args[0], commands, f"{prog} subcommand"))
    return args[0]


def argument_error_line(err: argparse.ArgumentError) -> str:
    """jsonargparse's multi-line report of a bad argument, as one line that names the fix."""
    text = str(err)
    unknown = re.search(r'^Parser key "(model|data)".*?(?:dot import path string: |[Ii]mport path |has no attribute )[\'"]?([\w.]+)', text, re.S)
    if unknown:
        import ssl_lightning.data
        import ssl_lightning.methods

        group, name = unknown.groups()
        kind, valid = ("method", ssl_lightning.methods.METHODS) if group == "model" else ("data module", ssl_lightning.data.DATA_MODULES)
        return f"unknown {kind} {name!r}; choose one of {', '.join(valid)}"
    option = re.search(r'^Parser key "(model|data)".*?class_path \'([\w.]+)\'.*?(?:Option \'([\w.]+)\' is not accepted'
                       r'|unrecognized arguments: --([\w.]+))', text, re.S)
    if option:
        group, class_path, name = option.group(1), option.group(2), option.group(3) or option.group(4)
        return unknown_init_arg(group, class_path, name)
    keys, choices = re.findall(r'Parser key "([\w.]+)"', text), re.findall(r"typing\.Literal\[([^\]]*)\]", text)
    if keys and choices:  # one of several fixed values (Lightning's precision: a union of literals)
        name = keys[0] if len(keys) == 1 else f"{keys[0]}.init_args.{keys[-1]}"  # a model's or data module's option
        values = dict.fromkeys(value.strip(" '\"") for group in choices for value in group.split(","))
        got = re.search(r"(?:Got|Given) value: (\S+)", text)
        return f"--{name} takes one of {', '.join(values)}" + (f", got {got.group(1)}" if got else "")
    noise = ("Does not validate", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")
    lines = [line.strip(" -:") for line in text.splitlines() if line.strip() and not line.strip().startswith(noise)]
    line = ": ".join(lines)
    return line if "--help" in line else f"{line} (see --help for the accepted options)"


def unknown_init_arg(group: str, class_path: str, name: str) -> str:
    """The line for an option ``name`` that the ``group`` ("model" or "data") class does not take:
    the closest names it does take, first those that end the same (``width`` moved to ``encoder.width``)."""
    import importlib

    module, _, class_name = class_path.rpartition(".")
    valid = init_arg_names(getattr(importlib.import_module(module), class_name))
    leaf = name.rsplit(".", 1)[-1]
    moved = [v for v in valid if v != name and (v.rsplit(".", 1)[-1] == leaf or leaf.endswith("_" + v.rsplit(".", 1)[-1]))]
    close = list(dict.fromkeys(moved + difflib.get_close_matches(name, valid, n=3, cutoff=0.8)))[:3]
    hint = f"; did you mean {' or '.join(f'--{group}.init_args.{c}' for c in close)}?" if close else ""
    return f"{class_name} has no option --{group}.init_args.{name}{hint} (--{group}.help {class_name} lists them)"


def init_arg_names(cls: type) -> list[str]:
    """The init options of ``cls`` as the command line names them below ``init_args``: an argument
    whose default is a dataclass (``encoder``, ``optimizer``) by its fields (``encoder.width``)."""
    import dataclasses
    import inspect

    names: list[str] = []
    for owner in [c for c in cls.__mro__ if "__init__" in vars(c)]:  # on through **kwargs to the base's arguments
        parameters = list(inspect.signature(owner.__init__).parameters.values())[1:]  # without self
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or parameter.name in names:
                continue
            if dataclasses.is_dataclass(parameter.default):
                names += [f"{parameter.name}.{field.name}" for field in dataclasses.fields(parameter.default)]
            else:
                names.append(parameter.name)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            break
    return names


def ints_first(parser: Any) -> None:
    """Makes the parser read ``1`` as an int for the Trainer's ``Union[int, float]`` arguments
    (``limit_val_batches=1``: one batch, not 1.0 = all of them).

    typing caches unions by equality, which ignores order, so Lightning's ``Union[int, float]`` can
    come back as an earlier-made ``Union[float, int]``; jsonargparse tries the types in order.
    """
    from ssl_lightning.lightning_internals import action_type, parser_actions, set_action_type  # here: it loads Lightning

    for action in parser_actions(parser):
        hint = action_type(action)
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Union and {int, float} <= set(args) and args.index(float) < args.index(int):
            if all(isinstance(arg, type) for arg in args):
                set_action_type(action, functools.reduce(operator.or_, (int, *(arg for arg in args if arg is not int))))
