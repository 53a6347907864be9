"""HQQ's solver: the zero point (and, by setting, the scale) of an affine grid fitted by half-quadratic
splitting of the lp error (Badri & Shaji 2023, the mobiusml blog and the hqq package).

The problem per group: min_z ‖W − Q⁻¹(Q(W; s, z))‖_p^p with p < 1 (heavy-tailed errors: a few weights
may keep a large error). Half-quadratic splitting adds W_e ≈ W − Q⁻¹(Q(W)) and alternates

1. W_e ← shrink_p(W − Q⁻¹(Q(W)); β), the generalised soft threshold of the lp norm:
   sign(x)·max(|x| − |x|^(p−1)/β, 0);
2. z ← mean over the group of (Q(W) − (W − W_e)·s⁻¹), the closed-form zero point;
3. β ← κ·β.

As in hqq, the grid works with the inverse scale: Q(W) = clamp(round(W·s⁻¹ + z), 0, 2^b − 1),
Q⁻¹(q) = (q − z)/s⁻¹, starting from each group's min/max (s⁻¹ = (2^b − 1)/(max − min), 1 where
max − min ≤ 1e-4, at most 2e4; z = −min·s⁻¹, rounded at 4 bits) and stopping early (hqq's default
solver) once the mean |W − Q⁻¹(Q(W))| of an iteration stops falling; the zero point that iteration
computed is kept, as in hqq. The stored scale is 1/s⁻¹.
"""

from __future__ import annotations

import math

import torch

from .codes import HQQCode, group_view
from .config import HQQConfig

__all__ = ["shrink_lp", "hqq_groups", "hqq_tensor", "lp_error"]


def shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """The proximal operator of |·|^p / β (generalised soft thresholding), elementwise."""
    magnitude = x.abs()
    threshold = 1.0 / beta if p == 1 else magnitude.pow(p - 1) / beta  # |x|^(p−1) is inf at 0: shrinks to 0
    return torch.sign(x) * (magnitude - threshold).clamp(min=0.0)


def lp_error(w: torch.Tensor, approx: torch.Tensor, p: float) -> float:
    """mean |w − approx|^p: the error HQQ minimises."""
    return float((w - approx).abs().pow(p).mean())


def _grid(g: torch.Tensor, top: int, round_zero: bool) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = g.min(dim=1, keepdim=True).values, g.max(dim=1, keepdim=True).values
    span = hi - lo
    inv = top / span
    inv = torch.where(span.abs() <= 1e-4, torch.ones_like(inv), inv).clamp(max=2e4)  # hqq's guards
    zero = -lo * inv
    return inv, torch.round(zero) if round_zero else zero


def _codes(g: torch.Tensor, inv: torch.Tensor, zero: torch.Tensor, top: int) -> torch.Tensor:
    return torch.round(g * inv + zero).clamp(0, top)


def _search_scale(g: torch.Tensor, inv: torch.Tensor, zero: torch.Tensor, top: int, shifts: int = 129) -> torch.Tensor:
    """hqq's scale grid search: with the codes fixed, the inverse scale among ``shifts`` candidates within
    ±5 % of the mean inverse scale that gives each group the least mean |W − Ŵ| (the original one is a
    candidate: ``shifts`` is odd)."""
    q = _codes(g, inv, zero, top)
    span = float(inv.abs().mean()) * 0.05
    best_err = torch.full_like(inv, math.inf)
    best = inv.clone()
    for shift in torch.linspace(-span, span, shifts).tolist():
        cand = inv + shift
        tiny = cand.abs() <= 2e-4  # hqq's safe inverse: keep |s⁻¹| at least 2e-4, with its sign
        cand = torch.where(tiny & (cand >= 0), torch.full_like(cand, 2e-4), cand)
        cand = torch.where(tiny & (cand < 0), torch.full_like(cand, -2e-4), cand)
        err = (g - (q - zero) / cand).abs().mean(dim=1, keepdim=True)
        better = err < best_err
        best_err, best = torch.where(better, err, best_err), torch.where(better, cand, best)
    return best


@torch.no_grad()
def hqq_groups(g: torch.Tensor, config: HQQConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Codes, scales and zero points of each row of ``g`` (groups, group_len), and the iterations run."""
    top = 2**config.bits - 1
    g = g.float()
    inv, zero = _grid(g, top, config.rounds_zero)
    if config.optimize_scale:
        inv = _search_scale(g, inv, zero, top)
    beta, best, ran = config.beta, math.inf, 0
    for _ in range(config.iterations):
        q = _codes(g, inv, zero, top)
        rebuilt = (q - zero) / inv
        residual = shrink_lp(g - rebuilt, beta, config.lp_norm)
        zero = (q - (g - residual) * inv).mean(dim=1, keepdim=True)
        beta *= config.kappa
        ran += 1
        error = float((g - rebuilt).abs().mean())
        if config.early_stop:
            if error < best:
                best = error
            else:
                break
    q = _codes(g, inv, zero, top)
    return q, (1.0 / inv).reshape(-1), zero.reshape(-1), ran


def hqq_tensor(w: torch.Tensor, config: HQQConfig) -> HQQCode:
    """HQQ-quantize one tensor (any shape; a 1-D tensor is one row)."""
    g, pad = group_view(w.detach().cpu(), config.group_size, config.axis)
    q, scale, zero, _ = hqq_groups(g, config)
    dtype = torch.float16 if config.scale_bits == 16 else torch.float32
    scale, zero = scale.to(dtype).float(), zero.to(dtype).float()  # the stored values decode
    return HQQCode(q, scale, zero, config.bits, False, config.scale_bits, pad, tuple(w.shape), config.axis)
