"""Uniform quantization (round-to-nearest): per tensor, per channel or per group; symmetric or affine.

Theory form: W = s·(q − z), a "rounding layer" q = round(V/s); R(φ) is the indicator of the grid,
and round-to-nearest is the closed-form minimizer for a fixed grid.

Bits: N·b for the codes, plus a scale (``scale_bits``) per group and, when affine, a b-bit zero
point per group, plus a 32-bit header per tensor. 16 and 32 bits store the tensor as fp16/fp32.
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
from b2s_bench.packing import pack_bits, unpack_bits
from b2s_bench.targets import weight_layers

HEADER_BITS = 32
FLOAT_BITS = (16, 32)


# -- the quantizer ----------------------------------------------------------------------------------
def _grouped(w: torch.Tensor, granularity: str, group_size: int) -> tuple[torch.Tensor, int]:
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
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
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


# -- the code -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class UniformCode(Code):
    """Integer codes q, per-group scales s and zero points z: W = s·(q − z)."""

    q: torch.Tensor  # (groups, group_len) integer-valued
    scale: torch.Tensor  # (groups,)
    zero: torch.Tensor  # (groups,) integer-valued (zeros when symmetric)
    nbits: int
    symmetric: bool
    scale_bits: int
    pad: int
    orig_shape: tuple[int, ...]
    kind = "quantize.uniform"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.orig_shape)

    def unflatten(self, groups: torch.Tensor) -> torch.Tensor:
        """(groups, group_len) -> the tensor's shape, dropping the padding."""
        rows = self.orig_shape[0] if len(self.orig_shape) >= 2 and groups.shape[0] != 1 else 1
        flat = groups.reshape(rows, -1)
        if self.pad:
            flat = flat[:, : flat.shape[1] - self.pad]
        return flat.reshape(self.orig_shape)

    def decode(self) -> torch.Tensor:
        return self.unflatten(self.scale.float()[:, None] * (self.q.float() - self.zero.float()[:, None]))

    def bits(self) -> SizeBreakdown:
        groups = self.scale.numel()
        return SizeBreakdown(
            payload=self.q.numel() * self.nbits,
            scales=groups * self.scale_bits + (0 if self.symmetric else groups * self.nbits),
            metadata=HEADER_BITS,
        )

    def regularizer(self) -> torch.Tensor:
        # the indicator of the grid: zero, since every stored code is a grid point
        return (self.q - torch.round(self.q)).abs().sum().float()

    def tensors(self) -> dict[str, torch.Tensor]:
        offset = 2 ** (self.nbits - 1) if self.symmetric else 0
        out = {"q": pack_bits(self.q.to(torch.int64) + offset, self.nbits),
               "scale": self.scale.to(torch.float16 if self.scale_bits == 16 else torch.float32)}
        if not self.symmetric:
            out["zero"] = pack_bits(self.zero.to(torch.int64), self.nbits)
        return out

    def meta(self) -> dict[str, Any]:
        return {"nbits": self.nbits, "symmetric": self.symmetric, "scale_bits": self.scale_bits, "pad": self.pad,
                "shape": list(self.orig_shape), "q_shape": list(self.q.shape)}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> UniformCode:
        q_shape = tuple(meta["q_shape"])
        n = math.prod(q_shape)
        offset = 2 ** (meta["nbits"] - 1) if meta["symmetric"] else 0
        q = (unpack_bits(tensors["q"], meta["nbits"], n) - offset).float().reshape(q_shape)
        scale = tensors["scale"].float()
        zero = unpack_bits(tensors["zero"], meta["nbits"], scale.numel()).float() if "zero" in tensors else torch.zeros_like(scale)
        return cls(q, scale, zero, meta["nbits"], meta["symmetric"], meta["scale_bits"], meta["pad"], tuple(meta["shape"]))

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> RoundingNetwork:
        return RoundingNetwork(self, init, generator)

    def stats(self) -> dict[str, Any]:
        return {"bits": self.nbits, "groups": self.scale.numel()}


