"""The quantizer: per-tensor, per-channel or per-group grids, round-to-nearest, MSE-optimal clipping.

Round-to-nearest is the closed-form minimizer of the weight error for a fixed grid; MSE clipping
searches the grid (a shrink of the range per group) for the least squared error.

Symmetric grids come in two ranges (``QuantizeConfig.range``). "full" follows torchao's weight-only
quantization (``choose_qparams_affine`` + ``quantize_affine`` with ``MappingType.SYMMETRIC``, as
``IntxWeightOnlyConfig`` and ``Int8WeightOnlyConfig`` use it): s = max|W| / ((qmax − qmin) / 2),
zero point 0, q = clamp(round(W · (1/s)), qmin, qmax) with torch.round (half to even) and the
multiplication by the reciprocal kept, so the codes match torchao's bit for bit. One difference:
torchao clamps s to an eps (float32's smallest normal in Intx, 1.19e-7 in Int8Tensor); here an
all-zero group gets s = 1 (its codes are 0 either way, so it decodes to the same zeros) and a
non-zero group keeps its exact s. "restricted" is the older s = max|W| / (2^(b−1) − 1), q = round(W / s).
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


def _params(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool, value_range: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if symmetric:
        levels = (2**bits - 1) / 2 if value_range == "full" else 2 ** (bits - 1) - 1
        scale = torch.maximum(hi.abs(), lo.abs()) / levels
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (2**bits - 1)
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group decodes to zeros
    return scale, zero


def _quantize(
    g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool, value_range: str
) -> torch.Tensor:
    qmin, qmax = grid_range(bits, symmetric)
    # the full range multiplies by the reciprocal, as torchao's quantize_affine does (the last bit of
    # W/s and W·(1/s) can differ, and with it a code at a tie); the restricted range keeps its old W/s
    scaled = g * (1.0 / scale[:, None]) if symmetric and value_range == "full" else g / scale[:, None]
    return torch.clamp(torch.round(scaled) + zero[:, None], qmin, qmax)


def quantize_groups(
    g: torch.Tensor, bits: int, symmetric: bool, clipping: str = "minmax", grid: int = 40, value_range: str = "full"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer codes, scales and zero points for each row of ``g``.

    ``value_range`` is the symmetric grid's range ("full" or "restricted", see the module's
    docstring); affine grids ignore it. ``clipping="mse"`` searches a shrink factor α in (0, 1] of
    the range per row, keeping the one with the least squared error (MSE-optimal clipping).
    """
    lo, hi = g.min(dim=1).values.clamp(max=0), g.max(dim=1).values.clamp(min=0)
    scale, zero = _params(lo, hi, bits, symmetric, value_range)
    q = _quantize(g, scale, zero, bits, symmetric, value_range)
    if clipping == "mse":
        best_err = ((scale[:, None] * (q - zero[:, None]) - g) ** 2).sum(dim=1)
        for alpha in torch.linspace(1.0, 0.2, grid)[1:].tolist():
            s2, z2 = _params(lo * alpha, hi * alpha, bits, symmetric, value_range)
            q2 = _quantize(g, s2, z2, bits, symmetric, value_range)
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
    q, scale, zero = quantize_groups(g, config.bits, config.symmetric, config.clipping, value_range=config.range)
    if config.scale_bits == 16:
        scale = scale.half().float()
    return UniformCode(q, scale, zero, config.bits, config.symmetric, config.scale_bits, pad, tuple(w.shape))
