"""Errors that mean "the user asked for something we cannot do", as opposed to bugs.

The CLI prints these as one line (no traceback unless ``--verbose``); their message names the
problem and the fix.
"""


class UserError(Exception):
    """Base class for errors caused by input or configuration, not by a bug."""


class ConfigError(UserError, ValueError):
    """A hyperparameter or argument has a value we cannot work with."""


class DataNotFoundError(UserError, FileNotFoundError):
    """A dataset is not where the config says and cannot be downloaded."""


class TrainingDivergedError(UserError, FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, unreadable or not one of ours."""
