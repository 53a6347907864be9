"""GPTQ on one weight matrix (Frantar et al., ICLR 2023, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", Algorithm 1).

Minimizes ||WX − ŴX||² column by column: each column is rounded to its grid, and its error, scaled
by the inverse Hessian, is spread over the columns not yet quantized (the OBS update). As the paper:

- H = 2·XᵀX/n, damped by λ = ``percdamp`` · mean(diag H); a column no input reaches (H_jj = 0) gets
  H_jj = 1 and weight 0 (the authors' code);
- the inverse Hessian's rows come from the upper Cholesky factor of H⁻¹ (Sec. 4, "Cholesky
  reformulation"), so Ŵ's error at column j is e = (w_j − q_j) / [U]_jj and W[:, j:] −= e·U[j, j:];
- lazy batch updates (Sec. 4): inside a block of ``block_size`` columns the update is applied
  column by column, to the columns after the block once per block (E · U[block, rest]);
- grids: per row, fixed from the whole row before the pass (the paper); with groups, the grid of a
  group is set when its first column is reached, from the group's weights *as updated by every earlier
  column* (the paper: "determine the grid lazily as the algorithm proceeds"; the authors' code reads
  the group's weights without the current block's in-block updates, the same when a group starts a
  block, as with the defaults, 128 and 128); with ``act_order`` the columns go in order of decreasing
  H_jj and each group's grid is fixed beforehand from the original weights (``--static-groups``).

The grid is quantize's (:func:`quantize_groups`: min/max with 0 in range, an asymmetric zero point
round(−min/s), codes clamped to 0..2^b − 1; or its symmetric full-range grid), so with H = I GPTQ
gives quantize's round-to-nearest codes bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..quantize.rounding import _quantize, quantize_groups

__all__ = ["GPTQResult", "gptq_matrix", "damped_inverse_factor"]


@dataclasses.dataclass
class GPTQResult:
    """Integer codes (rows, cols) in the original column order, grids (rows, groups), the quantized
    weights (rows, cols) and the group width (cols for per-row grids)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    weights: torch.Tensor
    group: int


def damped_inverse_factor(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """U, the upper Cholesky factor of (H + λI)⁻¹ with λ = percdamp · mean(diag H) (H already has its
    dead columns set to 1 on the diagonal)."""
    h = h.clone()
    idx = torch.arange(h.shape[0], device=h.device)
    h[idx, idx] += percdamp * torch.mean(torch.diag(h))
    lower = torch.linalg.cholesky(h)
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def _grid(w: torch.Tensor, bits: int, symmetric: bool, scale_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of ``w`` (the scale rounded to its stored precision)."""
    _, scale, zero = quantize_groups(w, bits, symmetric, "minmax", value_range="full")
    if scale_bits == 16:
        scale = scale.half().float().clamp(min=2.0**-24)  # an fp16 scale, never 0
    return scale, zero


def _round(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    return _quantize(w[:, None], scale, zero, bits, symmetric, "full")[:, 0]


@torch.no_grad()
def gptq_matrix(
    w: torch.Tensor,
    h: torch.Tensor,
    bits: int,
    group_size: int = 128,
    symmetric: bool = False,
    block_size: int = 128,
    percdamp: float = 0.01,
    act_order: bool = False,
    scale_bits: int = 32,
) -> GPTQResult:
    """Quantize ``w`` (rows, cols) with GPTQ under the Hessian ``h`` (cols, cols) (module docstring)."""
    rows, cols = w.shape
    if h.shape != (cols, cols):
        raise ValueError(f"the Hessian is {tuple(h.shape)}, the weight has {cols} columns")
    w = w.detach().clone().float()
    h = h.detach().clone().float().to(w.device)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    group = cols if group_size == -1 else min(group_size, cols)
    n_groups = math.ceil(cols / group)
    scale = torch.ones(rows, n_groups, device=w.device)
    zero = torch.zeros(rows, n_groups, device=w.device)
    static = group == cols or act_order  # every grid fixed before the pass, from the original weights
    if static:
        for g in range(n_groups):
            scale[:, g], zero[:, g] = _grid(w[:, g * group : (g + 1) * group], bits, symmetric, scale_bits)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    u = damped_inverse_factor(h, percdamp)
    q = torch.zeros_like(w)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            col = int(perm[j])
            g = col // group
            if not static and col % group == 0:  # a group starts: its grid from the weights as they are now
                end = min(j + group, cols)
                if end <= i2:
                    current = w1[:, i : i + end - j]
                else:
                    rest = w[:, i2:end] - err1[:, :i] @ u[i1:j, i2:end]
                    current = torch.cat([w1[:, i:], rest], dim=1)
                scale[:, g], zero[:, g] = _grid(current, bits, symmetric, scale_bits)
            column = w1[:, i]
            q[:, j] = _round(column, scale[:, g], zero[:, g], bits, symmetric)
            e = (column - scale[:, g] * (q[:, j] - zero[:, g])) / u1[i, i]
            w1[:, i:] -= e[:, None] @ u1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    inverse = torch.argsort(perm)
    q = q[:, inverse]
    groups = torch.arange(cols, device=w.device) // group
    weights = scale[:, groups] * (q - zero[:, groups])
    return GPTQResult(q, scale, zero, weights, group)
