"""Every hook a b2s-bench plugin can implement. Declarations only.

A plugin is a module (or object) with functions marked ``@b2s_bench.hookimpl``, found through the
``b2s_bench`` entry-point group, a ``--plugin FILE.py`` flag or ``B2S_BENCH_PLUGINS``. Each
register hook receives a ``register`` callable; call it once per spec. Never write module globals.
A hook whose name is not declared here is an error (pluggy's ``check_pending``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .hookmarkers import hookspec

if TYPE_CHECKING:
    from .compression.compressor import CompressorSpec
    from .execution.executors import ExecutorSpec
    from .hookmarkers import CliOption
    from .metrics import MetricSpec
    from .reporting.spec import ReporterSpec
    from .sources import DatasetSpec, ModelSource
    from .tasks import TaskSpec


@hookspec
def b2s_register_compressors(register: Callable[[CompressorSpec], None]) -> None:
    """Register compressors: call ``register(CompressorSpec(...))`` for each."""


@hookspec
def b2s_register_models(register: Callable[[ModelSource], None]) -> None:
    """Register model sources: call ``register(ModelSource(...))`` for each prefix (``timm``, ...)."""


@hookspec
def b2s_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register datasets: call ``register(DatasetSpec(...))`` for each."""


@hookspec
def b2s_register_tasks(register: Callable[[TaskSpec], None]) -> None:
    """Register tasks (what a dataset asks of a model, and the outputs its metrics read): call
    ``register(TaskSpec(...))`` for each."""


@hookspec
def b2s_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    """Register metrics: call ``register(MetricSpec(...))`` for each."""


@hookspec
def b2s_register_reporters(register: Callable[[ReporterSpec], None]) -> None:
    """Register reporters (leaderboard formats and plots): call ``register(ReporterSpec(...))``."""


@hookspec
def b2s_register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    """Register executors (where cells run: worker processes, Ray, Slurm): ``register(ExecutorSpec(...))``."""


@hookspec
def b2s_register_cli_options(register: Callable[[CliOption], None]) -> None:
    """Add command-line options to subcommands: ``register(CliOption("--data", ("run",), apply))``.

    The plugin owns the option: its ``apply`` receives the value before the suite is read, in the
    CLI's process and in every worker.
    """


@hookspec
def b2s_after_cell(record: Mapping[str, Any]) -> None:
    """Observe a finished cell's record (already written). Must not modify it."""
