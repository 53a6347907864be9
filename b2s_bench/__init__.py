"""b2s-bench: a benchmark for neural-network compression.

The public API for plugin authors: :data:`hookimpl`, the interface from the theory
(:class:`Code`, :class:`Compressed`, :class:`CompressorSpec`, :class:`SizeBreakdown`, ...), and the
specs of models, datasets, metrics and reporters. See the README's "Writing a plugin".
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle threads sleep instead of spinning. On small shared machines and
# under pytest-xdist (several processes, each with its own threads) spinning made CPU work up to 10x
# slower; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .compression import (  # noqa: E402
    FAMILIES,
    TRACKS,
    Code,
    Compressed,
    CompressorSpec,
    Context,
    DecoderNetwork,
    StoredTensorCode,
)
from .config import ADDED_SETTING, ConfigError, build_config, check, config_to_dict, one_of  # noqa: E402
from .metrics import Evaluation, MetricSpec, NotApplicable  # noqa: E402
from .plugins import hookimpl, load_plugins  # noqa: E402
from .reportspec import ReportContext, ReporterSpec  # noqa: E402
from .sizes import SizeBreakdown, SizeReport  # noqa: E402
from .solve import fit_network  # noqa: E402
from .sources import DatasetSpec, LoadedData, LoadedModel, ModelRequest, ModelSource  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "load_plugins",
    "Code",
    "Compressed",
    "CompressorSpec",
    "Context",
    "DecoderNetwork",
    "StoredTensorCode",
    "SizeBreakdown",
    "SizeReport",
    "TRACKS",
    "FAMILIES",
    "ConfigError",
    "ADDED_SETTING",
    "build_config",
    "check",
    "one_of",
    "config_to_dict",
    "MetricSpec",
    "Evaluation",
    "NotApplicable",
    "ReporterSpec",
    "ReportContext",
    "ModelSource",
    "ModelRequest",
    "LoadedModel",
    "DatasetSpec",
    "LoadedData",
    "fit_network",
]
