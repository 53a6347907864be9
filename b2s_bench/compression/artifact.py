"""The compressed model on disk: one safetensors file plus a JSON manifest, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save

from ..store.records import WRITE_ERRNOS, cannot_write, temp_tag, umask
from .interface import Code
from .nested import NestedCode

if TYPE_CHECKING:
    from .compressed import Compressed

__all__ = ["save_compressed", "read_artifact", "FORMAT", "restore_code", "code_entry", "artifact_bytes"]

FORMAT = "b2s-bench/artifact/1"
TENSORS = "tensors.safetensors"
MANIFEST = "manifest.json"


def code_entry(code: Code, prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Manifest entry of a code; its tensors are added to ``tensors`` under ``prefix``."""
    if isinstance(code, NestedCode):
        outer = code_entry(code.outer, f"{prefix}/outer", tensors)
        for name in code.inner:  # stored by the inner codes, not as fp32
            del tensors[f"{prefix}/outer/{name}"]
        outer["tensors"] = [t for t in outer["tensors"] if t not in code.inner]
        inner = {n: code_entry(c, f"{prefix}/inner/{n}", tensors) for n, c in code.inner.items()}
        return {"kind": NestedCode.kind, "outer": outer, "inner": inner}
    own = code.tensors()
    for name, t in own.items():
        tensors[f"{prefix}/{name}"] = t.detach().cpu().contiguous()
    return {"kind": code.kind, "meta": code.meta(), "tensors": sorted(own)}


def restore_code(
    entry: Mapping[str, Any], prefix: str, tensors: Mapping[str, torch.Tensor], code_types: Mapping[str, type[Code]]
) -> Code:
    kind = entry["kind"]
    if kind == NestedCode.kind:
        inner = {n: restore_code(e, f"{prefix}/inner/{n}", tensors, code_types) for n, e in entry["inner"].items()}
        outer_entry = entry["outer"]
        outer_tensors = {f"{prefix}/outer/{t}": tensors[f"{prefix}/outer/{t}"] for t in outer_entry["tensors"]}
        outer_tensors.update({f"{prefix}/outer/{n}": c.decode() for n, c in inner.items()})
        names = sorted(set(outer_entry["tensors"]) | set(inner))
        outer = restore_code({**outer_entry, "tensors": names}, f"{prefix}/outer", outer_tensors, code_types)
        return NestedCode(outer, inner)
    if kind not in code_types:
        raise KeyError(f"artifact uses code kind {kind!r}, which no installed compressor provides "
                       f"(known: {sorted(code_types)}); install the plugin that wrote it")
    own = {name: tensors[f"{prefix}/{name}"] for name in entry["tensors"]}
    return code_types[kind].restore(entry["meta"], own)


def save_compressed(compressed: Compressed, path: str | os.PathLike[str]) -> int:
    """Write ``compressed`` to the folder ``path`` (replaced atomically); return the bytes on disk."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    codes = {key: code_entry(code, f"code/{key}", tensors) for key, code in compressed.codes.items()}
    for key, t in compressed.raw.items():
        tensors[f"raw/{key}"] = t.detach().cpu().contiguous()
    size = compressed.size()
    manifest = {
        "format": FORMAT,
        "codes": codes,
        "raw": sorted(compressed.raw),
        "original_shapes": {k: list(s) for k, s in compressed.original_shapes.items()},
        "replaced": sorted(compressed.replaced),
        "architecture": compressed.architecture,
        "activations": {k: list(v) for k, v in compressed.activations.items()},
        "activation_bits": compressed.activation_bits,
        "size": size.as_dict(),
    }
    # bytes first, written by Python: a full disk is then an OSError with its errno (save_file's is not)
    blob, text = save(tensors), json.dumps(manifest, indent=1, sort_keys=True)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{temp_tag()}.", dir=path.parent))
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would lock a team sharing the run folder out
        (tmp / TENSORS).write_bytes(blob)
        (tmp / MANIFEST).write_text(text)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            raise cannot_write(path / TENSORS, e, len(blob) + len(text)) from e
        raise
    return artifact_bytes(path)


def artifact_bytes(path: str | os.PathLike[str]) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def read_artifact(
    path: str | os.PathLike[str], code_types: Mapping[str, type[Code]]
) -> tuple[dict[str, Code], dict[str, torch.Tensor], dict[str, Any]]:
    """The codes, raw tensors and manifest of an artifact written by :func:`save_compressed`."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a b2s-bench artifact (format {manifest.get('format')!r})")
    # fresh, aligned copies: safetensors may hand back views at odd alignments, which can change
    # which matmul kernel runs and so the last bit of a decode
    tensors = {k: v.clone() for k, v in load_file(str(path / TENSORS)).items()}
    codes = {key: restore_code(entry, f"code/{key}", tensors, code_types) for key, entry in manifest["codes"].items()}
    raw = {key: tensors[f"raw/{key}"] for key in manifest["raw"]}
    return codes, raw, manifest
