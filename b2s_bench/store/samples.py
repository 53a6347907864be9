"""Per-example outcomes in records: compact, JSON-safe encodings of 1-D arrays.

Metrics leave one value per evaluation example in ``Evaluation.per_example`` (for example a
top-1 hit as a bool, or a per-example KL divergence as a float); the runner stores
``record["per_example"] = encode_all(ev.per_example)``, and reports :func:`decode` them to draw
confidence intervals and paired tests over the same examples (:mod:`b2s_bench.reporting.stats`).

Encodings (each a dict with ``dtype``, ``n`` and base64 ``data``):

- ``bool``: bit-packed (little bit order), 1 bit an example: 10,000 examples take 1,668 characters;
- ``float16``: when every value survives the round trip to float16 within its precision (zero, or a
  magnitude in float16's normal range, or not finite), else ``float32``: a KL of 1e-9 stays exact;
- ``int32``: integer outcomes (for example a rank).

Examples that are not independent (the views of one photo) carry cluster ids: the runner stores
``record["dataset"]["clusters"] = encode_clusters(data.clusters)`` (int32, one id per example, in
the order of the per-example outcomes) and reports read them back with :func:`clusters_of`, so their
intervals resample whole clusters (:mod:`b2s_bench.reporting.stats`). No ``clusters`` key: every example is
its own cluster.

Only numpy is needed here (no torch): reports and ``b2s-bench compare`` decode without it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["encode", "encode_all", "decode", "encode_clusters", "clusters_of", "FLOAT16_MIN_NORMAL", "FLOAT16_MAX"]

FLOAT16_MIN_NORMAL = float(np.finfo(np.float16).tiny)  # 6.1e-5: below it float16 loses relative precision
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504


def _as_numpy(values: Any) -> np.ndarray:
    """A flat numpy array from a tensor (on any device) or anything numpy reads."""
    if hasattr(values, "detach"):  # a torch tensor: no torch import needed to read it
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1)


def _float_dtype(values: np.ndarray) -> np.dtype:
    finite = values[np.isfinite(values)]
    mags = np.abs(finite[finite != 0])
    fits = mags.size == 0 or (mags.min() >= FLOAT16_MIN_NORMAL and mags.max() <= FLOAT16_MAX)
    return np.dtype(np.float16 if fits else np.float32)


def encode(values: Any) -> dict[str, Any]:
    """One array (or tensor) of per-example values as a JSON-safe dict.

    Raises:
        TypeError: values that are neither bool, integer nor floating point.
    """
    arr = _as_numpy(values)
    n = int(arr.size)
    if arr.dtype == np.bool_:
        data = np.packbits(arr, bitorder="little").tobytes()
        dtype = "bool"
    elif np.issubdtype(arr.dtype, np.integer):
        data = arr.astype("<i4").tobytes()
        dtype = "int32"
    elif np.issubdtype(arr.dtype, np.floating):
        fdt = _float_dtype(arr.astype(np.float64))
        data = arr.astype(fdt.newbyteorder("<")).tobytes()
        dtype = fdt.name
    else:
        raise TypeError(f"per-example values must be bool, integer or float, got {arr.dtype}")
    return {"dtype": dtype, "n": n, "data": base64.b64encode(data).decode("ascii")}


def encode_all(per_example: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every metric's per-example values, encoded (the ``per_example`` field of a record)."""
    return {name: encode(values) for name, values in sorted(per_example.items())}


def decode(entry: Mapping[str, Any]) -> np.ndarray:
    """The array an :func:`encode` entry holds: bool, int32, or float (float16 widened to float32).

    Raises:
        ValueError: an entry of an unknown dtype, or whose data does not hold ``n`` values.
    """
    dtype, n = entry.get("dtype"), int(entry.get("n", -1))
    raw = base64.b64decode(entry.get("data", ""))
    if dtype == "bool":
        if len(raw) != (n + 7) // 8:
            raise ValueError(f"per-example bool entry: {len(raw)} bytes cannot hold {n} bits")
        return np.unpackbits(np.frombuffer(raw, np.uint8), count=n, bitorder="little").astype(bool)
    widths = {"int32": "<i4", "float16": "<f2", "float32": "<f4"}
    if dtype not in widths:
        raise ValueError(f"per-example entry of unknown dtype {dtype!r} (known: bool, {', '.join(widths)})")
    arr = np.frombuffer(raw, widths[dtype])
    if arr.size != n:
        raise ValueError(f"per-example {dtype} entry holds {arr.size} values, not {n}")
    return arr.astype(np.float32) if dtype == "float16" else arr.astype(arr.dtype.newbyteorder("="))


def encode_clusters(clusters: Any) -> dict[str, Any]:
    """Cluster ids (one integer an example, e.g. the photo each view came from) as a record entry.

    Raises:
        ValueError: ids that are not integers in int32's range.
    """
    arr = _as_numpy(clusters)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"cluster ids must be integers (one per example), got {arr.dtype}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise ValueError("cluster ids must fit in int32; number the clusters 0, 1, 2, ...")
    return encode(arr.astype(np.int32))


def clusters_of(record: Mapping[str, Any]) -> np.ndarray | None:
    """The cluster id of each evaluation example a record stores (``dataset.clusters``), or None
    when it stores none (its examples are independent).

    Raises:
        ValueError: an entry that does not decode to integers (the record names the cell to rerun).
    """
    entry = (record.get("dataset") or {}).get("clusters")
    if entry is None:
        return None
    try:
        ids = decode(entry)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"record {record.get('cell_id')}: dataset.clusters is broken ({e}); rerun the cell") from None
    if ids.dtype != np.int32:
        raise ValueError(f"record {record.get('cell_id')}: dataset.clusters holds {ids.dtype}, not integer ids; rerun the cell")
    return ids
