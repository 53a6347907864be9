"""The code of ``riem``: one weight as neuron states and a metric network (see :mod:`.metric`).

Stored: the row states (R × d) and column states (C × d) as ``bits``-bit grid codes, bit-packed, with
per state dimension the grid's min and step in fp32 (4·d values: ``scales``); the metric network
(M·(d·h + h) + h + 1 values) in fp32 (``inr``); and the header ``b2s.header_bits(meta())``. With
``bits`` = 32 the states are stored in fp32 under ``inr`` and there are no scales, so the code costs
exactly 32 × its parameters + its header. The weights' scale is folded into v and c (no extra field).

A later pipeline stage may compress the fp32 parameters (:meth:`RiemCode.payload`, counted under
``inr``); quantized states are declared as symbol streams for an entropy-coding stage.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown, Symbols

from .metric import RiemNetwork, centre_, dequantize_states, init_params, metric_params, weights

__all__ = ["RiemCode", "code_meta", "code_bits"]

METRIC_NAMES = ("mix", "mix_bias", "out", "out_bias")


def code_meta(shape: tuple[int, ...], dim: int, hidden: int, heads: int, bits: int) -> dict[str, Any]:
    """The header of a code (what it needs to decode besides its tensors)."""
    return {"shape": [int(s) for s in shape], "dim": dim, "hidden": hidden, "heads": heads, "bits": bits}


def code_bits(shape: tuple[int, ...], dim: int, hidden: int, heads: int, bits: int) -> SizeBreakdown:
    """Exact bits of a code of this shape and these settings (before it exists: the budget rule)."""
    rows, cols = int(shape[0]), math.prod(int(s) for s in shape[1:])
    states = (rows + cols) * dim
    header = b2s.header_bits(code_meta(shape, dim, hidden, heads, bits))
    metric = 32 * metric_params(dim, hidden, heads)
    if bits == 32:
        return SizeBreakdown(inr=metric + 32 * states, metadata=header)
    return SizeBreakdown(payload=states * bits, scales=32 * 4 * dim, inr=metric, metadata=header)


@dataclasses.dataclass(eq=False)
class RiemCode(Code):
    """One weight as RieM: states (grid codes, or fp32 when bits = 32), their grids, the metric network."""

    orig_shape: tuple[int, ...]
    nbits: int  # bits of a state entry (32: fp32 states)
    rows: torch.Tensor  # (R, d): int64 grid codes, or fp32 states when bits == 32
    cols: torch.Tensor  # (C, d)
    grids: torch.Tensor  # (4, d) fp32: row min, row step, column min, column step; (0, d) when bits == 32
    mix: torch.Tensor  # (M, d, h) fp32: A_m transposed (p @ mix[m] = A_m p)
    mix_bias: torch.Tensor  # (M, h)
    out: torch.Tensor  # (h,): v, the weights' scale folded in
    out_bias: torch.Tensor  # (1,): c
    kind = "riem.metric"
    payload_part = "inr"

    @property
    def quantized(self) -> bool:
        return self.nbits < 32

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])

    @property
    def hidden(self) -> int:
        return int(self.mix.shape[2])

    @property
    def heads(self) -> int:
        return int(self.mix.shape[0])

    def states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The row and column states as fp32 values (dequantized from their grids)."""
        if not self.quantized:
            return self.rows.float(), self.cols.float()
        g = self.grids
        return dequantize_states(self.rows, g[0], g[1]), dequantize_states(self.cols, g[2], g[3])

    def params(self) -> dict[str, torch.Tensor]:
        """φ as one batch of one layer (the states dequantized), the form :mod:`.metric` computes on."""
        rows, cols = self.states()
        return {
            "rows": rows[None],
            "cols": cols[None],
            "mix": self.mix[None],
            "mix_bias": self.mix_bias[None],
            "out": self.out[None],
            "out_bias": self.out_bias.reshape(1),
        }

    def decode(self) -> torch.Tensor:
        p = self.params()
        with torch.no_grad():
            w = weights(p["rows"], p["cols"], p["mix"], p["mix_bias"], p["out"], p["out_bias"])
        return w.reshape(self.orig_shape).contiguous()

    def bits(self) -> SizeBreakdown:
        return code_bits(self.orig_shape, self.dim, self.hidden, self.heads, self.nbits)

    def regularizer(self) -> torch.Tensor:
        """|φ|: the parameter budget (states and metric network)."""
        states = (self.rows.shape[0] + self.cols.shape[0]) * self.dim
        return torch.tensor(float(states + metric_params(self.dim, self.hidden, self.heads)))

    def payload(self) -> dict[str, torch.Tensor]:
        out = {name: getattr(self, name) for name in METRIC_NAMES}
        if not self.quantized:
            out.update(rows=self.rows, cols=self.cols)
        return out

    def symbols(self) -> dict[str, Symbols]:
        if not self.quantized:
            return {}
        return {
            "rows": Symbols(self.rows.reshape(-1), self.nbits, "payload"),
            "cols": Symbols(self.cols.reshape(-1), self.nbits, "payload"),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {name: getattr(self, name).detach().float().contiguous() for name in METRIC_NAMES}
        if self.quantized:
            out["rows"] = b2s.pack_bits(self.rows.reshape(-1), self.nbits)
            out["cols"] = b2s.pack_bits(self.cols.reshape(-1), self.nbits)
            out["grids"] = self.grids.detach().float().contiguous()
        else:
            out["rows"] = self.rows.detach().float().contiguous()
            out["cols"] = self.cols.detach().float().contiguous()
        return out

    def meta(self) -> dict[str, Any]:
        return code_meta(self.orig_shape, self.dim, self.hidden, self.heads, self.nbits)

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> RiemCode:
        shape = tuple(int(s) for s in meta["shape"])
        dim, bits = int(meta["dim"]), int(meta["bits"])
        r, c = shape[0], math.prod(shape[1:])
        # fresh memory (clone): laid out like the original, so decoding runs the same kernels
        metric = {name: tensors[name].float().clone() for name in METRIC_NAMES}
        if bits < 32:
            rows = b2s.unpack_bits(tensors["rows"], bits, r * dim).reshape(r, dim)
            cols = b2s.unpack_bits(tensors["cols"], bits, c * dim).reshape(c, dim)
            grids = tensors["grids"].float().clone()
        else:
            rows, cols = tensors["rows"].float().clone(), tensors["cols"].float().clone()
            grids = torch.zeros(0, dim)
        return cls(shape, bits, rows, cols, grids, **metric)

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> RiemNetwork:
        if init == "random":
            r, c = self.rows.shape[0], self.cols.shape[0]
            gen = generator or torch.Generator().manual_seed(0)
            net = RiemNetwork(init_params(1, r, c, self.dim, self.hidden, self.heads, gen, "centred"), shape=self.orig_shape)
            centre_(net)  # the compressor's default start
            return net
        return RiemNetwork(self.params(), shape=self.orig_shape)

    def stats(self) -> dict[str, Any]:
        return {"dim": self.dim, "hidden": self.hidden, "heads": self.heads, "bits": self.nbits}
