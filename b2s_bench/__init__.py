"""b2s-bench: a benchmark for neural-network compression.

The top level is the contract a compressor plugin needs (``import b2s_bench as b2s``):

- **Registering**: :data:`hookimpl`, :class:`CliOption`, and the spec of every plugin kind:
  :class:`CompressorSpec`, :class:`ModelSource`, :class:`DatasetSpec`, :class:`TaskSpec`, :class:`MetricSpec`,
  :class:`ReporterSpec`, :class:`ExecutorSpec`; :func:`lazy` (a callable or Code class named
  ``"module:name"``, imported on first use, so registering imports no torch) and :func:`lazy_exports`.
- **The interface from the theory**: :class:`Code` (one compressed tensor: decoder g(φ), regularizer
  R(φ), exact bits), :class:`StoredTensorCode`, :class:`DecoderNetwork`, :class:`Compressed`,
  :func:`skeleton_of`, :class:`Context`, :class:`Progress`, :func:`weight_layers`, :data:`TRACKS`,
  :class:`Symbols` (a code's integer symbol streams, for entropy coding).
- **Coverage and targets**: :class:`NotApplicableError`, :class:`Target`, :func:`add_caveat`,
  :data:`INEFFECTIVE`, :data:`MIN_COVERAGE`.
- **Exact sizes**: :class:`SizeBreakdown`, :func:`header_bits` (the header rule), :func:`padded_groups`
  (the padding rule), :func:`ceil_log2`, :func:`sparse_index_bits`, :func:`inference_state`; bit packing:
  :func:`pack_bits`, :func:`unpack_bits`, :func:`pack_mask`, :func:`unpack_mask`.
- **Configs and errors**: :func:`check`, :func:`one_of`, :func:`build_config`, :data:`ADDED_SETTING`,
  :class:`ConfigError`, :class:`UserError`, :class:`UnknownNameError`, :class:`SuiteMistake` (exit 2),
  :class:`MissingPrerequisite` (exit 3); :func:`write_atomic`.

The rest of the public API is in seven faces, each with its own ``__all__`` (``from b2s_bench.reporting
import leaderboards``): :mod:`b2s_bench.sources` (models, data, the cache), :mod:`b2s_bench.metrics`
(the per-cell evaluation), :mod:`b2s_bench.fitting` (solvers, training loops, fidelity and
rate-distortion limits), :mod:`b2s_bench.calibration` (BN-statistics synthesis, data-free input
statistics, activation ranges), :mod:`b2s_bench.testing` (the contract check and tiny models),
:mod:`b2s_bench.reporting` (tables, statistics, theory checks) and :mod:`b2s_bench.execution`
(executors, workers, running a suite from code). Everything else is internal.

Names load lazily (PEP 562), so ``import b2s_bench`` is cheap and torch or pandas load only when a
name that needs them is used. Names that have moved still answer, with a DeprecationWarning naming
their new home, until the next release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_face

__version__ = "0.3.0"

#: name -> the core module that defines it
_EXPORTS: dict[str, str] = {
    # registering
    "hookimpl": "hookmarkers",
    "CliOption": "hookmarkers",
    "CompressorSpec": "compression.spec",
    "lazy": "compression.lazy",
    "lazy_exports": "compression.lazy",
    "ModelSource": "sources",
    "DatasetSpec": "sources",
    "TaskSpec": "tasks",
    "MetricSpec": "metrics",
    "ReporterSpec": "reporting.spec",
    "ExecutorSpec": "execution.executors",
    # the interface
    "Code": "compression.codes",
    "StoredTensorCode": "compression.codes",
    "DecoderNetwork": "compression.codes",
    "Symbols": "compression.codes",
    "Compressed": "compression.compressed",
    "skeleton_of": "compression.compressed",
    "Context": "compression.compressor",
    "Progress": "compression.compressor",
    "weight_layers": "compression.compressor",
    "TRACKS": "compression.compressor",
    # coverage and targets
    "NotApplicableError": "compression.coverage",
    "Target": "compression.coverage",
    "add_caveat": "compression.coverage",
    "INEFFECTIVE": "compression.coverage",
    "MIN_COVERAGE": "compression.coverage",
    # sizes and packing
    "SizeBreakdown": "compression.sizes",
    "header_bits": "compression.sizes",
    "padded_groups": "compression.sizes",
    "ceil_log2": "compression.sizes",
    "sparse_index_bits": "compression.sizes",
    "inference_state": "compression.sizes",
    "pack_bits": "compression.packing",
    "unpack_bits": "compression.packing",
    "pack_mask": "compression.packing",
    "unpack_mask": "compression.packing",
    # configs and errors
    "check": "config",
    "one_of": "config",
    "build_config": "config",
    "ADDED_SETTING": "config",
    "ConfigError": "config",
    "UserError": "errors",
    "UnknownNameError": "errors",
    "SuiteMistake": "errors",
    "MissingPrerequisite": "errors",
    "write_atomic": "store.records",
}
#: the public faces: sub-modules with their own __all__
_FACES = ("sources", "metrics", "fitting", "calibration", "testing", "reporting", "execution")

#: public names of 0.2 that moved in 0.3 -> their new home
_MOVED: dict[str, str] = {
    **{name: f"b2s_bench.sources.{name}" for name in ("ModelRequest", "LoadedModel", "LoadedData", "cache_dir", "file_digest")},
    **{name: f"b2s_bench.metrics.{name}" for name in ("Evaluation", "NotApplicable")},
    **{
        name: f"b2s_bench.fitting.{name}"
        for name in ("fit_network", "relative_error", "train_loop", "cosine_schedule", "TrainResult", "fidelity")
    },
    **{
        name: f"b2s_bench.testing.{name}"
        for name in ("check_compressor", "ContractReport", "tiny_model", "tiny_context", "TinyCNN", "TinyMLP")
    },
    **{
        name: f"b2s_bench.reporting.{name}"
        for name in (
            "ReportContext",
            "MetricMeta",
            "Record",
            "leaderboards",
            "failures",
            "primary_metric",
            "header",
            "short_labels",
            "BITS_PER_MB",
            "per_example_arrays",
            "sample_scale",
            "not_applicable",
            "caveat_notes",
            "NOT_APPLICABLE_TITLE",
            "CAVEAT_MARK",
            "paired_bootstrap",
            "Paired",
            "pooled_paired",
            "clusters_of",
            "theory_sections",
            "pareto_front",
        )
    },
    **{
        name: f"b2s_bench.execution.{name}"
        for name in (
            "Executor",
            "ExecutorOptions",
            "CellTask",
            "CellOutcome",
            "ActiveCell",
            "RunPlan",
            "b2s_environment",
            "execute_cell",
            "run_cells",
            "read_record",
            "cell_path",
            "load_plugins",
        )
    },
    # internal now: no plugin used them
    "conform_shapes": "b2s_bench.compression.compressed.conform_shapes",
    "FAMILIES": "b2s_bench.compression.tracks.FAMILIES",
    "config_to_dict": "b2s_bench.config.config_to_dict",
    **{
        name: f"b2s_bench.compression.sizes.{name}"
        for name in ("FP32", "dtype_bits", "fp32_bits", "HEADER_BITS_PER_DIM", "ARTIFACT_ALLOWANCE_BYTES", "SizeReport")
    },
}

__all__ = ["__version__", *_EXPORTS, *_FACES]

__getattr__, __dir__ = lazy_face(__name__, globals(), {**_EXPORTS, **{face: f"module:{face}" for face in _FACES}}, _MOVED)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from . import calibration, execution, fitting, metrics, reporting, sources, testing
    from .compression.codes import Code, DecoderNetwork, StoredTensorCode, Symbols
    from .compression.compressed import Compressed, skeleton_of
    from .compression.compressor import TRACKS, Context, Progress, weight_layers
    from .compression.coverage import INEFFECTIVE, MIN_COVERAGE, NotApplicableError, Target, add_caveat
    from .compression.lazy import lazy, lazy_exports
    from .compression.packing import pack_bits, pack_mask, unpack_bits, unpack_mask
    from .compression.sizes import (
        SizeBreakdown,
        ceil_log2,
        header_bits,
        inference_state,
        padded_groups,
        sparse_index_bits,
    )
    from .compression.spec import CompressorSpec
    from .config import ADDED_SETTING, ConfigError, build_config, check, one_of
    from .errors import MissingPrerequisite, SuiteMistake, UnknownNameError, UserError
    from .execution.executors import ExecutorSpec
    from .hookmarkers import CliOption, hookimpl
    from .metrics import MetricSpec
    from .reporting.spec import ReporterSpec
    from .sources import DatasetSpec, ModelSource
    from .store.records import write_atomic
    from .tasks import TaskSpec
