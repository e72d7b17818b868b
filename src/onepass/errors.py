"""Errors users can act on, each with its own exit code on the command line."""

from __future__ import annotations


class OnepassError(Exception):
    """Base class of every error onepass raises on purpose."""

    exit_code = 1


class UsageError(OnepassError):
    """Bad arguments: an unknown or invalid hyperparameter, a missing option, a wrong combination."""

    exit_code = 2


class DataError(OnepassError):
    """Bad input data. The message names the source and the record (line, row or byte offset)."""

    exit_code = 3

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 row: int | None = None, reason: str | None = None):
        where = []
        if source is not None:
            where.append(str(source))
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        full = f"{': '.join([', '.join(where)] if where else [])}{': ' if where else ''}{message}"
        super().__init__(full)
        self.source, self.line, self.row, self.reason = source, line, row, reason or message


class Interrupted(OnepassError):
    """Training stopped by SIGINT or SIGTERM after writing a checkpoint; `--resume` continues it."""

    exit_code = 4


class StateFileError(OnepassError):
    """A state or model file that is truncated, corrupted, foreign, of a newer format or incompatible."""

    exit_code = 5


class IncompatibleStateError(StateFileError):
    """Two states, or a state and a run, whose configurations differ: merging or continuing is refused."""
