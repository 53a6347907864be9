"""The INR of one weight tensor: coordinates, Fourier features, and a FiLM-modulated SIREN.

Everything here is written for a *stack* of G INRs of the same architecture (every parameter has a
leading layer dimension G), so one call evaluates all the layers of a group with ``torch.baddbmm``;
a single INR is the case G = 1.

Our [D] architecture (the paper's exact one is not public):

* **Coordinates.** The tensor is viewed as the 2-D matrix (out, in·k·k) that the losses use. Each
  row is cut into blocks of ``block`` consecutive entries (the last one zero-padded), and the INR maps
  a block's coordinate to its ``block`` values (``block=1``: one entry per coordinate; larger blocks
  share one evaluation of the network among several entries, like NeRN's whole-kernel outputs). A
  block's coordinate is (row, block index) (``layout="2d"``) or the index of its first entry along
  every axis of the original tensor (``layout="nd"``: (o, i, u, v) for a conv), each normalised to
  [-1, 1] (an axis of length 1 gives 0).
* **Fourier features.** γ(x) = [x, sin(ω x), cos(ω x)] per axis with ``frequencies`` log-spaced ω from
  π/2 up to the axis' Nyquist frequency π(n-1)/2 (``fourier="log"``: fixed by the shape, nothing to
  store), or γ(x) = [x, sin(x B), cos(x B)] with a Gaussian B of std Nyquist/3 per axis drawn from a
  seed that is stored in the header (``fourier="gaussian"``).
* **Synthesis network.** ``depth`` sine layers of ``width`` units, h₁ = sin(ω₀·a₁), with
  a_l = FiLM_l(W_l h_{l-1} + b_l), then a linear output unit. SIREN initialisation: first layer
  U(-1/n, 1/n), later layers U(-√(6/n)/ω₀, √(6/n)/ω₀), biases U(-1/√n, 1/√n).
* **Modulation network.** A one-hidden-layer ReLU MLP of ``mod_width`` units on the same Fourier
  features outputs a scale s_l and shift t_l for every sine layer: FiLM_l(a) = a·(1 + s_l) + t_l.
  Its output layer starts at zero, so training starts from a plain SIREN. ``mod_width=0`` removes it.
* **Output.** A linear layer from the last sine layer to the ``block`` values of the coordinate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import torch

from .config import FOURIERS, LAYOUTS

__all__ = [
    "INRArch",
    "Geometry",
    "param_shapes",
    "param_count",
    "init_params",
    "inr_apply",
    "features",
    "fake_quant",
    "LAYOUTS",
    "FOURIERS",
]


def fp32(x: float) -> float:
    """``x`` rounded to the nearest fp32 value (what is stored and what the computation uses)."""
    return float(np.float32(x))


@dataclasses.dataclass(frozen=True)
class INRArch:
    """Architecture of one INR (everything but its parameters)."""

    width: int
    depth: int
    mod_width: int
    omega0: float
    frequencies: int
    fourier: str
    coord_dims: int  # 2 for layout "2d", the tensor's ndim for "nd"
    block: int = 1  # values (consecutive entries of a row) per coordinate

    @property
    def feature_dim(self) -> int:
        f = self.frequencies
        return self.coord_dims * (1 + 2 * f) if self.fourier == "log" else self.coord_dims + 2 * f


def param_shapes(arch: INRArch) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter of one INR, in storage order.

    Matrices are (out, in) like ``nn.Linear``; quantization gives each row its own scale.
    """
    h, pe, m = arch.width, arch.feature_dim, arch.mod_width
    shapes: dict[str, tuple[int, ...]] = {"w0": (h, pe), "b0": (h,)}
    for i in range(1, arch.depth):
        shapes[f"w{i}"] = (h, h)
        shapes[f"b{i}"] = (h,)
    shapes["wout"] = (arch.block, h)
    shapes["bout"] = (arch.block,)
    if m > 0:
        shapes["mw0"] = (m, pe)
        shapes["mb0"] = (m,)
        shapes["mw1"] = (2 * h * arch.depth, m)
        shapes["mb1"] = (2 * h * arch.depth,)
    return shapes


def param_count(arch: INRArch) -> int:
    return sum(math.prod(s) for s in param_shapes(arch).values())


