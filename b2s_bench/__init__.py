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
    "hookimpl": "hookmarkers",
    "load_plugins": "plugins",
    # the interface
    "Code": "interface", "StoredTensorCode": "interface", "DecoderNetwork": "interface",
    "CompressorSpec": "interface", "Context": "interface", "Progress": "interface",
    "TRACKS": "interface", "FAMILIES": "interface",
    "Compressed": "compressed", "skeleton_of": "compressed", "conform_shapes": "compressed",
    # sizes and packing
    "SizeBreakdown": "sizes", "SizeReport": "sizes", "FP32": "sizes", "ceil_log2": "sizes",
    "dtype_bits": "sizes", "sparse_index_bits": "sizes", "inference_state": "sizes", "fp32_bits": "sizes",
    "HEADER_BITS_PER_DIM": "sizes", "ARTIFACT_ALLOWANCE_BYTES": "sizes", "header_bits": "sizes",
    "padded_groups": "sizes",
    "pack_bits": "packing", "unpack_bits": "packing", "pack_mask": "packing", "unpack_mask": "packing",
    # configs and errors
    "ADDED_SETTING": "config", "ConfigError": "config", "build_config": "config", "check": "config",
    "one_of": "config", "config_to_dict": "config",
    "UserError": "errors", "UnknownNameError": "errors", "SuiteMistake": "errors", "MissingPrerequisite": "errors",
    # coverage, targets and caveats
    "NotApplicableError": "coverage", "Target": "coverage", "add_caveat": "coverage", "MIN_COVERAGE": "coverage",
    "INEFFECTIVE": "coverage",
    # helpers
    "weight_layers": "targets", "fit_network": "solve", "relative_error": "solve",
    "train_loop": "training", "cosine_schedule": "training", "TrainResult": "training", "cache_dir": "paths",
    "file_digest": "paths", "write_atomic": "records", "Record": "records",
    # specs of the other plugin kinds
    "MetricSpec": "metrics", "Evaluation": "metrics", "NotApplicable": "metrics",
    "ReporterSpec": "reportspec", "ReportContext": "reportspec", "MetricMeta": "reportspec",
    "ModelSource": "sources", "ModelRequest": "sources", "LoadedModel": "sources", "DatasetSpec": "sources",
    "LoadedData": "sources", "CliOption": "hookmarkers",
    # executors
    "ExecutorSpec": "execution", "ExecutorOptions": "execution", "Executor": "execution", "CellTask": "execution",
    "CellOutcome": "execution", "ActiveCell": "execution", "RunPlan": "execution",
    "b2s_environment": "execution", "execute_cell": "worker", "run_cells": "cooperate", "read_record": "records",
    "cell_path": "records",
    # tables for reporters (pandas loads on use)
    "leaderboards": "report", "failures": "report", "primary_metric": "report", "header": "report",
    "short_labels": "report",
    "BITS_PER_MB": "report", "per_example_arrays": "report", "sample_scale": "report",
    "not_applicable": "report", "caveat_notes": "report", "NOT_APPLICABLE_TITLE": "report", "CAVEAT_MARK": "report",
    "paired_bootstrap": "stats", "Paired": "stats", "pooled_paired": "stats", "clusters_of": "samples",
    "theory_sections": "theory", "pareto_front": "theory",
    # testing a plugin
    "check_compressor": "testing", "tiny_model": "testing", "tiny_context": "testing", "TinyCNN": "testing",
    "TinyMLP": "testing", "ContractReport": "testing",
}
_SUBMODULES = ("fidelity",)

__all__ = ["__version__", *_EXPORTS, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'b2s_bench' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from . import fidelity
    from .compressed import Compressed, conform_shapes, skeleton_of
    from .config import ADDED_SETTING, ConfigError, build_config, check, config_to_dict, one_of
    from .cooperate import run_cells
    from .coverage import INEFFECTIVE, MIN_COVERAGE, NotApplicableError, Target, add_caveat
    from .errors import MissingPrerequisite, SuiteMistake, UnknownNameError, UserError
    from .execution import (
        ActiveCell,
        CellOutcome,
        CellTask,
        Executor,
        ExecutorOptions,
        ExecutorSpec,
        RunPlan,
        b2s_environment,
    )
    from .hookmarkers import CliOption, hookimpl
    from .interface import FAMILIES, TRACKS, Code, CompressorSpec, Context, DecoderNetwork, Progress, StoredTensorCode
    from .metrics import Evaluation, MetricSpec, NotApplicable
    from .packing import pack_bits, pack_mask, unpack_bits, unpack_mask
    from .paths import cache_dir, file_digest
    from .plugins import load_plugins
    from .records import Record, cell_path, read_record, write_atomic
    from .report import (
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
    from .reportspec import MetricMeta, ReportContext, ReporterSpec
    from .samples import clusters_of
    from .sizes import (
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
    from .solve import fit_network, relative_error
    from .sources import DatasetSpec, LoadedData, LoadedModel, ModelRequest, ModelSource
    from .stats import Paired, paired_bootstrap, pooled_paired
    from .targets import weight_layers
    from .testing import ContractReport, TinyCNN, TinyMLP, check_compressor, tiny_context, tiny_model
    from .theory import pareto_front, theory_sections
    from .training import TrainResult, cosine_schedule, train_loop
    from .worker import execute_cell
