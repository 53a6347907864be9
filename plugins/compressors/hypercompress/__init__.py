"""Hyper-Compression (Fan et al., arXiv 2409.00592): weights as points on a dynamical system's trajectory.

Two labelled variants (setting ``variant``):

* ``released`` follows the released code (``compress_decom_v3``, github.com/Juntongkuki/Hyper-Compression),
  our reading of it in methods.md §6.3. Every parameter with at least ``min_numel`` (10) entries,
  biases and BatchNorm γ/β included, is flattened, padded to even length with its mean and cut into
  pairs. The pairs' centroid c centres a square of side ``rect_l``; the codebook is c plus the n
  points of a wound line in the square (a sheared lattice, see :mod:`.hypercompress_codebook`).
  Pairs outside the square are sorted by radius into 1..``class_max`` rings, pulled into the square
  by their ring's factor, snapped and pushed back out; the index stored is ``class·(n+1) + codeword``.
  The class count of a layer is the first whose mean absolute error is at most ``loss_threshold``,
  else the best one. With ``set_loss_limit``, a layer whose MAE exceeds ``loss_limit`` (0.006) stays
  fp32. Weights are not normalised: ``rect_l`` is in weight units, as in the released code.
* ``canonical`` is the paper's theoretical form (methods.md §6.2): weights normalised to [0,1] per
  tensor (min and max kept in fp32), groups of ``k`` weights, and for each group the integer
  n < ``n_c`` whose point x(n) = frac(n·δ·a), a_k = 1/(π+k), δ = ``delta``, is nearest (exact search).

Theory form: the decoder of a group is the one-parameter orbit h(θ) = θ·a mod 1 (released: a point of
the closed wound line, scaled by a ring factor), and the regularizer is the integer constraint
θ ∈ δ·{0, …, N_c − 1}. There is no useful gradient fit: h is periodic and the constraint discrete, and
the exact nearest-point search already is the projection, so ``as_network()`` returns None.

Bits: released, ⌈N/2⌉·⌈log2((n+1)(classes+1))⌉ for the indices plus 4×32 (centroid and farthest
pair) and a 32-bit header (class count, n, padding) per layer; canonical, ⌈N/k⌉·⌈log2 N_c⌉ plus 2×32
(min, max) and a 32-bit header. Skipped tensors and BatchNorm running statistics stay raw fp32 and
count (the released code does not count the statistics, methods.md §6.3 item 6).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import (
    Code,
    Compressed,
    CompressorSpec,
    Context,
    SizeBreakdown,
    StoredTensorCode,
    ceil_log2,
    check,
    pack_bits,
    unpack_bits,
)

from .codebook import encode_pairs, lattice_decode, trajectory, winding_index

HEADER_BITS = 32  # class count / n / padding (released) or padding (canonical), one word per layer
FLOAT_BITS = 32


def _shape_numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


@dataclasses.dataclass
class LatticeCode(Code):
    """Released variant: pair indices ``class·(n+1) + codeword``, the centroid and the farthest pair.

    R(φ) is the indicator of the integer constraint: the number of indices outside
    0..(n+1)(classes+1)−1, which is 0 for every code this compressor writes. No network form
    (``as_network`` is None): the decoder is a lookup of integer indices, with nothing to descend on.
    """

    idx: torch.Tensor  # (pairs,) int64
    n: int
    rect_l: float
    classes: int
    center: torch.Tensor  # (2,) fp32
    farthest: torch.Tensor  # (2,) fp32
    pad: int
    orig_shape: tuple[int, ...]
    kind = "hypercompress.lattice"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.orig_shape)

    @property
    def nbits(self) -> int:
        return max(1, ceil_log2((self.n + 1) * (self.classes + 1)))

    def decode(self) -> torch.Tensor:
        pairs = lattice_decode(self.idx, self.n, self.rect_l, self.classes, self.center, self.farthest)
        flat = pairs.reshape(-1)[: _shape_numel(self.shape)]
        return flat.float().reshape(self.shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(indices=self.idx.numel() * self.nbits, metadata=4 * FLOAT_BITS + HEADER_BITS)

    def regularizer(self) -> torch.Tensor:
        return ((self.idx < 0) | (self.idx >= (self.n + 1) * (self.classes + 1))).sum().float()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"idx": pack_bits(self.idx, self.nbits), "center": self.center.float().contiguous(),
                "farthest": self.farthest.float().contiguous()}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.orig_shape), "n": self.n, "rect_l": self.rect_l, "classes": self.classes,
                "pad": self.pad, "pairs": int(self.idx.numel())}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> LatticeCode:
        nbits = max(1, ceil_log2((meta["n"] + 1) * (meta["classes"] + 1)))
        idx = unpack_bits(tensors["idx"], nbits, meta["pairs"])
        return cls(idx, meta["n"], float(meta["rect_l"]), meta["classes"], tensors["center"].float(),
                   tensors["farthest"].float(), meta["pad"], tuple(meta["shape"]))

    def stats(self) -> dict[str, Any]:
        return {"classes": self.classes, "n": self.n, "index_bits": self.nbits,
                "bits_per_weight": self.bits().total / max(_shape_numel(self.shape), 1)}


@dataclasses.dataclass
class WindingCode(Code):
    """Canonical variant: one trajectory index n < N_c per group of k weights, and the tensor's range.

    R(φ) is the indicator of the constraint n ∈ {0, …, N_c − 1} (the count of violations, 0 here).
    No network form (``as_network`` is None): h(θ) = θ·a mod 1 is periodic, so a gradient fit of a real
    θ only slides along the winding into the nearest local minimum; the exact search is the projection.
    """

    idx: torch.Tensor  # (groups,) int64
    k: int
    n_c: int
    delta: float
    lo: float  # fp32 values
    hi: float
    pad: int
    orig_shape: tuple[int, ...]
    kind = "hypercompress.winding"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.orig_shape)

    @property
    def nbits(self) -> int:
        return max(1, ceil_log2(self.n_c))

    def decode(self) -> torch.Tensor:
        x = trajectory(self.idx, self.k, self.delta).reshape(-1)[: _shape_numel(self.shape)]
        return (self.lo + x * (self.hi - self.lo)).float().reshape(self.shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(indices=self.idx.numel() * self.nbits, metadata=2 * FLOAT_BITS + HEADER_BITS)

    def regularizer(self) -> torch.Tensor:
        return ((self.idx < 0) | (self.idx >= self.n_c)).sum().float()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"idx": pack_bits(self.idx, self.nbits),
                "range": torch.tensor([self.lo, self.hi], dtype=torch.float32)}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.orig_shape), "k": self.k, "n_c": self.n_c, "delta": self.delta,
                "pad": self.pad, "groups": int(self.idx.numel())}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> WindingCode:
        idx = unpack_bits(tensors["idx"], max(1, ceil_log2(meta["n_c"])), meta["groups"])
        lo, hi = (float(v) for v in tensors["range"].float())
        return cls(idx, meta["k"], meta["n_c"], float(meta["delta"]), lo, hi, meta["pad"],
                   tuple(meta["shape"]))

    def stats(self) -> dict[str, Any]:
        return {"k": self.k, "n_c": self.n_c,
                "bits_per_weight": self.bits().total / max(_shape_numel(self.shape), 1)}


class RawCode(StoredTensorCode):
    """A tensor kept in fp32 (only from ``compress_tensor``: tiny tensors and the loss-limit fallback)."""

    kind = "hypercompress.raw"


@dataclasses.dataclass(frozen=True)
class HyperCompressConfig:
    """Settings of ``hypercompress``.

    Attributes:
        variant: "released" (the released code's lattice with outlier rings; faithful to the code) or
            "canonical" (the paper's irrational winding; faithful to the method's theory).
        n: released: codewords in the square (besides the centroid); 1600 is the MobileNetV3 default.
        rect_l: released: side of the square, in weight units (0.8 for MobileNetV3).
        class_max: released: the most outlier rings (4 for MobileNetV3).
        loss_threshold: released: the MAE a layer's class count aims for (0.001).
        set_loss_limit / loss_limit: keep a layer fp32 when its MAE exceeds ``loss_limit`` (the released
            code's hard-coded 0.006); applies to both variants.
        min_numel: parameters with fewer entries stay fp32 (the released code's 10).
        k / n_c / delta: canonical: group size K, trajectory length N_c (⌈log2 N_c⌉ bits a group, N_c at
            most 2^20) and step δ = 1/R (the code's first variant used R = 10).
    """

    variant: Literal["released", "canonical"] = "released"
    n: int = 1600
    rect_l: float = 0.8
    class_max: int = 4
    loss_threshold: float = 0.001
    set_loss_limit: bool = False
    loss_limit: float = 0.006
    min_numel: int = 10
    k: int = 2
    n_c: int = 4096
    delta: float = 0.1

    def __post_init__(self) -> None:
        b2s.one_of(self.variant, ("released", "canonical"), "variant")
        check(1 <= self.n <= 1 << 20, f"n must be in 1..{1 << 20}, got {self.n}", "n")
        check(math.isfinite(self.rect_l) and self.rect_l > 0, f"rect_l must be > 0, got {self.rect_l}",
              "rect_l")
        check(1 <= self.class_max <= 255, f"class_max must be in 1..255, got {self.class_max}", "class_max")
        check(ceil_log2((self.n + 1) * (self.class_max + 1)) <= 32,
              f"n={self.n} with class_max={self.class_max} needs indices wider than 32 bits", "class_max")
        check(math.isfinite(self.loss_threshold) and self.loss_threshold >= 0,
              f"loss_threshold must be >= 0, got {self.loss_threshold}", "loss_threshold")
        check(math.isfinite(self.loss_limit) and self.loss_limit > 0,
              f"loss_limit must be > 0, got {self.loss_limit}", "loss_limit")
        check(self.min_numel >= 1, f"min_numel must be >= 1, got {self.min_numel}", "min_numel")
        check(1 <= self.k <= 8, f"k must be in 1..8, got {self.k}", "k")
        check(2 <= self.n_c <= 1 << 20, f"n_c must be in 2..{1 << 20}, got {self.n_c}", "n_c")
        check(math.isfinite(self.delta) and self.delta > 0, f"delta must be > 0, got {self.delta}", "delta")


def encode_tensor(w: torch.Tensor, config: HyperCompressConfig) -> tuple[Code, dict[str, Any]]:
    """One tensor's code and its facts for the record (MAE over the tensor, bits per weight, ...)."""
    w = w.detach().float().cpu()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("hypercompress cannot encode a tensor with non-finite values")
    shape = tuple(w.shape)
    if config.variant == "released":
        idx, classes, center, farthest, pad, facts = encode_pairs(
            w.reshape(-1), config.n, config.rect_l, config.class_max, config.loss_threshold)
        code: Code = LatticeCode(idx, config.n, config.rect_l, classes, center, farthest, pad, shape)
        facts = {"classes": classes, "outer_pairs": facts["outer_pairs"]}
    else:
        flat = w.reshape(-1).double()
        lo32, hi32 = flat.min().float(), flat.max().float()
        lo, hi = float(lo32), float(hi32)
        u = (flat - lo) / (hi - lo) if hi > lo else torch.zeros_like(flat)
        pad = (-flat.numel()) % config.k
        u = torch.cat([u, u.new_zeros(pad)]).reshape(-1, config.k)
        idx = winding_index(config.k, config.n_c, config.delta).nearest(u)
        code = WindingCode(idx, config.k, config.n_c, config.delta, lo, hi, pad, shape)
        facts = {}
    err = (code.decode() - w).abs()
    facts["mae"] = float(err.mean())
    facts["rel_error"] = float(err.norm() / w.norm().clamp(min=1e-30))
    facts["bits_per_weight"] = code.bits().total / max(w.numel(), 1)
    return code, facts


def targets(model: nn.Module, min_numel: int) -> tuple[list[str], list[str]]:
    """(parameters to encode, parameters too small to encode); buffers are never encoded."""
    names = [k for k, _ in model.named_parameters()]
    state = model.state_dict()
    big = [k for k in names if k in state and state[k].numel() >= min_numel and state[k].is_floating_point()]
    return big, [k for k in names if k not in big]


def compress(model: nn.Module, config: HyperCompressConfig, ctx: Context) -> Compressed:
    keys, small = targets(model, config.min_numel)
    state = model.state_dict()
    codes: dict[str, Code] = {}
    layers: dict[str, dict[str, Any]] = {}
    fallback: list[str] = []
    bar = ctx.progress(len(keys), f"hypercompress ({config.variant})")
    for key in keys:  # one tensor at a time; each tensor is encoded fully vectorized
        code, facts = encode_tensor(state[key], config)
        if config.set_loss_limit and facts["mae"] > config.loss_limit:
            fallback.append(key)
            facts["raw_fallback"] = True
        else:
            codes[key] = code
        layers[key] = facts
        bar.update()
    bar.close()
    coded = [layers[k] for k in codes]
    info = {
        "variant": config.variant,
        "layers": layers,
        "raw_fallback": fallback,
        "raw_small": small,
        "mae_mean": sum(f["mae"] for f in coded) / len(coded) if coded else 0.0,
        "bits_per_weight_coded": (sum(c.bits().total for c in codes.values())
                                  / max(sum(state[k].numel() for k in codes), 1)),
    }
    if config.variant == "released":
        info["classes"] = {k: layers[k]["classes"] for k in codes}
    return Compressed.from_codes(model, codes, info=info)


def compress_tensor(name: str, tensor: torch.Tensor, config: HyperCompressConfig, ctx: Context) -> Code:
    """A later pipeline stage: encode one payload tensor (fp32 when too small or over the loss limit)."""
    if tensor.numel() < config.min_numel:
        return RawCode(tensor.detach().float().cpu().clone())
    code, facts = encode_tensor(tensor, config)
    if config.set_loss_limit and facts["mae"] > config.loss_limit:
        return RawCode(tensor.detach().float().cpu().clone())
    return code


SPEC = CompressorSpec(
    name="hypercompress",
    family="ergodic",
    track="data-free",
    config=HyperCompressConfig,
    compress=compress,
    compress_tensor=compress_tensor,
    codes=(LatticeCode, WindingCode, RawCode),
    identity=None,  # none: a finite codebook of orbit points cannot hit every fp32 value exactly
    version="1",
    description=("Hyper-Compression (2409.00592): variant=released follows the released code (pairs on a "
                 "wound-line lattice + outlier rings); variant=canonical the paper's irrational winding"),
    quick={"n_c": 1024},
)


@b2s.hookimpl
def b2s_register_compressors(register: Any) -> None:
    register(SPEC)
