"""b2s-bench: a benchmark for neural-network compression.

This module is the public API, and the only module a plugin needs to import (``import b2s_bench as
b2s``). The built-in plugins import nothing else from the core; a test checks it. What is here:

- **Registering**: :data:`hookimpl` and the specs a plugin registers: :class:`CompressorSpec`,
  :class:`ModelSource`, :class:`DatasetSpec`, :class:`MetricSpec`, :class:`ReporterSpec`,
  :class:`ExecutorSpec` (with :class:`Executor`, :class:`ExecutorOptions`, :class:`CellTask`,
  :class:`CellOutcome`, :class:`ActiveCell`, :class:`RunPlan`; :func:`execute_cell` turns a task into a record in any process,
  :func:`run_cells` is a batch job's cooperating run, :func:`read_record` and :func:`cell_path`
  read a run folder).
- **The interface from the theory**: :class:`Code` (one compressed tensor: decoder g(φ),
  regularizer R(φ), exact bits), :class:`StoredTensorCode`, :class:`DecoderNetwork`,
  :class:`Compressed`, :class:`Context`, :data:`TRACKS`, :data:`FAMILIES`, :func:`skeleton_of`.
- **Exact sizes**: :class:`SizeBreakdown`, :class:`SizeReport`, :func:`ceil_log2`, :func:`dtype_bits`,
  :func:`sparse_index_bits`, :func:`inference_state`, :func:`header_bits` (the header rule),
  :func:`padded_groups` (the padding rule), :data:`HEADER_BITS_PER_DIM`; bit packing:
  :func:`pack_bits`, :func:`unpack_bits`, :func:`pack_mask`, :func:`unpack_mask`.
- **Configs**: :func:`check`, :func:`one_of`, :func:`build_config`, :func:`config_to_dict`,
  :data:`ADDED_SETTING`, :class:`ConfigError`; errors: :class:`UserError`, :class:`UnknownNameError`,
  :class:`SuiteMistake` (a ``problems`` item that is the suite's fault: exit 2, not 3),
  :class:`MissingPrerequisite` (exit 3: data, weights or a package missing here).
- **Coverage and targets**: :class:`NotApplicableError` (raised when nothing applies),
  :class:`Target` (asked against achieved, from ``CompressorSpec.target``), :func:`add_caveat`.
- **Helpers**: :func:`weight_layers` (the conv/linear weights a compressor targets),
  :func:`fit_network` and :func:`relative_error` (the generic solver), ``fidelity`` (per-tensor
  rel-MAE, cosine, PSNR), :func:`train_loop` (one seeded optimizer loop), :func:`cache_dir`,
  :func:`write_atomic`.
- **Evaluation and reports**: :class:`Evaluation`, :class:`NotApplicable`, :class:`ReportContext`,
  :class:`MetricMeta`, and the tables reporters are built from (:func:`leaderboards`,
  :func:`failures`, :func:`not_applicable`, :func:`caveat_notes`,
  :func:`theory_sections`, :func:`pareto_front`, :func:`primary_metric`; :func:`short_labels` cuts
  labels to a width, never two to the same text).
- **Testing a plugin**: :func:`check_compressor` (the contract every compressor passes; it returns a
  :class:`ContractReport`),
  :func:`tiny_model`, :class:`TinyCNN`, :class:`TinyMLP`, :func:`tiny_context`.

Names load lazily (PEP 562), so ``import b2s_bench`` is cheap and torch or pandas load only when a
name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: name -> the core module that defines it
_EXPORTS: dict[str, str] = {
    "hookimpl": "hookmarkers", "CliOption": "hookmarkers",
    "load_plugins": "plugins",
    "Code": "compression.interface", "StoredTensorCode": "compression.interface",
    "DecoderNetwork": "compression.interface", "CompressorSpec": "compression.interface",
    "Context": "compression.interface", "Progress": "compression.interface", "TRACKS": "compression.interface",
    "FAMILIES": "compression.interface",
    "Compressed": "compression.compressed", "skeleton_of": "compression.compressed",
    "conform_shapes": "compression.compressed",
    "SizeBreakdown": "compression.sizes", "SizeReport": "compression.sizes", "FP32": "compression.sizes",
    "ceil_log2": "compression.sizes", "dtype_bits": "compression.sizes", "sparse_index_bits": "compression.sizes",
    "inference_state": "compression.sizes", "fp32_bits": "compression.sizes",
    "HEADER_BITS_PER_DIM": "compression.sizes", "ARTIFACT_ALLOWANCE_BYTES": "compression.sizes",
    "header_bits": "compression.sizes", "padded_groups": "compression.sizes",
    "pack_bits": "compression.packing", "unpack_bits": "compression.packing", "pack_mask": "compression.packing",
    "unpack_mask": "compression.packing",
    "ADDED_SETTING": "config", "ConfigError": "config", "build_config": "config", "check": "config",
    "one_of": "config", "config_to_dict": "config",
    "UserError": "errors", "UnknownNameError": "errors", "SuiteMistake": "errors", "MissingPrerequisite": "errors",
    "NotApplicableError": "compression.coverage", "Target": "compression.coverage",
    "add_caveat": "compression.coverage", "MIN_COVERAGE": "compression.coverage",
    "INEFFECTIVE": "compression.coverage",
    "weight_layers": "compression.targets",
    "fit_network": "fitting.solve", "relative_error": "fitting.solve",
    "train_loop": "fitting.training", "cosine_schedule": "fitting.training", "TrainResult": "fitting.training",
    "cache_dir": "paths", "file_digest": "paths",
    "write_atomic": "store.records", "Record": "store.records", "read_record": "store.records",
    "cell_path": "store.records",
    "MetricSpec": "metrics", "Evaluation": "metrics", "NotApplicable": "metrics",
    "ReporterSpec": "reporting.spec", "ReportContext": "reporting.spec", "MetricMeta": "reporting.spec",
    "ModelSource": "sources", "ModelRequest": "sources", "LoadedModel": "sources", "DatasetSpec": "sources",
    "LoadedData": "sources",
    "ExecutorSpec": "execution.executors", "ExecutorOptions": "execution.executors",
    "Executor": "execution.executors", "CellTask": "execution.executors", "CellOutcome": "execution.executors",
    "ActiveCell": "execution.executors", "RunPlan": "execution.executors", "b2s_environment": "execution.executors",
    "execute_cell": "execution.worker",
    "run_cells": "execution.cooperate",
    "leaderboards": "reporting.tables", "failures": "reporting.tables", "primary_metric": "reporting.tables",
    "header": "reporting.tables", "short_labels": "reporting.tables", "BITS_PER_MB": "reporting.tables",
    "per_example_arrays": "reporting.tables", "sample_scale": "reporting.tables",
    "not_applicable": "reporting.tables", "caveat_notes": "reporting.tables",
    "NOT_APPLICABLE_TITLE": "reporting.tables", "CAVEAT_MARK": "reporting.tables",
    "paired_bootstrap": "reporting.stats", "Paired": "reporting.stats", "pooled_paired": "reporting.stats",
    "clusters_of": "store.samples",
    "theory_sections": "reporting.theory", "pareto_front": "reporting.theory",
    "check_compressor": "testing", "tiny_model": "testing", "tiny_context": "testing", "TinyCNN": "testing",
    "TinyMLP": "testing", "ContractReport": "testing",
}
_SUBMODULES = {"fidelity": "fitting.fidelity"}

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    else:
        raise AttributeError(f"module 'b2s_bench' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from .compression.compressed import Compressed, conform_shapes, skeleton_of
    from .compression.coverage import INEFFECTIVE, MIN_COVERAGE, NotApplicableError, Target, add_caveat
    from .compression.interface import (
        FAMILIES,
        TRACKS,
        Code,
        CompressorSpec,
        Context,
        DecoderNetwork,
        Progress,
        StoredTensorCode,
    )
    from .compression.packing import pack_bits, pack_mask, unpack_bits, unpack_mask
    from .compression.sizes import (
        ARTIFACT_ALLOWANCE_BYTES,
        FP32,
        HEADER_BITS_PER_DIM,
        SizeBreakdown,
        SizeReport,
        ceil_log2,
        dtype_bits,
        fp32_bits,
        header_bits,
        inference_state,
        padded_groups,
        sparse_index_bits,
    )
    from .compression.targets import weight_layers
    from .config import ADDED_SETTING, ConfigError, build_config, check, config_to_dict, one_of
    from .errors import MissingPrerequisite, SuiteMistake, UnknownNameError, UserError
    from .execution.cooperate import run_cells
    from .execution.executors import (
        ActiveCell,
        CellOutcome,
        CellTask,
        Executor,
        ExecutorOptions,
        ExecutorSpec,
        RunPlan,
        b2s_environment,
    )
    from .execution.worker import execute_cell
    from .fitting import fidelity
    from .fitting.solve import fit_network, relative_error
    from .fitting.training import TrainResult, cosine_schedule, train_loop
    from .hookmarkers import CliOption, hookimpl
    from .metrics import Evaluation, MetricSpec, NotApplicable
    from .paths import cache_dir, file_digest
    from .plugins import load_plugins
    from .reporting.spec import MetricMeta, ReportContext, ReporterSpec
    from .reporting.stats import Paired, paired_bootstrap, pooled_paired
    from .reporting.tables import (
        BITS_PER_MB,
        CAVEAT_MARK,
        NOT_APPLICABLE_TITLE,
        caveat_notes,
        failures,
        header,
        leaderboards,
        not_applicable,
        per_example_arrays,
        primary_metric,
        sample_scale,
        short_labels,
    )
    from .reporting.theory import pareto_front, theory_sections
    from .sources import DatasetSpec, LoadedData, LoadedModel, ModelRequest, ModelSource
    from .store.records import Record, cell_path, read_record, write_atomic
    from .store.samples import clusters_of
    from .testing import ContractReport, TinyCNN, TinyMLP, check_compressor, tiny_context, tiny_model
