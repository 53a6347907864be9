"""The code of ``squant``: quantize's :class:`UniformCode`, under its own kind.

The stored bytes, the bits and the symbol streams are UniformCode's (per-channel codes at ``bits``,
a scale per channel at ``scale_bits`` and, when affine, a b-bit zero point per channel, plus the
header ``b2s.header_bits(meta())``), so an ``entropy`` stage codes SQuant's codes as it codes
quantize's. The kind is its own so that an artifact says its codes are SQuant's and restores them
as such: their network form is no reference for the generic solver (see :class:`SQuantNetwork`).
"""

from __future__ import annotations

import torch

from ..quantize.codes import RoundingNetwork, UniformCode

__all__ = ["SQuantCode", "SQuantNetwork"]


class SQuantCode(UniformCode):
    """Integer codes q on a per-channel uniform grid, W = s·(q − z), rounded by SQuant's flips."""

    kind = "squant.uniform"

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> SQuantNetwork:
        return SQuantNetwork(self, init, generator)


class SQuantNetwork(RoundingNetwork):
    """The rounding layer of a SQuant code: refitted to W it reaches round-to-nearest, the least
    weight error on the grid. SQuant's codes minimise CASE (the summed errors of kernels and
    channels), not the weight error, so the gap between the two is no check of them: the network is
    marked as no reference (``closed_form = False``) for the solver-gap metric."""

    closed_form = False
