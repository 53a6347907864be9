"""Records: one JSON file per cell, written atomically; the only input of every report.

Schema ``b2s-bench/record/1`` (see README "Records"):

- ``cell_id``, ``suite``, ``status`` ("ok" or "error"), ``label``, ``track``, ``family``, ``seed``
- ``model``: name, label, pretrained, weights, checkpoint, params
- ``dataset``: name and options (or null)
- ``compressor``: pipeline: [{name, version, family, track, config}], identity (bool)
- ``metrics``: name -> {value, unit, higher_is_better}
- ``size``: breakdown (bits by part), total_bits, baseline_bits, layers_*, ratio_model, ratio_layers,
  bits_per_weight, disk_bytes
- ``timings``: seconds for build, compress, evaluate, total
- ``details``: compressor and metric facts (per-layer values, chosen ranks, ...)
- ``environment``: device, device_name, python, torch, b2s_bench, git_commit, platform, plugins
- ``error``: {type, message, traceback} or null; ``started_at``, ``finished_at`` (UTC ISO 8601)
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

import torch

__all__ = ["SCHEMA", "Record", "write_record", "read_record", "iter_records", "environment", "cell_path"]

SCHEMA = "b2s-bench/record/1"
CELLS = "cells"


class MetricValue(TypedDict):
    value: float | None
    unit: str
    higher_is_better: bool


class Record(TypedDict, total=False):
    schema: str
    cell_id: str
    suite: str
    status: str
    label: str
    track: str
    family: str
    seed: int
    model: dict[str, Any]
    dataset: dict[str, Any] | None
    compressor: dict[str, Any]
    metrics: dict[str, MetricValue]
    size: dict[str, Any]
    timings: dict[str, float]
    details: dict[str, Any]
    environment: dict[str, Any]
    error: dict[str, str] | None
    started_at: str
    finished_at: str


def _json_safe(value: Any) -> Any:
    """NaN and inf are not JSON; store them as null (and strings for inf) rather than invalid JSON."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    return value


def cell_path(out_dir: str | os.PathLike[str], cell_id: str) -> Path:
    return Path(out_dir) / CELLS / f"{cell_id}.json"


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(out_dir: str | os.PathLike[str], record: Record) -> Path:
    path = cell_path(out_dir, record["cell_id"])
    write_atomic(path, json.dumps(_json_safe(dict(record)), indent=1, sort_keys=True, allow_nan=False))
    return path


def read_record(path: str | os.PathLike[str]) -> Record | None:
    """A record, or None when the file is not a complete record of this schema."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "status" not in data:
        return None
    return data  # type: ignore[return-value]


def iter_records(out_dir: str | os.PathLike[str]) -> Iterator[Record]:
    """Every valid record under ``out_dir/cells``, in file-name order."""
    folder = Path(out_dir) / CELLS
    if not folder.is_dir():
        return
    for p in sorted(folder.glob("*.json")):
        rec = read_record(p)
        if rec is not None:
            yield rec


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def environment(device: torch.device, plugin_versions: dict[str, str]) -> dict[str, Any]:
    from . import __version__

    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "b2s_bench": __version__,
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "plugins": plugin_versions,
    }
