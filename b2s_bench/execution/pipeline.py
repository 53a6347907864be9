"""Compositions: a later compressor compresses the payload φ of an earlier one's codes (see
:class:`~b2s_bench.compression.nested.NestedCode`).

A pipeline's facts are kept per stage: ``info["stages"][i]`` (so ``details.stages[i]`` of the
record) holds stage i's own facts, the first stage's compressor info included. They are not left
at the top of ``details``, where a first stage's weight rel-MAE, cosine or PSNR would sit next to
the final metrics and read as if they described the final model; only ``caveats`` (every stage's)
is also kept at the top.
"""

from __future__ import annotations

import math
from typing import Any

from ..compression.compressed import Compressed
from ..compression.interface import Code, CompressorSpec, Context
from ..compression.nested import NestedCode
from ..fitting.fidelity import tensor_report

__all__ = ["NestedCode", "apply_stage", "stages"]


def stages(compressed: Compressed) -> list[dict[str, Any]]:
    """The per-stage facts of ``compressed``: its ``info["stages"]``, or its info as the one stage."""
    staged = compressed.info.get("stages")
    return [dict(s) for s in staged] if isinstance(staged, list) else [dict(compressed.info)]


def apply_stage(compressed: Compressed, spec: CompressorSpec, config: Any, ctx: Context) -> Compressed:
    """Compress every payload tensor of every code of ``compressed`` with a per-tensor compressor.

    The result's info is ``{"stages": [...earlier stages, this stage]}``; this stage's entry has
    ``compressor``, ``tensors`` (how many codes it nested), ``bits`` (of those codes after it) and
    ``against_previous``: per tensor, and as means, the rel-MAE, cosine and PSNR of the weights
    after this stage against the weights before it (what this stage alone changed).
    """
    if spec.compress_tensor is None:
        raise ValueError(f"compressor {spec.name!r} cannot be a later pipeline stage: it has no compress_tensor")
    codes: dict[str, Code] = {}
    nested = []
    for key, code in compressed.codes.items():
        payload = code.payload()
        if not payload:
            codes[key] = code
            continue
        inner = {n: spec.compress_tensor(f"{key}/{n}", t, config, ctx) for n, t in payload.items()}
        codes[key] = NestedCode(code, inner)
        nested.append(key)
    out = compressed.with_codes(codes)
    before, after = compressed.state_dict(), out.state_dict()  # decoded once each: Compressed caches them
    per = {k: tensor_report(before[k], after[k]) for k in sorted(nested)}
    facts: dict[str, Any] = {"compressor": spec.name, "tensors": len(nested),
                             "bits": sum(codes[k].bits().total for k in nested), "against_previous": {"tensors": per}}
    for stat in ("rel_mae", "cosine", "psnr"):  # the mean over the tensors this stage changed (finite values)
        values = [r[stat] for r in per.values() if math.isfinite(r[stat])]
        facts["against_previous"][stat] = sum(values) / len(values) if values else None
    staged = [*stages(compressed), facts]
    out.info = {"stages": staged}
    # caveats (an unconverged or failed fit) concern the final model too: kept at the top as well,
    # where reports and claims look for them
    caveats = [c for stage in staged for c in stage.get("caveats") or []]
    if caveats:
        out.info["caveats"] = caveats
    return out
