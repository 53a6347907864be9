"""The code of ``udfc``: its quantized weights, stored as ``quantize`` stores them.

A :class:`UDFCCode` is a :class:`~..quantize.codes.UniformCode` (integer codes, per-group scales,
zero points when affine, the header ``b2s.header_bits(meta())``; N·b + scales + header bits) under
its own kind, so that artifacts name the compressor that wrote them. The shape in its header is
the layer's shape after pruning (fewer filters, fewer input channels): the model rebuilds from it.
"""

from __future__ import annotations

from ..quantize.codes import UniformCode

__all__ = ["UDFCCode"]


class UDFCCode(UniformCode):
    """UDFC's quantized (and possibly pruned and compensated) weights: W = s·(q − z)."""

    kind = "udfc.uniform"
