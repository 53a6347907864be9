"""Low-rank decomposition without data: truncated SVD of conv/linear layers, or Tucker-2 of convs.

Theory form: W = A Bᵀ, a two-layer linear network with an r-wide bottleneck; R(φ) is the rank,
relaxed to the nuclear norm ||W||_* = min ½(||A||² + ||B||²) over A Bᵀ = W. Truncated SVD with Σ
split as √Σ into both factors is the closed-form minimizer (Eckart–Young) and the balanced point
of the relaxation; the generic solver fitting the bottleneck network from a random start reaches
it (linear networks have no spurious local minima). Tucker-2 (HOSVD, optionally refined by HOOI)
is the multilinear analogue for convs: W = G ×₁ U_out ×₂ U_in.

Deployed forms: SVD of a conv is Conv(C_in→r, k×k, same stride/padding/dilation) followed by
Conv(r→C_out, 1×1, with the bias); of a linear layer, Linear→Linear. Tucker-2 is
1×1 (C_in→R_i) → k×k (R_i→R_o) → 1×1 (R_o→C_out, with the bias).

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
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, Compressed, CompressorSpec, Context, SizeBreakdown, check
from b2s_bench.targets import weight_layers

HEADER_BITS = 32
DEFAULT_ENERGY = 0.95
RULES = ("rank", "energy", "target_ratio")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# -- codes ---------------------------------------------------------------------------------------------
def _rms(t: torch.Tensor) -> float:
    return float(t.float().pow(2).mean().sqrt().clamp(min=1e-6))


def _fresh(t: torch.Tensor) -> torch.Tensor:
    """A freshly allocated fp32 copy: a loaded tensor may sit at an odd alignment in the file's buffer,
    which changes the BLAS kernel and hence the last bit of a matmul, so decode would not round-trip."""
    return t.detach().to(torch.float32, copy=True).contiguous()


def _sq(*tensors: torch.Tensor) -> torch.Tensor:
    return 0.5 * sum((t.float().pow(2).sum() for t in tensors), torch.zeros(()))


@dataclasses.dataclass
class SvdCode(Code):
    """W ≈ A Bᵀ with A = U_r Σ_r^½ (m × r) and B = V_r Σ_r^½ (n × r); W is the tensor reshaped to m × n."""

    a: torch.Tensor  # (m, r)
    b: torch.Tensor  # (n, r)
    orig_shape: tuple[int, ...]
    kind = "lowrank.svd"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.orig_shape)

    @property
    def rank(self) -> int:
        return int(self.a.shape[1])

    def decode(self) -> torch.Tensor:
        return (self.a.float() @ self.b.float().T).reshape(self.orig_shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=32 * (self.a.numel() + self.b.numel()), metadata=HEADER_BITS)

    def regularizer(self) -> torch.Tensor:
        return _sq(self.a, self.b)  # = ||A Bᵀ||_* at the balanced √Σ split

    def payload(self) -> dict[str, torch.Tensor]:
        return {"a": self.a, "b": self.b}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"a": self.a.float().contiguous(), "b": self.b.float().contiguous()}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.orig_shape), "rank": self.rank}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> SvdCode:
        return cls(_fresh(tensors["a"]), _fresh(tensors["b"]), tuple(meta["shape"]))

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> BottleneckNetwork:
        return BottleneckNetwork(self.a, self.b, self.orig_shape, init, generator)

    def stats(self) -> dict[str, Any]:
        m, n = self.a.shape[0], self.b.shape[0]
        return {"rank": self.rank, "max_rank": min(m, n), "form": "svd"}

    def deployed(self, layer: nn.Module) -> nn.Module | None:
        if isinstance(layer, nn.Linear):
            first = nn.Linear(layer.in_features, self.rank, bias=False)
            second = nn.Linear(self.rank, layer.out_features, bias=layer.bias is not None)
            first.weight.data = self.b.T.float().contiguous()
            second.weight.data = self.a.float().contiguous()
        elif isinstance(layer, _CONVS) and layer.groups == 1:
            spatial = tuple(layer.weight.shape[2:])
            first = _conv_like(layer, layer.in_channels, self.rank, spatial, bias=False)
            second = _pointwise(layer, self.rank, layer.out_channels, bias=layer.bias is not None)
            first.weight.data = self.b.T.float().reshape(self.rank, layer.in_channels, *spatial).contiguous()
            ones = [1] * len(spatial)
            second.weight.data = self.a.float().reshape(layer.out_channels, self.rank, *ones).contiguous()
        else:
            return None
        if layer.bias is not None:
            second.bias.data = layer.bias.detach().clone()
        return nn.Sequential(first, second).to(layer.weight.device)


@dataclasses.dataclass
class TuckerCode(Code):
    """Tucker-2 of a conv: W[o,i,...] = Σ_ab U_out[o,a] G[a,b,...] U_in[i,b]."""

    core: torch.Tensor  # (R_o, R_i, *kernel)
    u_out: torch.Tensor  # (C_out, R_o)
    u_in: torch.Tensor  # (C_in, R_i)
    kind = "lowrank.tucker2"

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.u_out.shape[0]), int(self.u_in.shape[0]), *self.core.shape[2:])

    def decode(self) -> torch.Tensor:
        return torch.einsum("ab...,oa,ib->oi...", self.core.float(), self.u_out.float(), self.u_in.float())

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=32 * (self.core.numel() + self.u_out.numel() + self.u_in.numel()),
                             metadata=HEADER_BITS)

    def regularizer(self) -> torch.Tensor:
        return _sq(self.core, self.u_out, self.u_in)

    def payload(self) -> dict[str, torch.Tensor]:
        return {"core": self.core, "u_out": self.u_out, "u_in": self.u_in}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.float().contiguous() for k, v in self.payload().items()}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "ranks": [int(self.core.shape[0]), int(self.core.shape[1])]}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> TuckerCode:
        return cls(_fresh(tensors["core"]), _fresh(tensors["u_out"]), _fresh(tensors["u_in"]))

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> TuckerNetwork:
        return TuckerNetwork(self, init, generator)

    def stats(self) -> dict[str, Any]:
        return {"rank": [int(self.core.shape[0]), int(self.core.shape[1])], "form": "tucker2"}

    def deployed(self, layer: nn.Module) -> nn.Module | None:
        if not isinstance(layer, _CONVS) or layer.groups != 1:
            return None
        r_o, r_i = int(self.core.shape[0]), int(self.core.shape[1])
        spatial = tuple(self.core.shape[2:])
        ones = [1] * len(spatial)
        first = _pointwise(layer, layer.in_channels, r_i, bias=False)
        middle = _conv_like(layer, r_i, r_o, spatial, bias=False)
        last = _pointwise(layer, r_o, layer.out_channels, bias=layer.bias is not None)
        first.weight.data = self.u_in.T.float().reshape(r_i, layer.in_channels, *ones).contiguous()
        middle.weight.data = self.core.float().contiguous()
        last.weight.data = self.u_out.float().reshape(layer.out_channels, r_o, *ones).contiguous()
        if layer.bias is not None:
            last.bias.data = layer.bias.detach().clone()
        return nn.Sequential(first, middle, last).to(layer.weight.device)


@dataclasses.dataclass
class DenseCode(Code):
    """A targeted layer kept dense (at or above break-even): 32 bits a weight, like a raw tensor."""

    weight: torch.Tensor
    kind = "lowrank.dense"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)

    def decode(self) -> torch.Tensor:
        return self.weight.float()

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=32 * self.weight.numel())

    def regularizer(self) -> torch.Tensor:
        # R = the rank the code allows: full, min(m, n), for a dense matrix
        w = self.weight
        return torch.tensor(float(min(w.shape[0], w.numel() // max(w.shape[0], 1)) if w.dim() >= 2 else 1))

    def payload(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.float().contiguous()}

    def meta(self) -> dict[str, Any]:
        return {}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> DenseCode:
        return cls(_fresh(tensors["weight"]))

    def stats(self) -> dict[str, Any]:
        return {"form": "dense"}


def _conv_like(layer: nn.Module, c_in: int, c_out: int, kernel: tuple[int, ...], bias: bool) -> nn.Module:
    return type(layer)(c_in, c_out, kernel, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, bias=bias, padding_mode=layer.padding_mode)


def _pointwise(layer: nn.Module, c_in: int, c_out: int, bias: bool) -> nn.Module:
    return type(layer)(c_in, c_out, 1, bias=bias)


# -- the networks ---------------------------------------------------------------------------------------
class BottleneckNetwork(b2s.DecoderNetwork):
    """g(A, B) = A Bᵀ: a linear network with an r-wide bottleneck, R = ½(||A||² + ||B||²).

    The bottleneck width is the hard rank constraint, so nothing is projected; with λ = 0 (the
    default) the solver minimizes the data term alone, whose global minimum is the truncated SVD.
    """

    projection = "never"
    solver_lam = 0.0

    def __init__(self, a: torch.Tensor, b: torch.Tensor, shape: tuple[int, ...], init: str = "code",
                 generator: torch.Generator | None = None):
        super().__init__()
        if init == "random":
            # small, balanced factors (a "small initialization"): gradient descent on a linear
            # network from here picks up the singular directions in order of their size
            scale = float(torch.sqrt(a.float().pow(2).mean() + b.float().pow(2).mean()).clamp(min=1e-6))
            a = torch.randn(a.shape, generator=generator) * 0.1 * scale
            b = torch.randn(b.shape, generator=generator) * 0.1 * scale
        self.a = nn.Parameter(a.detach().clone().float())
        self.b = nn.Parameter(b.detach().clone().float())
        self.shape = tuple(shape)

    def forward(self) -> torch.Tensor:
        return (self.a @ self.b.T).reshape(self.shape)

    def regularizer(self) -> torch.Tensor:
        return 0.5 * (self.a.pow(2).sum() + self.b.pow(2).sum())


class TuckerNetwork(b2s.DecoderNetwork):
    """g(G, U_out, U_in) = G ×₁ U_out ×₂ U_in: a multilinear network, R = ½ of the squared norms."""

    projection = "never"
    solver_lam = 0.0

    def __init__(self, code: TuckerCode, init: str = "code", generator: torch.Generator | None = None):
        super().__init__()
        tensors = [code.core, code.u_out, code.u_in]
        if init == "random":
            tensors = [torch.randn(t.shape, generator=generator) * 0.3 * _rms(t) for t in tensors]
        self.core, self.u_out, self.u_in = (nn.Parameter(t.detach().clone().float()) for t in tensors)

    def forward(self) -> torch.Tensor:
        return torch.einsum("ab...,oa,ib->oi...", self.core, self.u_out, self.u_in)

    def regularizer(self) -> torch.Tensor:
        return 0.5 * (self.core.pow(2).sum() + self.u_out.pow(2).sum() + self.u_in.pow(2).sum())


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


def _svd(w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(w2.double(), full_matrices=False)
    return u, s, vh


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
        u, sigma, vh = _svd(w.reshape(m, n))
        r = energy_rank(sigma, float(config.energy or DEFAULT_ENERGY))
    if r >= full or svd_words(m, n, r) >= m * n:
        return DenseCode(w.clone())
    if sigma is None:
        u, sigma, vh = _svd(w.reshape(m, n))
    root = sigma[:r].sqrt()
    a = (u[:, :r] * root).float().contiguous()
    b = (vh[:r].T * root).float().contiguous()
    return SvdCode(a, b, tuple(w.shape))


def _mode_basis(w: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and values of the mode-``mode`` unfolding (mode 0: C_out, 1: C_in)."""
    unfolded = w.movedim(mode, 0).reshape(w.shape[mode], -1)
    u, s, _ = torch.linalg.svd(unfolded, full_matrices=False)
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
