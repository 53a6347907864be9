"""The code of one Big2Small layer: its INR φ, the standardisation (μ, σ) and the exact outliers.

Theory form: W = g(φ) with g the INR evaluated at every entry's coordinate, un-standardised, and the
outliers written back; R(φ) is the budget the compressor holds fixed: the INR's parameter count plus
the number of outliers (``Code.regularizer``). The network form (``as_network``) has φ as its
parameters and an L2 term mean(φ²) as its differentiable regularizer (the weight decay of the fit;
``solver_lam`` = 0, since the budget itself is a hard architectural constraint).

Stored bits (all exact):
* ``inr``: the parameter count x ``inr_bits`` (32: fp32, 16: fp16, 2-8: integer codes);
* ``scales``: one fp32 scale per row of every INR matrix and per bias vector when ``inr_bits`` <= 8,
  and three fp32 values (μ, σ, ω₀), in the ``stats`` tensor;
* ``outliers``: 32 bits per outlier value; ``indices``: their positions (see ``outliers.py``) and,
  when rows and columns are reordered, both orders (see ``permute.py``);
* ``metadata``: the header, kept in ``meta()``: 32-bit integers (ndim, the shape, width, depth,
  mod_width, frequencies, coordinate axes, block, layout, Fourier kind, Fourier seed, inr_bits,
  outlier count, permuted, deploy_cache). The Fourier frequencies are rebuilt from the shape (and the
  seed).

Deployed form (``deployed``): the layer's weight is rebuilt from the INR on every forward pass, in
one batched evaluation of the INR over all its coordinates (their Fourier features computed once
and kept), or, with ``deploy_cache``, once and then kept (dense speed, dense memory).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, pack_bits, unpack_bits

from .inr import (
    FOURIERS,
    LAYOUTS,
    Geometry,
    INRArch,
    features,
    init_params,
    inr_apply,
    param_shapes,
    quant_codes,
    quant_scale,
)
from .outliers import VALUE_BITS, pack_positions, position_bits, unpack_positions
from .permute import inverse, order_bits, pack_orders, unpack_orders

__all__ = [
    "INRCode",
    "INRDecoder",
    "INRNetwork",
    "INRLayer",
    "header_ints",
    "code_bits",
    "DECODE_CHUNK",
    "DEPLOY_CHUNK",
    "DEPLOY_CHUNK_CPU",
]

DECODE_CHUNK = 1 << 16  # entries per forward when rebuilding a tensor (fixed: decode is deterministic)
# entries per INR call in the deployed form: on a GPU one call for all but huge layers; on a CPU small
# chunks are faster (cache locality: ``bench_big2small.py --latency`` measured 4-8k entries 1.6x faster
# than 64k and 2x faster than one call on the Fashion-MNIST CNN's 401k-weight layer)
DEPLOY_CHUNK, DEPLOY_CHUNK_CPU = 1 << 22, 1 << 13
HEADER_FIELDS = (
    "width",
    "depth",
    "mod_width",
    "frequencies",
    "coord_dims",
    "block",
    "layout",
    "fourier",
    "fourier_seed",
    "inr_bits",
    "outliers",
    "permuted",
    "deploy_cache",
)
STATS = 3  # fp32 values: mean, std, omega0


def header_ints(shape: tuple[int, ...]) -> int:
    """Number of 32-bit header integers of a code for a tensor of ``shape``."""
    return 1 + len(shape) + len(HEADER_FIELDS)


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = shape[0] if len(shape) >= 1 else 1
    return rows, math.prod(shape) // max(rows, 1)


def code_bits(arch: INRArch, shape: tuple[int, ...], inr_bits: int, n_outliers: int, permuted: bool = False) -> SizeBreakdown:
    """Exact stored bits of a code (known before the fit: they depend on the architecture only)."""
    shapes = param_shapes(arch).values()
    n_params = sum(math.prod(s) for s in shapes)
    n_scales = sum(s[0] if len(s) == 2 else 1 for s in shapes) if inr_bits <= 8 else 0
    return SizeBreakdown(
        inr=n_params * inr_bits,
        scales=32 * (n_scales + STATS),
        outliers=VALUE_BITS * n_outliers,
        indices=position_bits(n_outliers, math.prod(shape))[0] + (order_bits(*_matrix_shape(shape)) if permuted else 0),
        metadata=32 * header_ints(shape),
    )


@dataclasses.dataclass
class INRCode(Code):
    """One tensor as an INR. ``params`` are the fp32 values the INR computes with (dequantized)."""

    arch: INRArch
    layout: str
    fourier_seed: int
    orig_shape: tuple[int, ...]
    mean: float
    std: float
    inr_bits: int
    params: dict[str, torch.Tensor]
    outlier_pos: torch.Tensor  # (n,) int64, ascending
    outlier_val: torch.Tensor  # (n,) fp32
    q: dict[str, torch.Tensor] | None = None  # integer codes (inr_bits <= 8)
    scales: dict[str, torch.Tensor] | None = None  # (rows,) fp32 scales (inr_bits <= 8)
    row_order: torch.Tensor | None = None  # permuted matrix = W2d[row_order][:, col_order] (None: as is)
    col_order: torch.Tensor | None = None
    deploy_cache: bool = False  # the deployed form decodes once and keeps the weight (a header flag)
    _cache: torch.Tensor | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    kind: ClassVar[str] = "big2small.inr"
    payload_part: ClassVar[str] = "inr"

    # -- building -----------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        arch: INRArch,
        layout: str,
        fourier_seed: int,
        shape: tuple[int, ...],
        mean: float,
        std: float,
        params: Mapping[str, torch.Tensor],
        inr_bits: int,
        outlier_pos: torch.Tensor,
        outlier_val: torch.Tensor,
        orders: tuple[torch.Tensor, torch.Tensor] | None = None,
        deploy_cache: bool = False,
    ) -> INRCode:
        """A code from fitted fp32 parameters, stored at ``inr_bits``."""
        fp = {k: v.detach().float().cpu().contiguous() for k, v in params.items()}
        q = scales = None
        if inr_bits == 16:
            fp = {k: v.half().float() for k, v in fp.items()}
        elif inr_bits <= 8:
            q, scales = {}, {}
            for k, v in fp.items():
                s = quant_scale(v[None], inr_bits)
                q[k] = quant_codes(v[None], s, inr_bits)[0]
                scales[k] = s[0, ..., 0].reshape(-1)
            fp = {k: _dequantize(q[k], scales[k]) for k in q}
        rows, cols = orders if orders is not None else (None, None)
        return cls(
            arch,
            layout,
            int(fourier_seed),
            tuple(int(s) for s in shape),
            float(mean),
            float(std),
            inr_bits,
            fp,
            outlier_pos.to(torch.int64).cpu(),
            outlier_val.float().cpu(),
            q,
            scales,
            rows,
            cols,
            deploy_cache,
        )

    # -- the Code interface -----------------------------------------------------------------------------
    @property
    def permuted(self) -> bool:
        return self.row_order is not None

    @property
    def numel(self) -> int:
        return math.prod(self.orig_shape)

    @property
    def n_params(self) -> int:
        return sum(v.numel() for v in self.params.values())

    @property
    def n_outliers(self) -> int:
        return int(self.outlier_pos.numel())

    def decode(self) -> torch.Tensor:
        if self._cache is None:
            with torch.no_grad():
                self._cache = INRDecoder(self).forward().detach()
        return self._cache.clone()

    def bits(self) -> SizeBreakdown:
        return code_bits(self.arch, self.shape, self.inr_bits, self.n_outliers, self.permuted)

    def regularizer(self) -> torch.Tensor:
        """R(φ): the budget, |φ| + |outliers| (what ``target_ratio`` bounds)."""
        return torch.tensor(float(self.n_params + self.n_outliers))

    def header(self) -> list[int]:
        a = self.arch
        values = [
            len(self.shape),
            *self.shape,
            a.width,
            a.depth,
            a.mod_width,
            a.frequencies,
            a.coord_dims,
            a.block,
            LAYOUTS.index(self.layout),
            FOURIERS.index(a.fourier),
            self.fourier_seed,
            self.inr_bits,
            self.n_outliers,
            int(self.permuted),
            int(self.deploy_cache),
        ]
        return [int(v) for v in values]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"stats": torch.tensor([self.mean, self.std, self.arch.omega0], dtype=torch.float32)}
        names = list(param_shapes(self.arch))
        if self.inr_bits == 32:
            out.update({k: self.params[k].float().contiguous() for k in names})
        elif self.inr_bits == 16:
            out["phi"] = torch.cat([self.params[k].reshape(-1) for k in names]).half()
        else:
            assert self.q is not None and self.scales is not None
            offset = 2 ** (self.inr_bits - 1)
            codes = torch.cat([self.q[k].reshape(-1) for k in names]).to(torch.int64) + offset
            out["q"] = pack_bits(codes, self.inr_bits)
            out["scales"] = torch.cat([self.scales[k].reshape(-1) for k in names]).float()
        if self.n_outliers:
            out["outlier_values"] = self.outlier_val.float().contiguous()
            out.update(pack_positions(self.outlier_pos, self.numel))
        if self.row_order is not None and self.col_order is not None:
            out.update(pack_orders(self.row_order, self.col_order))
        return out

    def symbols(self) -> dict[str, b2s.Symbols]:
        """The integer streams stored at a fixed width, for an entropy-coding stage: the quantized INR
        parameters (``inr_bits`` <= 8, offset to unsigned, counted under ``inr``) and the outliers'
        bitmask when their positions are stored as one (1 bit an entry, counted under ``indices``).
        Not declared: outlier positions stored as indices and the row/column orders, whose values are
        all distinct (an order-0 entropy coder cannot make them shorter)."""
        out = {}
        if self.inr_bits <= 8 and self.q is not None:
            codes = torch.cat([self.q[k].reshape(-1) for k in param_shapes(self.arch)]).to(torch.int64)
            out["q"] = b2s.Symbols(codes + 2 ** (self.inr_bits - 1), self.inr_bits, "inr")
        if position_bits(self.n_outliers, self.numel)[1] == "mask":
            mask = torch.zeros(self.numel, dtype=torch.int64)
            mask[self.outlier_pos] = 1
            out["outlier_mask"] = b2s.Symbols(mask, 1, "indices")
        return out

    def meta(self) -> dict[str, Any]:
        """The header: ``header_ints`` 32-bit integers, counted as ``metadata`` (nothing else)."""
        return {"header": self.header()}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> INRCode:
        h = [int(v) for v in meta["header"]]
        ndim = h[0]
        shape = tuple(h[1 : 1 + ndim])
        fields = dict(zip(HEADER_FIELDS, h[1 + ndim :], strict=True))
        mean, std, omega0 = (float(v) for v in tensors["stats"].float().tolist())
        arch = INRArch(
            fields["width"],
            fields["depth"],
            fields["mod_width"],
            omega0,
            fields["frequencies"],
            FOURIERS[fields["fourier"]],
            fields["coord_dims"],
            fields["block"],
        )
        bits = fields["inr_bits"]
        shapes = param_shapes(arch)
        q = scales = None
        if bits == 32:
            params = {k: tensors[k].float().reshape(s) for k, s in shapes.items()}
        else:
            sizes = [math.prod(s) for s in shapes.values()]
            if bits == 16:
                flat = tensors["phi"].float().split(sizes)
                params = {k: f.reshape(s) for (k, s), f in zip(shapes.items(), flat, strict=True)}
            else:
                codes = (unpack_bits(tensors["q"], bits, sum(sizes)) - 2 ** (bits - 1)).float().split(sizes)
                q = {k: c.reshape(s) for (k, s), c in zip(shapes.items(), codes, strict=True)}
                scale_rows = [s[0] if len(s) == 2 else 1 for s in shapes.values()]
                scales = dict(zip(shapes, tensors["scales"].float().split(scale_rows), strict=True))
                params = {k: _dequantize(q[k], scales[k]) for k in q}
        n = fields["outliers"]
        numel = math.prod(shape)
        pos = unpack_positions(dict(tensors), n, numel)
        val = tensors["outlier_values"].float() if n else torch.zeros(0)
        rows, cols = unpack_orders(tensors, *_matrix_shape(shape)) if fields["permuted"] else (None, None)
        return cls(
            arch,
            LAYOUTS[fields["layout"]],
            fields["fourier_seed"],
            shape,
            mean,
            std,
            bits,
            params,
            pos,
            val,
            q,
            scales,
            rows,
            cols,
            bool(fields["deploy_cache"]),
        )

    def payload(self) -> dict[str, torch.Tensor]:
        """The fp32 INR parameters (only when stored as fp32), for a later stage such as ``quantize``."""
        return dict(self.params) if self.inr_bits == 32 else {}

    def replace_payload(self, tensors: Mapping[str, torch.Tensor]) -> INRCode:
        new = {k: v.detach().float().cpu().reshape(self.params[k].shape) for k, v in tensors.items()}
        params = {**self.params, **new}
        return dataclasses.replace(self, params=params)

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> INRNetwork:
        return INRNetwork(self, init, generator)

    def stats(self) -> dict[str, Any]:
        return {
            "width": self.arch.width,
            "inr_params": self.n_params,
            "outliers": self.n_outliers,
            "inr_bits": self.inr_bits,
            "permuted": self.permuted,
        }

    def deployed(self, layer: nn.Module) -> nn.Module:
        return INRLayer(layer, self, self.deploy_cache)


def _dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if q.dim() == 2:
        return (q * scale[:, None]).float()
    return (q * scale).float()


class INRDecoder(nn.Module):
    """Rebuilds a code's whole tensor from its INR: forward() -> the tensor (its original shape).

    φ are parameters when ``trainable`` (the network form), buffers otherwise (decode, deployment).
    ``keep_features`` computes the Fourier features of all coordinates once and keeps them, and
    evaluates the INR in chunks sized for the device (the deployed form: one call on a GPU).
    """

    # the buffers registered in __init__, declared for type checkers (nn.Module's __getattr__ is untyped)
    geo_sizes: torch.Tensor
    geo_strides: torch.Tensor
    geo_freqs: torch.Tensor
    outlier_pos: torch.Tensor
    outlier_val: torch.Tensor
    row_inv: torch.Tensor
    col_inv: torch.Tensor
    features: torch.Tensor | None

    def __init__(
        self,
        code: INRCode,
        trainable: bool = False,
        params: Mapping[str, torch.Tensor] | None = None,
        keep_features: bool = False,
    ):
        super().__init__()
        self.arch, self.layout, self.shape = code.arch, code.layout, code.shape
        geo = Geometry.of(code.shape, code.arch, code.layout, code.fourier_seed)
        self.n_rows, self.n_cols, self.n_blocks = int(geo.rows[0]), int(geo.cols[0]), int(geo.blocks[0])
        for name in ("sizes", "strides", "freqs"):
            self.register_buffer(f"geo_{name}", getattr(geo, name).clone())
        values = params if params is not None else code.params
        self.names = list(param_shapes(code.arch))
        for name in self.names:
            t = values[name].detach().float().clone()
            if trainable:
                self.register_parameter(f"phi_{name}", nn.Parameter(t))
            else:
                self.register_buffer(f"phi_{name}", t)
        self.mean, self.std = code.mean, code.std
        self.register_buffer("outlier_pos", code.outlier_pos.clone())
        self.register_buffer("outlier_val", code.outlier_val.clone())
        self.permuted = code.row_order is not None and code.col_order is not None
        if self.permuted:
            assert code.row_order is not None and code.col_order is not None
            self.register_buffer("row_inv", inverse(code.row_order))
            self.register_buffer("col_inv", inverse(code.col_order))
        self.keep_features = keep_features
        self.register_buffer("features", None, persistent=False)
        self.chunk = 0 if keep_features else DECODE_CHUNK  # 0: by device (DEPLOY_CHUNK, DEPLOY_CHUNK_CPU)

    def phi(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"phi_{name}")[None] for name in self.names}

    def _features(self, start: int, stop: int) -> torch.Tensor:
        device = self.geo_freqs.device
        geo = Geometry(
            torch.tensor([self.n_rows], device=device),
            torch.tensor([self.n_cols], device=device),
            self.geo_sizes,
            self.geo_strides,
            self.geo_freqs,
            self.layout,
            self.arch.fourier,
            self.arch.block,
        )
        idx = torch.arange(start, stop, device=device)[None]
        return features(idx // self.n_blocks, idx % self.n_blocks, geo)

    def forward(self) -> torch.Tensor:
        n_coords = self.n_rows * self.n_blocks
        if self.keep_features and (self.features is None or self.features.device != self.geo_freqs.device):
            self.features = self._features(0, n_coords)
        phi = self.phi()
        chunk = self.chunk or (DEPLOY_CHUNK if self.geo_freqs.device.type == "cuda" else DEPLOY_CHUNK_CPU)
        step = max(chunk // self.arch.block, 1)
        chunks = []
        for start in range(0, n_coords, step):
            stop = min(start + step, n_coords)
            # features is set above whenever keep_features is (the None test is for type checkers)
            feats = self.features[:, start:stop] if self.features is not None else self._features(start, stop)
            chunks.append(inr_apply(phi, feats, self.arch)[0])
        z = torch.cat(chunks).reshape(self.n_rows, -1)[:, : self.n_cols]
        if self.permuted:
            z = z[self.row_inv][:, self.col_inv]
        w = z.reshape(-1) * self.std + self.mean
        if self.outlier_pos.numel():
            w = w.index_put((self.outlier_pos,), self.outlier_val)
        return w.reshape(self.shape)


class INRNetwork(b2s.DecoderNetwork):
    """The network form g(φ): parameters φ (the INR), forward() -> the tensor; R(φ) = mean(φ²)."""

    projection = "never"
    solver_lam = 0.0
    closed_form = False  # the code is itself a gradient fit: refitting it is no closed-form check

    def __init__(self, code: INRCode, init: str = "code", generator: torch.Generator | None = None):
        super().__init__()
        if init not in ("code", "random"):
            raise ValueError(f"init must be 'code' or 'random', got {init!r}")
        gen = generator or torch.Generator().manual_seed(0)
        start = code.params if init == "code" else init_params(code.arch, gen)
        self.decoder = INRDecoder(code, trainable=True, params=start)

    def forward(self) -> torch.Tensor:
        return self.decoder()

    def regularizer(self) -> torch.Tensor:
        phi = [p.reshape(-1) for p in self.parameters()]
        return torch.cat(phi).pow(2).mean()


class INRLayer(nn.Module):
    """The deployed form: a conv/linear layer whose weight is rebuilt from the INR on every forward
    (features kept, the INR run in device-sized chunks), or once and then kept (``cache``)."""

    weight_cache: torch.Tensor | None  # a buffer (registered in __init__), declared for type checkers

    def __init__(self, layer: nn.Module, code: INRCode, cache: bool = False):
        super().__init__()
        self.layer = layer
        self.decoder = INRDecoder(code, keep_features=True)
        self.cache = cache
        self.register_buffer("weight_cache", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_cache
        if weight is None or weight.device != x.device:
            weight = self.decoder()
            if self.cache:
                self.weight_cache = weight
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return nn.functional.linear(x, weight, layer.bias)
        if isinstance(layer, nn.modules.conv._ConvNd) and hasattr(layer, "_conv_forward"):
            return layer._conv_forward(x, weight, layer.bias)
        return torch.func.functional_call(layer, {"weight": weight}, (x,))
