"""The decompositions of ``lowrank``: rank selection, truncated SVD and Tucker-2 (HOSVD, HOOI).

A layer whose factors would not be strictly smaller than the dense weight stays a :class:`DenseCode`.
"""

from __future__ import annotations

import math

import torch

from b2s_bench import Code

from .codes import HEADER_BITS, DenseCode, SvdCode, TuckerCode
from .config import DEFAULT_ENERGY, LowRankConfig

__all__ = ["energy_rank", "svd_words", "tucker_words", "thin_svd", "svd_code", "tucker_code", "compress_weight"]


def energy_rank(sigma: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i≤r} σ_i² / Σ σ² ≥ energy (full rank for energy 1 or a zero tensor)."""
    n = int(sigma.numel())
    if energy >= 1.0 or n == 0:
        return n
    e = sigma.double().pow(2)
    total = float(e.sum())
    if total <= 0.0:
        return n
    cum = torch.cumsum(e, 0) / total
    return min(int(torch.searchsorted(cum, torch.tensor(energy, dtype=torch.float64)).item()) + 1, n)


def svd_words(m: int, n: int, r: int) -> int:
    """Stored 32-bit words of a rank-r SVD code of an m × n matrix, header included."""
    return r * (m + n) + HEADER_BITS // 32


def tucker_words(c_out: int, c_in: int, kernel: int, r_o: int, r_i: int) -> int:
    return c_in * r_i + r_i * r_o * kernel + r_o * c_out + HEADER_BITS // 32


def thin_svd(w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U, σ (descending), Vᵀ of an m × n matrix, k = min(m, n), in float64.

    Computed from the eigendecomposition of the smaller Gram matrix (k × k): several times faster
    than a direct SVD on the CPU, and exact to float64 rounding in the leading components; the
    components that squaring blurs are below 1e-8 of the largest, far under fp32 weight precision.
    """
    w = w2.double()
    tiny = torch.finfo(torch.float64).tiny
    if w.shape[0] <= w.shape[1]:
        lam, u = torch.linalg.eigh(w @ w.T)
        s = lam.flip(0).clamp(min=0).sqrt()
        u = u.flip(1)
        return u, s, (u.T @ w) / s.clamp(min=tiny)[:, None]
    lam, v = torch.linalg.eigh(w.T @ w)
    s = lam.flip(0).clamp(min=0).sqrt()
    v = v.flip(1)
    return (w @ v) / s.clamp(min=tiny), s, v.T


def svd_code(w: torch.Tensor, config: LowRankConfig) -> Code:
    """The truncated SVD of ``w`` reshaped to shape[0] × rest, or a DenseCode at/above break-even."""
    w = w.detach().float().cpu()
    if w.dim() < 2:
        return DenseCode(w.clone())
    m = int(w.shape[0])
    n = w.numel() // max(m, 1)
    full = min(m, n)
    sigma = u = vh = None
    if config.rank is not None:
        r = min(config.rank, full)
    elif config.target_ratio is not None:
        r = max(1, math.floor((m * n / config.target_ratio - HEADER_BITS // 32) / (m + n)))
    elif config.energy is not None and config.energy >= 1.0:
        r = full
    else:
        u, sigma, vh = thin_svd(w.reshape(m, n))
        r = energy_rank(sigma, float(config.energy or DEFAULT_ENERGY))
    if r >= full or svd_words(m, n, r) >= m * n:
        return DenseCode(w.clone())
    if sigma is None or u is None or vh is None:  # all three are set together
        u, sigma, vh = thin_svd(w.reshape(m, n))
    root = sigma[:r].sqrt()
    a = (u[:, :r] * root).float().contiguous()
    b = (vh[:r].T * root).float().contiguous()
    return SvdCode(a, b, tuple(w.shape))


def _mode_basis(w: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and values of the mode-``mode`` unfolding (mode 0: C_out, 1: C_in)."""
    u, s, _ = thin_svd(w.movedim(mode, 0).reshape(w.shape[mode], -1))
    return u, s


def _tucker_ranks(w: torch.Tensor, config: LowRankConfig) -> tuple[int, int]:
    c_out, c_in = int(w.shape[0]), int(w.shape[1])
    kernel = w[0, 0].numel()
    if config.rank is not None:
        return min(config.rank, c_out), min(config.rank, c_in)
    if config.target_ratio is not None:
        budget = c_out * c_in * kernel / config.target_ratio
        for r_o in range(c_out, 0, -1):  # the largest ranks, proportional to the channels, within budget
            r_i = max(1, min(c_in, round(r_o * c_in / c_out)))
            if tucker_words(c_out, c_in, kernel, r_o, r_i) <= budget:
                return r_o, r_i
        return 1, 1
    energy = float(config.energy or DEFAULT_ENERGY)
    if energy >= 1.0:
        return c_out, c_in
    return energy_rank(_mode_basis(w, 0)[1], energy), energy_rank(_mode_basis(w, 1)[1], energy)


def tucker_code(w: torch.Tensor, config: LowRankConfig) -> Code:
    """Tucker-2 (HOSVD, then ``hooi_iters`` HOOI sweeps) of a conv weight, or dense at/above break-even."""
    w = w.detach().float().cpu()
    c_out, c_in = int(w.shape[0]), int(w.shape[1])
    kernel = w[0, 0].numel()
    r_o, r_i = _tucker_ranks(w, config)
    if tucker_words(c_out, c_in, kernel, r_o, r_i) >= w.numel():
        return DenseCode(w.clone())
    wd = w.double()
    u_out = _mode_basis(wd, 0)[0][:, :r_o]
    u_in = _mode_basis(wd, 1)[0][:, :r_i]
    for _ in range(config.hooi_iters):
        u_out = _mode_basis(torch.einsum("oi...,ib->ob...", wd, u_in), 0)[0][:, :r_o]
        u_in = _mode_basis(torch.einsum("oi...,oa->ai...", wd, u_out), 1)[0][:, :r_i]
    core = torch.einsum("oi...,oa,ib->ab...", wd, u_out, u_in)
    return TuckerCode(core.float().contiguous(), u_out.float().contiguous(), u_in.float().contiguous())


def compress_weight(w: torch.Tensor, config: LowRankConfig) -> Code:
    if config.method == "tucker2" and w.dim() >= 3 and w[0, 0].numel() > 1:
        return tucker_code(w, config)
    return svd_code(w, config)
