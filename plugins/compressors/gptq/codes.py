"""The codes of ``gptq``: quantize's :class:`UniformCode` (integer codes, a scale and a zero point per
group), so entropy stages compose and the bits are exact: N·b code bits, ``scale_bits`` per group
for the scale, b bits per group for an asymmetric grid's zero point, the header ``header_bits(meta())``.
No permutation is stored (``act_order`` keeps the original column order, see :class:`GPTQConfig`)."""

from __future__ import annotations

import torch

from ..quantize.codes import UniformCode

__all__ = ["UniformCode", "grouped_code"]


def grouped_code(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group: int,
    nbits: int,
    symmetric: bool,
    scale_bits: int,
    shape: tuple[int, ...],
) -> UniformCode:
    """A UniformCode from (rows, cols) integer codes and (rows, groups) scales and zero points, groups
    of ``group`` consecutive columns; the last group of a row is padded with its zero point's code
    (it decodes to 0; stored and counted, as quantize does)."""
    rows, cols = q.shape
    groups = scale.shape[1]
    pad = groups * group - cols
    if pad:
        q = torch.cat([q, zero[:, -1:].expand(rows, pad)], dim=1)
    return UniformCode(
        q.reshape(rows * groups, group).float().cpu(),
        scale.reshape(-1).float().cpu(),
        zero.reshape(-1).float().cpu(),
        nbits,
        symmetric,
        scale_bits,
        pad,
        tuple(shape),
    )
