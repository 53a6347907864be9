"""The quantizer: per-tensor, per-channel or per-group grids, round-to-nearest, MSE-optimal clipping.

Round-to-nearest is the closed-form minimizer of the weight error for a fixed grid; MSE clipping
searches the grid (a shrink of the range per group) for the least squared error.
"""

from __future__ import annotations

import torch

from b2s_bench import Code

from .codes import FloatCode, UniformCode, grid_range
from .config import FLOAT_BITS, QuantizeConfig

__all__ = ["grouped", "quantize_groups", "quantize_tensor"]


def grouped(w: torch.Tensor, granularity: str, group_size: int) -> tuple[torch.Tensor, int]:
    """Reshape ``w`` to (groups, group_len), padding the rows with zeros; returns (matrix, pad)."""
    flat = w.detach().float()
    if granularity == "tensor" or flat.dim() < 2:
        return flat.reshape(1, -1), 0
    rows = flat.reshape(flat.shape[0], -1)
    if granularity == "channel":
        return rows, 0
    pad = (-rows.shape[1]) % group_size
    if pad:
        rows = torch.cat([rows, rows.new_zeros(rows.shape[0], pad)], dim=1)
    return rows.reshape(-1, group_size), pad


def _params(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if symmetric:
        scale = torch.maximum(hi.abs(), lo.abs()) / (2 ** (bits - 1) - 1)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (2**bits - 1)
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group decodes to zeros
    return scale, zero


def _quantize(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    qmin, qmax = grid_range(bits, symmetric)
    return torch.clamp(torch.round(g / scale[:, None]) + zero[:, None], qmin, qmax)


def quantize_groups(
    g: torch.Tensor, bits: int, symmetric: bool, clipping: str = "minmax", grid: int = 40
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer codes, scales and zero points for each row of ``g``.

    ``clipping="mse"`` searches a shrink factor α in (0, 1] of the range per row, keeping the one
    with the least squared error (MSE-optimal clipping).
    """
    lo, hi = g.min(dim=1).values.clamp(max=0), g.max(dim=1).values.clamp(min=0)
    scale, zero = _params(lo, hi, bits, symmetric)
    q = _quantize(g, scale, zero, bits, symmetric)
    if clipping == "mse":
        best_err = ((scale[:, None] * (q - zero[:, None]) - g) ** 2).sum(dim=1)
        for alpha in torch.linspace(1.0, 0.2, grid)[1:].tolist():
            s2, z2 = _params(lo * alpha, hi * alpha, bits, symmetric)
            q2 = _quantize(g, s2, z2, bits, symmetric)
            err = ((s2[:, None] * (q2 - z2[:, None]) - g) ** 2).sum(dim=1)
            better = err < best_err
            if better.any():
                best_err = torch.where(better, err, best_err)
                scale, zero = torch.where(better, s2, scale), torch.where(better, z2, zero)
                q = torch.where(better[:, None], q2, q)
    return q, scale, zero


def quantize_tensor(w: torch.Tensor, config: QuantizeConfig) -> Code:
    """Quantize one tensor (any shape; 0-D and 1-D tensors get one scale)."""
    if config.bits in FLOAT_BITS:
        return FloatCode(w.detach().to(torch.float16 if config.bits == 16 else torch.float32).cpu().clone())
    g, pad = grouped(w.detach().cpu(), config.granularity, config.group_size)
    q, scale, zero = quantize_groups(g, config.bits, config.symmetric, config.clipping)
    if config.scale_bits == 16:
        scale = scale.half().float()
    return UniformCode(q, scale, zero, config.bits, config.symmetric, config.scale_bits, pad, tuple(w.shape))
