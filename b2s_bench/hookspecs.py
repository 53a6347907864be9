"""Every hook a b2s-bench plugin can implement. Declarations only.

A plugin is a module (or object) with functions marked ``@b2s_bench.hookimpl``, found through the
``b2s_bench`` entry-point group, a ``--plugin FILE.py`` flag or ``B2S_BENCH_PLUGINS``. Each
register hook receives a ``register`` callable; call it once per spec. Never write module globals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("b2s_bench")


@hookspec
def b2s_register_compressors(register: Callable[[Any], None]) -> None:
    """Register compressors: call ``register(CompressorSpec(...))`` for each."""


@hookspec
def b2s_register_models(register: Callable[[Any], None]) -> None:
    """Register model sources: call ``register(ModelSource(...))`` for each prefix (``timm``, ...)."""


@hookspec
def b2s_register_datasets(register: Callable[[Any], None]) -> None:
    """Register datasets: call ``register(DatasetSpec(...))`` for each."""


@hookspec
def b2s_register_metrics(register: Callable[[Any], None]) -> None:
    """Register metrics: call ``register(MetricSpec(...))`` for each."""


@hookspec
def b2s_register_reporters(register: Callable[[Any], None]) -> None:
    """Register reporters (leaderboard formats and plots): call ``register(ReporterSpec(...))``."""


@hookspec
def b2s_after_cell(record: dict[str, Any]) -> None:
    """Observe a finished cell's record (already written). Must not modify it."""
