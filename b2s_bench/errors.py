"""Errors that are the user's to fix: the CLI prints them without a traceback and exits with 2, or
with 3 for a :class:`MissingPrerequisite` (see :mod:`b2s_bench.cli.exits`); a :class:`CannotWrite`
exits with 4."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "UserError",
    "SuiteError",
    "UnknownNameError",
    "ConfigError",
    "MissingPrerequisite",
    "SuiteMistake",
    "CannotWrite",
    "suggest",
]


class UserError(Exception):
    """An error caused by input (a suite, a setting, a missing file), not by a bug."""


class MissingPrerequisite(UserError):
    """Something a run needs is not on this machine (data, weights, a package); the message says what
    to download, install or set. The CLI exits with 3, apart from suite errors (2).
    :func:`b2s_bench.execution.prerequisites.check_cells` finds these before a run starts."""


class SuiteMistake(str):
    """A problem a ``problems`` check (of a model source or a dataset) returns that is a mistake in the
    suite, not something missing on this machine: an unknown model name, a weights package that is not
    registered, a ``weights:`` file that is not a checkpoint. ``validate`` and ``run`` exit 2 on it, not 3,
    since nothing installed or downloaded would fix it. ``key`` is the entry's key it is about
    (``weights``), for the line the error points at; empty: the entry's ``name``.
    """

    key: str

    def __new__(cls, message: str, key: str = "") -> SuiteMistake:
        self = super().__new__(cls, message)
        self.key = key
        return self


class CannotWrite(Exception):
    """A file could not be written because its folder is full, read-only or not ours (ENOSPC, EDQUOT,
    EROFS, EACCES, EPERM). Not the cell's fault, so never a cell's error record: a run stops cleanly,
    releases its claims and leaves the cell pending; the CLI exits with 4 and names the folder.
    Made by :func:`b2s_bench.store.records.cannot_write`."""


class ConfigError(UserError, ValueError):
    """A compressor (or other) setting has a bad value. `key` names the setting when known."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return the candidates closest to `name`, best first (for "did you mean")."""
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    lowered = name.lower()
    for c in candidates:  # prefix / substring matches that difflib may rank too low
        if c not in close and (c.lower().startswith(lowered) or lowered in c.lower()) and len(close) < n:
            close.append(c)
    return close


class UnknownNameError(UserError, KeyError):
    """A name that is not registered. The message suggests the near ones and lists what exists."""

    def __init__(self, kind: str, name: str, available: Iterable[str], extra: str = ""):
        self.kind, self.name = kind, name
        self.available = sorted(available)
        self.suggestions = suggest(name, self.available)
        msg = f"unknown {kind} {name!r}"
        if self.suggestions:
            msg += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        shown = ", ".join(self.available[:30]) + (" ..." if len(self.available) > 30 else "")
        msg += f" (available: {shown or 'none'})"
        if extra:
            msg += f". {extra}"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class SuiteError(UserError):
    """A problem in a suite file, located by file, line and key path, with a fix."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, key: str = ""):
        self.file, self.line, self.key, self.message = file, line, key, message
        where = file or "<suite>"
        if line:
            where += f":{line}"
        super().__init__(f"{where} {key + ': ' if key else ''}{message}")
