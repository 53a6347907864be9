"""Records: one JSON file per cell, written atomically; the only input of every report.

Schema ``b2s-bench/record/2`` (see docs/records-and-sizes.md):

- ``cell_id`` (the hash of ``fingerprint``; the file is ``cells/<cell_id>.json``)
- ``fingerprint``: everything that decides the result (model and weights, data, pipeline and
  configs, seed, metric versions, device, the core's accounting version)
- ``suite``, ``status`` ("ok", "error", or "not-applicable" / "short-of-target": computed, but the
  result covers too little of the model or misses its config's target; see :mod:`b2s_bench.compression.coverage`
  and ``details.status_reason``), ``label``, ``track``, ``family``, ``seed``
- ``model``: name, label, pretrained, weights, checkpoint, params
- ``dataset``: name and options (or null)
- ``compressor``: pipeline: [{name, version, family, track, config, defaults_source, changed, budget,
  at_defaults}] (the last four: the stage's operating point, :func:`b2s_bench.execution.cell.operating_point`;
  absent from older records), identity (bool)
- ``metrics``: name -> {value, unit, higher_is_better}
- ``size``: breakdown (bits by part), total_bits, baseline_bits, layers_*, ratio_model, ratio_layers,
  bits_per_weight, disk_bytes
- ``timings``: seconds for build, compress, evaluate, total
- ``details``: compressor and metric facts (per-layer values, chosen ranks, ...); ``log`` (the cell's
  ``ctx.log`` messages) and ``warnings`` (its Python warnings, "Category: message (file:line)"), when any;
  the core adds ``coverage`` (the share of conv/linear weights the result changes), ``target`` (asked
  against achieved, when the compressor states one), ``status_reason`` (why a cell is not ``ok``
  without an error) and ``caveats`` (a list of {kind, message}: settings without effect, unconverged fits)
- ``environment``: device, device_name, python, torch, b2s_bench, git_commit, platform, plugins
- ``per_example``: per-example outcomes of metrics that have them (for confidence intervals)
- ``error``: {type, message, traceback} or null; ``started_at``, ``finished_at`` (UTC ISO 8601)

A record is valid only when :func:`record_problems` finds nothing: a complete schema, and a
``cell_id`` that equals its file name, the hash of its own fingerprint and the cell it stands for.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, TypedDict

from ..errors import CannotWrite

__all__ = [
    "SCHEMA",
    "STATUSES",
    "SKIPPED_STATUSES",
    "DONE_STATUSES",
    "Record",
    "write_record",
    "read_record",
    "iter_records",
    "environment",
    "cell_path",
    "record_problems",
    "fingerprint_id",
    "write_atomic",
    "load_json",
    "cannot_write",
    "WRITE_ERRNOS",
]

SCHEMA = "b2s-bench/record/2"
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
    fingerprint: dict[str, Any]
    per_example: dict[str, Any]


#: key -> the types a valid record's value may have
REQUIRED: dict[str, tuple[type, ...]] = {
    "schema": (str,),
    "cell_id": (str,),
    "suite": (str,),
    "status": (str,),
    "label": (str,),
    "track": (str,),
    "family": (str,),
    "seed": (int,),
    "model": (dict,),
    "dataset": (dict, type(None)),
    "compressor": (dict,),
    "metrics": (dict,),
    "size": (dict,),
    "timings": (dict,),
    "details": (dict,),
    "environment": (dict,),
    "error": (dict, type(None)),
    "started_at": (str,),
    "finished_at": (str,),
    "fingerprint": (dict,),
}
#: not ``ok``, yet computed and no failure: "done" for resume, exit code 0, kept out of rankings
SKIPPED_STATUSES = ("not-applicable", "short-of-target")
STATUSES = ("ok", "error", *SKIPPED_STATUSES)
#: a cell with a record of one of these is not computed again
DONE_STATUSES = ("ok", *SKIPPED_STATUSES)


def fingerprint_id(fingerprint: Any) -> str:
    """A cell's id: the first 16 hex digits of the SHA-256 of its canonical JSON fingerprint."""
    blob = json.dumps(fingerprint, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def record_problems(data: Any, file_id: str | None = None, expected_id: str | None = None) -> list[str]:
    """Why ``data`` is not a valid record (an empty list when it is).

    Args:
        file_id: the record file's name without ``.json``; the record's ``cell_id`` must equal it.
        expected_id: the id of the cell it is read for.
    """
    if not isinstance(data, dict):
        return [f"not a JSON object but {type(data).__name__}"]
    if data.get("schema") != SCHEMA:
        return [f"schema is {data.get('schema')!r}, not {SCHEMA!r}"]
    problems = [
        f"{key!r} is missing" if key not in data else f"{key!r} is a {type(data[key]).__name__}"
        for key, types in REQUIRED.items()
        if key not in data or not isinstance(data[key], types) or (bool in types) != isinstance(data[key], bool)
    ]
    if problems:
        return problems
    if data["status"] not in STATUSES:
        problems.append(f"status {data['status']!r} is not one of {STATUSES}")
    if data["status"] == "ok" and not isinstance(data["size"].get("total_bits"), int):
        problems.append("an ok record without size.total_bits")
    problems += _size_problems(data["size"])
    cid = data["cell_id"]
    if file_id is not None and cid != file_id:
        problems.append(f"its cell_id {cid!r} is not its file name {file_id!r}")
    if fingerprint_id(data["fingerprint"]) != cid:
        problems.append(f"its cell_id {cid!r} is not the hash of its fingerprint ({fingerprint_id(data['fingerprint'])!r})")
    if expected_id is not None and cid != expected_id:
        problems.append(f"it stands for cell {cid!r}, not {expected_id!r}")
    return problems


def _size_problems(size: dict[str, Any]) -> list[str]:
    """Why a record's size block does not add up (a hand edit): the parts of ``breakdown`` must sum to
    ``total_bits``, and ``ratio_model`` must be ``baseline_bits / total_bits``. Empty for a block without them."""
    total, baseline, parts = size.get("total_bits"), size.get("baseline_bits"), size.get("breakdown")
    if not isinstance(total, int) or isinstance(total, bool):
        return []
    found = []
    if isinstance(parts, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in parts.values()):
        if sum(parts.values()) != total:
            found.append(f"size.total_bits {total} is not the sum of size.breakdown ({sum(parts.values())})")
    ratio = size.get("ratio_model")
    if isinstance(baseline, int) and isinstance(ratio, (int, float)) and total > 0:
        if not math.isclose(float(ratio), baseline / total, rel_tol=1e-9):
            found.append(f"size.ratio_model {ratio} is not size.baseline_bits / size.total_bits ({baseline / total})")
    return found


def _json_safe(value: Any) -> Any:
    """NaN and inf are not JSON; store them as null (and strings for inf) rather than invalid JSON. A set is
    stored as a sorted list, and any other value JSON has no type for (bytes, an object a plugin put in its
    info) as its text: a record is always written, never a crash of the run."""
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
    if hasattr(value, "tolist"):  # a tensor or a numpy array or scalar (no torch import: reports stay light)
        return _json_safe(value.tolist())
    if isinstance(value, (set, frozenset)):
        return sorted((_json_safe(v) for v in value), key=repr)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


json_safe = _json_safe  # the public name: a record as it will be written (a worker sends it so)


def cell_path(out_dir: str | os.PathLike[str], cell_id: str) -> Path:
    return Path(out_dir) / CELLS / f"{cell_id}.json"


def temp_tag() -> str:
    """Temporary files carry their writer (host and pid), so a later run can tell a leftover of a
    killed process from a file another live run is writing right now."""
    return f"{host_name()}-{os.getpid()}"


def host_name() -> str:
    """This machine's name, without dots (it goes into file names that are split at dots)."""
    return (platform.node() or "host").replace(".", "_")


#: why a write can fail that is not the cell's or the input's fault: the folder is full (ENOSPC, EDQUOT),
#: read-only (EROFS) or not ours (EACCES, EPERM)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _amount(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale / 10:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} KB"


def cannot_write(path: str | os.PathLike[str], error: OSError, needed: int | None = None) -> CannotWrite:
    """The :class:`CannotWrite` for ``error`` (one of :data:`WRITE_ERRNOS`) met writing ``path``: which
    folder is full or read-only, how much was needed and how much is free."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    reason = os.strerror(error.errno) if error.errno else str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f", {_amount(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = ""
        need = f"{_amount(needed)} needed" if needed is not None else "more space needed"
        what = f"{folder} is full ({reason}: {need}{free}); free some space there"
    elif error.errno == errno.EROFS:
        what = f"{folder} is on a read-only file system; remount it writable"
    else:
        what = f"{folder} is not writable by this user ({reason}; `ls -ld {folder}` shows its owner and mode); make it writable"
    return CannotWrite(
        f"could not write {path}: {what} or write elsewhere (--out, --to), then run the same command "
        "again (finished cells are kept)"
    )


def umask() -> int:
    """This process's umask, without changing it where Linux tells it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then ``os.replace`` it into place.

    The file gets ``0o666 & ~umask`` like any file the user makes (mkstemp's 0600 locked a team
    sharing a run folder out). A full or read-only folder raises :class:`CannotWrite` (nothing is
    left behind), never a bare OSError.
    """
    path = Path(path)
    blob = data.encode() if isinstance(data, str) else data
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{temp_tag()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(OSError):  # a file system without modes (some FUSE, SMB) keeps its own
                os.fchmod(f.fileno(), 0o666 & ~umask())
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            raise cannot_write(path, e, len(blob)) from e
        raise


def write_record(out_dir: str | os.PathLike[str], record: Record) -> Path:
    path = cell_path(out_dir, record["cell_id"])
    write_atomic(path, json.dumps(_json_safe(dict(record)), indent=1, sort_keys=True, allow_nan=False))
    return path


def load_json(path: str | os.PathLike[str]) -> tuple[Any, str | None]:
    """(data, None), or (None, why it could not be read: truncated, not UTF-8, nested too deep for the
    parser's stack (a RecursionError), ...). Never raises for a file's content."""
    try:
        return json.loads(Path(path).read_text()), None
    except FileNotFoundError:
        return None, "no such file"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return None, f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def read_record(path: str | os.PathLike[str], expected_id: str | None = None) -> Record | None:
    """A valid record, or None (missing, unreadable, or failing :func:`record_problems`)."""
    data, _ = load_json(path)
    if data is None or record_problems(data, Path(path).stem, expected_id):
        return None
    return data


def iter_records(out_dir: str | os.PathLike[str], dropped: list[tuple[Path, str]] | None = None) -> Iterator[Record]:
    """Every valid record under ``out_dir/cells``, in file-name order.

    Args:
        dropped: when given, receives (file, why) for every file that is not a valid record, so a
            report can name each one it leaves out.
    """
    folder = Path(out_dir) / CELLS
    if not folder.is_dir():
        return
    for p in sorted(folder.glob("*.json")):
        data, why = load_json(p)
        problems = [why] if why else record_problems(data, p.stem)
        if problems:
            if dropped is not None:
                dropped.append((p, "; ".join(problems)))
            continue
        yield data


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def device_name(device: Any) -> str:
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def environment(device: Any, plugin_versions: dict[str, str]) -> dict[str, Any]:
    import torch

    from .. import __version__

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
