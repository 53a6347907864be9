"""Low-rank decomposition without data: truncated SVD of conv/linear layers, or Tucker-2 of convs.

Theory form: W = A Bᵀ, a two-layer linear network with an r-wide bottleneck; R(φ) is the rank,
relaxed to the nuclear norm ||W||_* = min ½(||A||² + ||B||²) over A Bᵀ = W. Truncated SVD with Σ
split as √Σ into both factors is the closed-form minimizer (Eckart–Young) and the balanced point
of the relaxation; the generic solver fitting the bottleneck network from a random start reaches
it (linear networks have no spurious local minima). Tucker-2 (HOSVD, optionally refined by HOOI)
is the multilinear analogue for convs: W = G ×₁ U_out ×₂ U_in. The codes, their network and
deployed (two- or three-layer) forms are in :mod:`.lowrank_codes`.

Bits: the factors at 32 bits (payload) plus a 32-bit header (the ranks) per tensor. A layer whose
factors would not be strictly smaller than the dense weight (r(m+n) + 1 ≥ mn 32-bit words for
SVD, C_in R_i + R_i R_o k² + R_o C_out + 1 ≥ C_out C_in k² for Tucker-2) stays dense: it is stored
as a :class:`DenseCode`, counted exactly like a raw tensor (32·N, no header), so later pipeline
stages may still compress it and it counts among the targeted layers. Grouped and depthwise convs
and layers below ``min_numel`` are not targeted: they stay raw.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, Compressed, CompressorSpec, Context, check, weight_layers

from .codes import HEADER_BITS, BottleneckNetwork, DenseCode, SvdCode, TuckerCode, TuckerNetwork

__all__ = ["SPEC", "LowRankConfig", "SvdCode", "TuckerCode", "DenseCode", "BottleneckNetwork",
           "TuckerNetwork", "energy_rank", "svd_code", "tucker_code", "compress", "compress_tensor"]

DEFAULT_ENERGY = 0.95
RULES = ("rank", "energy", "target_ratio")


# -- config -----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LowRankConfig:
    """Settings of ``lowrank``. Set at most one rank rule; with none, ``energy`` is 0.95.

    Attributes:
        method: "svd" (truncated SVD of the layer reshaped to C_out × C_in·k·k) or "tucker2"
            (Tucker-2 of convs with a spatial kernel; linear layers and 1×1 convs use SVD).
        rank: a fixed rank r for every layer (Tucker-2: R_o = min(r, C_out), R_i = min(r, C_in)).
        energy: the smallest rank keeping this fraction e of Σσ² (Tucker-2: per mode, on the
            unfoldings); e = 1 keeps full rank, so every layer stays dense (the identity).
        target_ratio: per layer, the largest rank whose stored bits are at most the layer's fp32
            bits / target_ratio (at least rank 1).
        hooi_iters: HOOI refinement sweeps after HOSVD (Tucker-2 only).
        min_numel: leave weights with fewer elements raw.
        skip_first / skip_last: leave the first / last conv or linear layer raw.
    """

    method: Literal["svd", "tucker2"] = "svd"
    rank: int | None = None
    energy: float | None = None
    target_ratio: float | None = None
    hooi_iters: int = 0
    min_numel: int = 0
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        rules = {k: getattr(self, k) for k in RULES if getattr(self, k) is not None}
        check(len(rules) <= 1, "set only one of rank, energy, target_ratio, got "
              + ", ".join(f"{k}={v}" for k, v in rules.items()), sorted(rules)[-1] if rules else None)
        if self.rank is not None:
            check(self.rank >= 1, f"rank must be >= 1, got {self.rank}", "rank")
        if self.energy is not None:
            check(0.0 < self.energy <= 1.0, f"energy must be in (0, 1], got {self.energy}", "energy")
        if self.target_ratio is not None:
            check(self.target_ratio >= 1.0, f"target_ratio must be >= 1, got {self.target_ratio}",
                  "target_ratio")
        check(self.hooi_iters >= 0, f"hooi_iters must be >= 0, got {self.hooi_iters}", "hooi_iters")
        check(self.min_numel >= 0, f"min_numel must be >= 0, got {self.min_numel}", "min_numel")
        if not rules:  # the default rule, written into the config so the record shows it
            object.__setattr__(self, "energy", DEFAULT_ENERGY)


# -- rank selection and the decompositions -----------------------------------------------------------------
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
    if sigma is None:
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


# -- the compressor -----------------------------------------------------------------------------------------
def compress(model: nn.Module, config: LowRankConfig, ctx: Context) -> Compressed:
    layers = weight_layers(model, min_numel=config.min_numel, skip_first=config.skip_first,
                           skip_last=config.skip_last)
    layers = {k: m for k, m in layers.items() if getattr(m, "groups", 1) == 1}  # depthwise/grouped stay raw
    state = model.state_dict()
    progress = ctx.progress(len(layers), "lowrank")
    codes: dict[str, Code] = {}
    for key in layers:
        codes[key] = compress_weight(state[key], config)
        progress.update()
    progress.close()
    ranks = {k: c.stats().get("rank", "dense") for k, c in codes.items()}
    factored = sum(not isinstance(c, DenseCode) for c in codes.values())
    return Compressed.from_codes(model, codes, info={"ranks": ranks, "factored_layers": factored,
                                                     "dense_layers": len(codes) - factored})


def compress_tensor(name: str, tensor: torch.Tensor, config: LowRankConfig, ctx: Context) -> Code:
    """One tensor (e.g. a payload of an earlier stage): 0-D and 1-D tensors stay dense."""
    return compress_weight(tensor, config)


SPEC = CompressorSpec(
    name="lowrank",
    family="lowrank",
    track="data-free",
    config=LowRankConfig,
    compress=compress,
    compress_tensor=compress_tensor,
    codes=(SvdCode, TuckerCode, DenseCode),
    identity={"energy": 1.0},
    version="1",
    description="truncated SVD (a conv as C_out x C_in*k*k) or Tucker-2 (HOSVD/HOOI) by rank/energy/ratio",
)


@b2s.hookimpl
def b2s_register_compressors(register: Any) -> None:
    register(SPEC)
