"""The codes of ``lowrank``: SVD factors, a Tucker-2 core and factors, or a dense weight.

Each factored code has a network form (for the generic solver) and a deployed form: SVD of a conv
is Conv(C_in→r, k×k, the layer's stride/padding/dilation) then Conv(r→C_out, 1×1, with the bias);
of a linear layer, Linear→Linear. Tucker-2 is 1×1 (C_in→R_i) → k×k (R_i→R_o) → 1×1 (R_o→C_out,
with the bias). Bits: the factors at 32 bits (payload) plus a 32-bit header (the ranks).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown

__all__ = ["HEADER_BITS", "SvdCode", "TuckerCode", "DenseCode", "BottleneckNetwork", "TuckerNetwork"]

#: the header words of an SVD code of a matrix (2 dims and the rank), for the rank budget of
#: decompose.py; a code counts its real header, ``b2s.header_bits(meta())`` (one word a field)
HEADER_BITS = 32 * 3
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


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
    def rank(self) -> int:
        return int(self.a.shape[1])

    def decode(self) -> torch.Tensor:
        return (self.a.float() @ self.b.float().T).reshape(self.orig_shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=32 * (self.a.numel() + self.b.numel()), metadata=b2s.header_bits(self.meta()))

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
        if not isinstance(layer, (nn.Linear, *_CONVS)) or getattr(layer, "groups", 1) != 1:
            return None
        r = self.rank
        first = self.b.T.reshape(r, *layer.weight.shape[1:])  # C_in -> r with the layer's kernel
        return _wrap(layer, [_spatial_like(layer, first), _pointwise(layer, self.a, layer.bias)])


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
        return SizeBreakdown(
            payload=32 * (self.core.numel() + self.u_out.numel() + self.u_in.numel()), metadata=b2s.header_bits(self.meta())
        )

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
        return _wrap(
            layer,
            [_pointwise(layer, self.u_in.T, None), _spatial_like(layer, self.core), _pointwise(layer, self.u_out, layer.bias)],
        )


class DenseCode(b2s.StoredTensorCode):
    """A targeted layer kept dense (at or above break-even): 32 bits a weight, like a raw tensor.

    A stored tensor, counted as payload (not raw: it is a targeted layer, and a later pipeline stage
    may compress it). Its artifact tensor and payload keep the name "weight".
    """

    kind = "lowrank.dense"
    stored_part = "payload"

    def __post_init__(self) -> None:
        self.value = self.value.float()  # stored at fp32 (tensors()), so counted at 32 bits a weight

    @property
    def weight(self) -> torch.Tensor:
        return self.value

    def regularizer(self) -> torch.Tensor:
        """||W||_*, as for SvdCode (whose ½(||A||² + ||B||²) is the nuclear norm of A Bᵀ)."""
        w = self.value.detach().double()
        matrix = w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)
        return torch.linalg.svdvals(matrix).sum().float()

    def payload(self) -> dict[str, torch.Tensor]:
        return {"weight": self.value}

    def replace_payload(self, tensors: Mapping[str, torch.Tensor]) -> DenseCode:
        return DenseCode(tensors.get("weight", self.value))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.value.float().contiguous()}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> DenseCode:
        return cls(_fresh(tensors["weight"]))

    def stats(self) -> dict[str, Any]:
        return {"form": "dense"}


def _spatial_like(layer: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d, weight: torch.Tensor) -> nn.Module:
    """A bias-free copy of ``layer`` with another weight (and channel counts): it keeps the layer's
    type and settings, e.g. timm's Conv2dSame dynamic padding, stride, dilation and padding mode."""
    new = copy.deepcopy(layer)
    for hooks in _HOOK_DICTS:  # the input hooks move to the wrapper (see _wrap)
        getattr(new, hooks, {}).clear()
    new.weight = nn.Parameter(weight.float().contiguous(), requires_grad=layer.weight.requires_grad)
    new.register_parameter("bias", None)
    if isinstance(new, nn.Linear):
        new.out_features, new.in_features = weight.shape[0], weight.shape[1]
    else:
        new.out_channels, new.in_channels = weight.shape[0], weight.shape[1] * new.groups
    return new


def _pointwise(
    layer: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d, weight: torch.Tensor, bias: torch.Tensor | None
) -> nn.Module:
    """A 1×1 conv (or a linear layer) with ``weight`` (out, in) and the optional bias."""
    out_ch, in_ch = int(weight.shape[0]), int(weight.shape[1])
    if isinstance(layer, nn.Linear):
        new: nn.Module = nn.Linear(in_ch, out_ch, bias=bias is not None)
    else:
        conv = next(c for c in _CONVS if isinstance(layer, c))  # plain: a 1×1 conv needs no padding
        new = conv(in_ch, out_ch, 1, bias=bias is not None)
    spatial = [1] * (layer.weight.dim() - 2)
    new.weight.data = weight.float().reshape(out_ch, in_ch, *spatial).contiguous()
    if bias is not None:
        new.bias.data = bias.detach().float().clone()
    return new


def _wrap(layer: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d, modules: list[nn.Module]) -> nn.Sequential:
    """The factors as one module; the layer's hooks (e.g. simulated activation quantization) move to it."""
    seq = nn.Sequential(*modules)
    for hooks in _HOOK_DICTS:
        if hasattr(layer, hooks):
            getattr(seq, hooks).update(getattr(layer, hooks))
    return seq.to(layer.weight.device)


# -- the networks ---------------------------------------------------------------------------------------
class BottleneckNetwork(b2s.DecoderNetwork):
    """g(A, B) = A Bᵀ: a linear network with an r-wide bottleneck, R = ½(||A||² + ||B||²).

    The bottleneck width is the hard rank constraint, so nothing is projected; with λ = 0 (the
    default) the solver minimizes the data term alone, whose global minimum is the truncated SVD.
    """

    projection = "never"
    solver_lam = 0.0

    def __init__(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        shape: tuple[int, ...],
        init: str = "code",
        generator: torch.Generator | None = None,
    ):
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
