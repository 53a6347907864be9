"""What a run needs that this machine lacks, found before anything runs.

``validate`` lists it and ``run`` stops on it (exit 3, with the same advice) before it touches the
network or the disk; with ``--keep-going`` a run computes only the cells that are ready. A problem
that is a :class:`~b2s_bench.errors.SuiteMistake` (an unknown model, a file that is not a checkpoint)
is the suite's fault instead: both stop on it with a suite error (exit 2), ``--keep-going`` or not. The checks
are the model sources' and datasets' own ``problems``: cheap, offline, and without building a
model. :func:`check_writable` tells whether a folder (the run's ``--out``, the cache) can be made and written.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingPrerequisite, SuiteError, SuiteMistake, UserError
from ..suites.source import PathKey, key_path

if TYPE_CHECKING:
    from ..plugins import Plugins
    from ..suites.cells import Cell
    from ..suites.schema import ModelEntry, Suite

__all__ = ["Problem", "Prerequisites", "model_problems", "check_cells", "check_writable"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something a model's cells need that is not here.

    Attributes:
        model: the model's label.
        message: what is missing and how to get it (install, download, set).
        file, line: the suite entry it comes from (the model's name, or its dataset).
        key: the key path there (``models[1].weights``).
        mistake: a mistake in the suite (a :class:`SuiteMistake`), not something missing here.
    """

    model: str
    message: str
    file: str
    line: int | None = None
    key: str = ""
    mistake: bool = False

    def __str__(self) -> str:
        return f"{self.file}{f':{self.line}' if self.line else ''} {self.model}: {self.message}"


@dataclasses.dataclass(frozen=True)
class Prerequisites:
    """The selected cells split into those that can run here and those that cannot, and why.

    Attributes:
        ready: cells whose model and data are all here, in the order given.
        blocked: cells of a model with a problem.
        problems: every problem, by model in suite order.
    """

    ready: list[Cell]
    blocked: list[Cell]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def missing(self) -> dict[str, list[str]]:
        """Problems by model label."""
        out: dict[str, list[str]] = {}
        for p in self.problems:
            out.setdefault(p.model, []).append(p.message)
        return out

    @property
    def mistakes(self) -> list[Problem]:
        """The problems that are mistakes in the suite (exit 2): no install or download fixes them."""
        return [p for p in self.problems if p.mistake]

    def error(self) -> UserError:
        """The error ``run`` and ``validate`` stop with: a :class:`SuiteError` (exit 2) at the first mistake in
        the suite, listing the others; else a :class:`MissingPrerequisite` (exit 3) with which cells cannot run
        and what each model needs."""
        if self.mistakes:
            first, *others = self.mistakes
            more = "".join(f"\n  also {p.file}{f':{p.line}' if p.line else ''} {p.key}: {p.message}" for p in others)
            return SuiteError(first.message + more, first.file, first.line, first.key)
        total = len(self.ready) + len(self.blocked)
        lines = "\n".join(f"  {p}" for p in self.problems)
        return MissingPrerequisite(f"{len(self.blocked)} of {total} cells need what is missing here:\n{lines}")


def _ask(check: Callable[[Any], Iterable[str]], what: Any, owner: str) -> list[str]:
    try:
        return list(check(what))
    except Exception as e:  # a plugin's check that raises is itself a problem, not the end of validate
        return [f"{owner}'s check failed: {type(e).__name__}: {e}"]


def _problem(suite: Suite, label: str, message: str, entry: PathKey, default_key: str = "") -> Problem:
    """A problem located at its suite entry (its ``default_key``), or at the key a :class:`SuiteMistake` names."""
    key = (message.key if isinstance(message, SuiteMistake) else "") or default_key
    path = (*entry, key) if key else tuple(entry)
    file, line = suite.source.where(path)
    return Problem(label, str(message), file, line, key_path(path), isinstance(message, SuiteMistake))


def _of_model(suite: Suite, plugins: Plugins, model: ModelEntry) -> list[Problem]:
    found = []
    source = plugins.models.get(model.request.source)
    if source.problems:
        found += [
            _problem(suite, model.label, m, model.path, "name")
            for m in _ask(source.problems, model.request, f"model source {model.request.source!r}")
        ]
    dataset = model.dataset or suite.dataset
    if dataset is not None:
        spec = plugins.datasets.get(dataset.name)
        if spec.problems:
            entry = (*model.path, "dataset") if model.dataset else ("dataset",)
            found += [
                _problem(suite, model.label, m, entry) for m in _ask(spec.problems, dataset.config, f"dataset {dataset.name!r}")
            ]
    return found


def model_problems(suite: Suite, plugins: Plugins, models: Iterable[ModelEntry] | None = None) -> list[Problem]:
    """Problems of the suite's models (or of ``models``) and their datasets, found without building anything."""
    return [p for m in (suite.models if models is None else models) for p in _of_model(suite, plugins, m)]


def check_cells(suite: Suite, plugins: Plugins, cells: Iterable[Cell]) -> Prerequisites:
    """Which of ``cells`` can run here. Only the models these cells use are checked (``-k`` narrows it).

    A run that must not start without everything calls ``raise result.error()`` unless ``result.ok``.
    """
    cells = list(cells)
    models = list({id(c.model): c.model for c in cells}.values())
    problems = model_problems(suite, plugins, models)
    bad = {p.model for p in problems}
    return Prerequisites([c for c in cells if c.model.label not in bad], [c for c in cells if c.model.label in bad], problems)


def check_writable(path: str | os.PathLike[str], what: str = "the run folder", fix: str = "choose another --out") -> None:
    """Check that a folder can be made (or written) at ``path``; nothing is left behind.

    ``what`` names the folder and ``fix`` says how to point elsewhere (``run`` checks its ``--out``
    and the cache, ``$B2S_BENCH_CACHE``).

    Raises:
        UserError: naming the path, why it cannot be written and what to do.
    """
    wanted = Path(path).expanduser()
    target = wanted
    while not target.exists():  # the nearest existing folder is where mkdir(parents=True) starts
        if os.path.lexists(target):
            raise UserError(f"cannot make {what} {wanted}: {target} is a broken link; remove it or {fix}")
        if target.parent == target:
            break
        target = target.parent
    if not target.is_dir():
        raise UserError(f"cannot make {what} {wanted}: {target} is a file, not a folder; {fix}")
    try:
        fd, probe = tempfile.mkstemp(dir=target, prefix=".b2s-bench-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(
            f"cannot write {what} {wanted}: {target} is not writable ({e.strerror or e}); {fix}, "
            f"or make it writable (`ls -ld {target}` shows its owner and mode)"
        ) from None