def init_params(arch: INRArch, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """SIREN initialisation (CPU, fp32); the modulation's output layer starts at zero."""

    def uniform(shape: tuple[int, ...], bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound

    out = {}
    for name, shape in param_shapes(arch).items():
        fan_in = arch.feature_dim if name in ("w0", "b0", "mw0", "mb0") else arch.width
        if name == "w0":
            out[name] = uniform(shape, 1.0 / fan_in)
        elif name.startswith("w"):
            out[name] = uniform(shape, math.sqrt(6.0 / fan_in) / arch.omega0)
        elif name.startswith("b"):
            out[name] = uniform(shape, 1.0 / math.sqrt(fan_in))
        elif name == "mw0":
            out[name] = uniform(shape, math.sqrt(6.0 / fan_in))
        else:  # mb0, mw1, mb1
            out[name] = torch.zeros(shape)
    return out


class Geometry:
    """Coordinate geometry of a stack of G tensors that share ``coord_dims`` (tensors of shape (G, ...)).

    Attributes:
        rows, cols: (G,) sizes of the 2-D view; blocks: (G,) blocks per row, ceil(cols / block).
        sizes: (G, dc) axis lengths of the coordinate axes; strides: (G, dc) how a 2-D column index
            splits into the trailing axes (row-major), for the "nd" layout.
        freqs: (G, dc, F) angular frequencies (log) or the Gaussian matrix B (gaussian).
    """

    def __init__(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        sizes: torch.Tensor,
        strides: torch.Tensor,
        freqs: torch.Tensor,
        layout: str,
        fourier: str,
        block: int,
    ):
        self.rows, self.cols, self.sizes, self.strides, self.freqs = rows, cols, sizes, strides, freqs
        self.layout, self.fourier, self.block = layout, fourier, block
        self.blocks = (cols + block - 1) // block

    @classmethod
    def of(cls, shape: tuple[int, ...], arch: INRArch, layout: str, seed: int) -> Geometry:
        rows = shape[0] if len(shape) >= 1 else 1
        cols = math.prod(shape) // max(rows, 1)
        axes = [rows, -(-cols // arch.block)] if layout == "2d" else list(shape)
        if len(axes) != arch.coord_dims:
            raise ValueError(f"shape {shape} gives {len(axes)} coordinate axes, the architecture expects {arch.coord_dims}")
        strides = [0] + [math.prod(axes[i + 1 :]) for i in range(1, len(axes))]
        nyquist = torch.tensor([math.pi * max(n - 1, 1) / 2 for n in axes], dtype=torch.float64)
        f = arch.frequencies
        if arch.fourier == "log":
            steps = torch.arange(f, dtype=torch.float64) / max(f - 1, 1)
            freqs = (math.pi / 2) * (nyquist[:, None] / (math.pi / 2)) ** steps[None, :]
        else:
            gen = torch.Generator().manual_seed(int(seed))
            freqs = torch.randn((len(axes), f), generator=gen, dtype=torch.float64) * (nyquist[:, None] / 3)
        as_long = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
        return cls(
            as_long([rows]),
            as_long([cols]),
            as_long([axes]),
            as_long([strides]),
            freqs.float()[None],
            layout,
            arch.fourier,
            arch.block,
        )

    @staticmethod
    def stack(items: list[Geometry]) -> Geometry:
        first = items[0]

        def cat(field: str) -> torch.Tensor:
            return torch.cat([getattr(g, field) for g in items])

        return Geometry(
            cat("rows"), cat("cols"), cat("sizes"), cat("strides"), cat("freqs"), first.layout, first.fourier, first.block
        )

    def to(self, device: torch.device) -> Geometry:
        return Geometry(
            self.rows.to(device),
            self.cols.to(device),
            self.sizes.to(device),
            self.strides.to(device),
            self.freqs.to(device),
            self.layout,
            self.fourier,
            self.block,
        )


def features(row: torch.Tensor, blk: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Fourier features (G, n, feature_dim) of the blocks (``row``, ``blk``) (both (G, n), int64)."""
    if geo.layout == "2d":
        idx = torch.stack([row, blk], dim=-1)
    else:
        col = blk * geo.block  # the block's first entry
        trailing = (col[..., None] // geo.strides[:, None, 1:]) % geo.sizes[:, None, 1:]
        idx = torch.cat([row[..., None], trailing], dim=-1)
    n = geo.sizes[:, None, :]
    scale = torch.where(n > 1, 2.0 / (n - 1).clamp(min=1), torch.zeros((), device=n.device))
    offset = torch.where(n > 1, 1.0, 0.0)
    x = idx.float() * scale.float() - offset  # (G, n, dc) in [-1, 1]
    if geo.fourier == "log":
        arg = (x[..., None] * geo.freqs[:, None]).flatten(-2)  # (G, n, dc*F)
    else:
        arg = torch.bmm(x, geo.freqs)  # (G, n, F)
    return torch.cat([x, torch.sin(arg), torch.cos(arg)], dim=-1)


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric round-to-nearest with one scale per row of the last dimension's vectors.

    ``w`` is (G, out, in) for a matrix (a scale per row) or (G, n) for a bias (a scale per tensor):
    the same rule as ``quantize`` with ``granularity="channel"``, ``symmetric=True``.
    """
    scale = quant_scale(w, bits)
    return quant_codes(w, scale, bits) * scale


def quant_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    scale = w.detach().abs().amax(dim=-1, keepdim=True) / (2 ** (bits - 1) - 1)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def quant_codes(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _ste(w: torch.Tensor, bits: int | None) -> torch.Tensor:
    if bits is None:
        return w
    return w + (fake_quant(w, bits) - w).detach()  # straight-through rounding


def inr_apply(
    params: Mapping[str, torch.Tensor], feats: torch.Tensor, arch: INRArch, quant_bits: int | None = None
) -> torch.Tensor:
    """Evaluate G stacked INRs: params (G, ...) and features (G, n, feature_dim) -> values (G, n, block).

    ``quant_bits`` evaluates with fake-quantized parameters and straight-through gradients
    (quantization-aware fine-tuning).
    """
    p = {k: _ste(v, quant_bits) for k, v in params.items()}
    film = None
    if arch.mod_width > 0:
        hidden = torch.relu(torch.baddbmm(p["mb0"][:, None], feats, p["mw0"].transpose(1, 2)))
        film = torch.baddbmm(p["mb1"][:, None], hidden, p["mw1"].transpose(1, 2))  # (G, n, 2·h·depth)
        # unbind, not slices: the backward of a slice fills a zero tensor of the whole output
        film = film.unflatten(-1, (arch.depth, 2, arch.width)).unbind(-3)
    h = feats
    for i in range(arch.depth):
        a = torch.baddbmm(p[f"b{i}"][:, None], h, p[f"w{i}"].transpose(1, 2))
        if film is not None:
            s, t = film[i].unbind(-2)
            a = torch.addcmul(t, a, 1 + s)
        h = torch.sin(arch.omega0 * a)
    return torch.baddbmm(p["bout"][:, None], h, p["wout"].transpose(1, 2))
