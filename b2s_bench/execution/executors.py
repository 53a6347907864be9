"""Where cells run: the executor interface, and the in-process executor.

The runner (:mod:`b2s_bench.execution.runner`) decides *which* cells run: it resumes, claims cells so that
several runs can share one folder, writes every record, and rebuilds reports. An executor decides
*where*: in this process, in long-lived worker processes, on a Ray cluster or on Slurm. Executors
are plugins (``b2s_register_executors``; the built-ins are in plugins/executors); the runner talks
to them through :class:`Executor`:
``submit`` a :class:`CellTask`, ``poll`` for :class:`CellOutcome` s, ``cancel``, ``close``.

A task carries a :class:`RunPlan`, everything a fresh process needs to compute a cell of the run
(the suite file, the plugins chosen, plugin options, the device), and the cell's id. A worker turns
it into a record with :func:`b2s_bench.execution.worker.execute`. A worker that dies or runs past its time
becomes an outcome with a ``failure`` cause; the runner records the cell as failed and goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = [
    "RunPlan",
    "CellTask",
    "CellOutcome",
    "ActiveCell",
    "Executor",
    "ExecutorOptions",
    "ExecutorSpec",
    "b2s_environment",
]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What any process needs to compute cells of a run. Plain data: it pickles to workers."""

    suite_file: str
    out_dir: str
    device: str  # "cpu" or "cuda", resolved by the driver
    plugin_files: tuple[str, ...] = ()
    plugin_disable: tuple[str, ...] = ()
    plugin_options: tuple[tuple[str, Any], ...] = ()  # (flag, value) of plugin-owned CLI options
    threads: int | None = None  # torch CPU threads per worker
    cell_timeout: float | None = None


@dataclasses.dataclass(frozen=True)
class CellTask:
    plan: RunPlan
    cell_id: str
    name: str  # "model method", for progress and messages
    wants_cuda: bool = False
    cell_timeout: float | None = None  # seconds; None: no limit


@dataclasses.dataclass(frozen=True)
class CellOutcome:
    """A finished task: the cell's record, or why no record came back (the worker died, timed out)."""

    cell_id: str
    record: Mapping[str, Any] | None = None
    failure: str | None = None  # "killed by SIGSEGV", "exit 3", "timed out after 60 s", ...
    host: str = ""
    seconds: float = 0.0
    stored: bool = False  # the worker already wrote the record into the run folder (shared storage)


@dataclasses.dataclass(frozen=True)
class ActiveCell:
    cell_id: str
    name: str
    host: str
    started: float  # time.time()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorOptions:
    """What a run asks of its executor (from the CLI and the suite's ``runtime:``).

    ``settings`` is the suite's ``runtime: {executor: {NAME: {...}}}`` section for this executor,
    which the core passes through untouched: an instance of the spec's ``settings`` dataclass when
    the plugin gives one (already validated against the suite file), else the read-only mapping as
    written (empty when the suite has none). The cell time limit travels with each task
    (:attr:`CellTask.cell_timeout`).
    """

    workers: int | None = None  # None: the executor's own default ("auto")
    device: str = "cpu"
    threads: int | None = None
    settings: Any = dataclasses.field(default_factory=dict)
    detach: bool = False
    log: Callable[[str], None] = print


class Executor(Protocol):
    """Runs cells somewhere. ``capacity`` cells may be in flight at once.

    An executor whose workers claim cells and write records themselves in the shared run folder (a
    batch system's jobs, which outlive the driver) sets ``claims_cells = True``: the runner then
    neither claims its cells nor writes their records, and reports outcomes with ``stored=True``.
    """

    capacity: int

    def submit(self, task: CellTask) -> None: ...

    def poll(self, timeout: float) -> list[CellOutcome]:
        """Outcomes of tasks finished since the last poll, waiting up to ``timeout`` s for one."""
        ...

    def active(self) -> list[ActiveCell]: ...

    def cancel(self, cell_id: str) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    """An executor plugin.

    Attributes:
        create: builds the executor for one run.
        rank: the default executor is the registered one with the lowest rank.
        detaches: whether it can submit and return (``--detach``), leaving the work to run.
        requires: what to install when it cannot be created (shown in the error).
        settings: a frozen dataclass for its section ``runtime: {executor: {NAME: {...}}}`` of a
            suite: the suite loader builds it from that section (errors name the file, line and key)
            and the executor gets it as ``ExecutorOptions.settings``. None: the section is handed over
            as a read-only mapping.
    """

    name: str
    create: Callable[[ExecutorOptions], Executor]
    description: str = ""
    rank: int = 100
    detaches: bool = False
    requires: str = ""
    settings: type | None = None


def b2s_environment() -> dict[str, str]:
    """The ``B2S_*`` variables of this process (plugins, cache, data roots), for workers that do not
    inherit the driver's environment (Ray workers, batch jobs)."""
    import os

    return {k: v for k, v in os.environ.items() if k.startswith("B2S_") or k in ("OMP_WAIT_POLICY",)}