class RoundingNetwork(b2s.DecoderNetwork):
    """The rounding layer relaxed: g(V) = V, with R(V) = mean squared distance of V to the grid.

    s and z stay fixed. Fitted to W with R's weight ramped up, V is pulled onto the grid point
    nearest to W, and ``project()`` snaps it there: round-to-nearest, reached by gradient descent.
    """

    projection = "end"
    solver_lam = 1.0

    def __init__(self, code: UniformCode, init: str, generator: torch.Generator | None):
        super().__init__()
        self.code = code
        start = code.scale[:, None] * (code.q - code.zero[:, None])  # V lives in the grouped layout
        if init == "random":
            start = torch.randn(start.shape, generator=generator) * start.std().clamp(min=1e-3)
        self.v = nn.Parameter(start.clone().float())

    def _snapped(self) -> torch.Tensor:
        c = self.code
        qmin, qmax = (-(2 ** (c.nbits - 1)), 2 ** (c.nbits - 1) - 1) if c.symmetric else (0, 2**c.nbits - 1)
        q = torch.clamp(torch.round(self.v / c.scale[:, None]) + c.zero[:, None], qmin, qmax)
        return c.scale[:, None] * (q - c.zero[:, None])

    def forward(self) -> torch.Tensor:
        return self.code.unflatten(self.v)

    def regularizer(self) -> torch.Tensor:
        return (self.v - self._snapped().detach()).pow(2).mean()  # in weight units, like the data term

    @torch.no_grad()
    def project(self) -> None:
        self.v.copy_(self._snapped())


@dataclasses.dataclass
class FloatCode(Code):
    """A tensor stored as fp16 or fp32 (the 16- and 32-bit settings)."""

    value: torch.Tensor
    kind = "quantize.float"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def decode(self) -> torch.Tensor:
        return self.value.float()

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=self.value.numel() * b2s.sizes.dtype_bits(self.value.dtype), metadata=HEADER_BITS)

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"value": self.value}

    def meta(self) -> dict[str, Any]:
        return {}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> FloatCode:
        return cls(tensors["value"])


# -- the compressor -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """Settings of ``quantize``.

    Attributes:
        bits: 2-8 for integer codes; 16 or 32 store fp16 / fp32 (32 reproduces the dense model).
        granularity: one scale per tensor, per output channel, or per group of ``group_size``
            consecutive weights of an output channel.
        symmetric: symmetric (no zero point) or affine (a b-bit zero point per group).
        clipping: "minmax" (round-to-nearest over the full range) or "mse" (MSE-optimal clipping).
        scale_bits: stored precision of the scales (16 or 32).
        skip_first / skip_last: keep the first / last conv or linear layer in fp32.
    """

    bits: int = 8
    granularity: Literal["tensor", "channel", "group"] = "channel"
    group_size: int = 128
    symmetric: bool = True
    clipping: Literal["minmax", "mse"] = "minmax"
    scale_bits: int = 32
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        check(2 <= self.bits <= 8 or self.bits in FLOAT_BITS, f"bits must be in 2..8, 16 or 32, got {self.bits}", "bits")
        check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}", "group_size")
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}", "scale_bits")


def quantize_tensor(w: torch.Tensor, config: QuantizeConfig) -> Code:
    """Quantize one tensor (any shape; 0-D and 1-D tensors get one scale)."""
    if config.bits in FLOAT_BITS:
        return FloatCode(w.detach().to(torch.float16 if config.bits == 16 else torch.float32).cpu().clone())
    g, pad = _grouped(w.detach().cpu(), config.granularity, config.group_size)
    q, scale, zero = quantize_groups(g, config.bits, config.symmetric, config.clipping)
    if config.scale_bits == 16:
        scale = scale.half().float()
    return UniformCode(q, scale, zero, config.bits, config.symmetric, config.scale_bits, pad, tuple(w.shape))


def compress(model: nn.Module, config: QuantizeConfig, ctx: Context) -> Compressed:
    layers = weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    codes = {key: quantize_tensor(state[key], config) for key in layers}
    return Compressed.from_codes(model, codes)


def compress_tensor(name: str, tensor: torch.Tensor, config: QuantizeConfig, ctx: Context) -> Code:
    return quantize_tensor(tensor, config)


SPEC = CompressorSpec(
    name="quantize",
    family="quantization",
    track="data-free",
    config=QuantizeConfig,
    compress=compress,
    compress_tensor=compress_tensor,
    codes=(UniformCode, FloatCode),
    identity={"bits": 32},
    version="1",
    description="round-to-nearest uniform quantization of conv/linear weights (tensor/channel/group, sym/affine)",
)


@b2s.hookimpl
def b2s_register_compressors(register: Any) -> None:
    register(SPEC)
