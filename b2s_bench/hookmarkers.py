"""The marker plugins decorate their hooks with, and the spec of a plugin's command-line option.

Kept free of heavy imports: ``import b2s_bench; b2s.hookimpl`` must not load torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pluggy

__all__ = ["GROUP", "hookimpl", "hookspec", "CliOption"]

GROUP = "b2s_bench"
hookimpl = pluggy.HookimplMarker(GROUP)
hookspec = pluggy.HookspecMarker(GROUP)


@dataclasses.dataclass(frozen=True)
class CliOption:
    """A command-line option that a plugin adds to some subcommands, and owns.

    Attributes:
        flag: the option, ``--data``.
        commands: the subcommands that take it (``run``, ``validate``, ...).
        apply: called with the option's value (None when not given) in every process that runs
            cells, before the suite is read: the CLI's process and each worker. The plugin keeps the
            value where its own code reads it.
        help: one line for ``--help``.
        metavar: the value's name in ``--help``.
        switch: a flag that takes no value (``--retrain``): ``apply`` gets ``"yes"`` when it is given.
        repeat: the option may be given several times (``--slurm KEY=VALUE``): ``apply`` gets the tuple
            of values, in order (None when not given).
    """

    flag: str
    commands: tuple[str, ...]
    apply: Callable[[Any], None]  # gets str | None, or tuple[str, ...] | None when ``repeat``
    help: str = ""
    metavar: str = "VALUE"
    switch: bool = False
    repeat: bool = False

    def __post_init__(self) -> None:
        if not self.flag.startswith("--") or len(self.flag) < 3:
            raise ValueError(f"a plugin option must look like --name, got {self.flag!r}")
        if self.switch and self.repeat:
            raise ValueError(f"plugin option {self.flag}: a switch takes no value, so it cannot repeat")

    @property
    def dest(self) -> str:
        return "plugin_" + self.flag[2:].replace("-", "_")
