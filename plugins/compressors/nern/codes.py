"""The code of ``nern``: one predicted conv, referring to the shared predictor (owned or not).

Bits: the owner counts the predictor (``inr``: 32 bits a parameter, plus a 7 × 32-bit predictor
header); every code counts its permutation tables (``indices``) and a 32-bit header.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

import b2s_bench as b2s
from b2s_bench import Code, SizeBreakdown

from . import encoding as enc
from .predictor import HEADER_FIELDS, Predictor, SharedPredictor, find_loaded, register_loaded

__all__ = ["HEADER_BITS", "PREDICTOR_HEADER_BITS", "NernCode", "PredictorNetwork"]

# A code counts its real header, ``b2s.header_bits(meta())``; these bounds of it serve the width budget
# (compressor.py) before any code exists. Per code: a 4-d shape, the layer, the permutation (at most
# 3 words), the 24-character predictor id (6 words) and the owner flag.
HEADER_BITS = 32 * (4 + 1 + 3 + 6 + 1)
PREDICTOR_HEADER_BITS = 32 * (len(HEADER_FIELDS) + 1)  # one word a field; ``base`` may need a double


@dataclasses.dataclass(eq=False)
class NernCode(Code):
    """One predicted conv: its layer index, permutation tables and the shared predictor (owned or not)."""

    orig_shape: tuple[int, ...]
    layer: int
    permutation: str
    orders: dict[str, torch.Tensor]
    predictor_id: str
    owner: bool
    predictor: SharedPredictor | None = dataclasses.field(default=None, repr=False)
    kind = "nern.kernel"

    def shared(self) -> SharedPredictor:
        if self.predictor is None:
            found = find_loaded(self.predictor_id)
            if found is None:
                raise LookupError(
                    f"NeRN predictor {self.predictor_id} is not loaded: restore the code that "
                    "owns it (meta 'owner': true) from the same artifact"
                )
            self.predictor = found
        return self.predictor

    def _grid(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoded grid coordinates of this layer and the inverse permutation (kernel i <- grid inv[i])."""
        p = self.shared()
        c_out, c_in = self.orig_shape[0], self.orig_shape[1]
        features = enc.encode(enc.grid_coords(self.layer, p.num_layers, c_out, c_in), p.levels, p.base)
        src = enc.source_index(self.orders, c_out, c_in)
        return features, (None if src is None else torch.argsort(src))

    def decode(self) -> torch.Tensor:
        features, inverse = self._grid()
        kernels = self.shared().predict(features)
        if inverse is not None:
            kernels = kernels[inverse]
        return kernels.reshape(self.orig_shape).contiguous()

    def bits(self) -> SizeBreakdown:
        perm = enc.permutation_bits(self.permutation, self.orig_shape[0], self.orig_shape[1])
        if not self.owner:
            return SizeBreakdown(indices=perm, metadata=b2s.header_bits(self.meta()))
        return SizeBreakdown(inr=32 * self.shared().numel, indices=perm, metadata=b2s.header_bits(self.meta()))

    def regularizer(self) -> torch.Tensor:
        """|φ|, the parameter budget, attributed to the owner (the codes' sum is the predictor's size)."""
        return torch.tensor(float(self.shared().numel if self.owner else 0))

    def payload(self) -> dict[str, torch.Tensor]:
        if self.owner:
            raise NotImplementedError(
                "NeRN's predictor is shared by all predicted layers; a later pipeline stage cannot "
                "compress it until the core supports codes shared between tensors"
            )
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = enc.pack_orders(self.permutation, self.orders, self.orig_shape[0], self.orig_shape[1])
        if self.owner:
            out.update({k: v.detach().float().contiguous() for k, v in self.shared().net.flat().items()})
        return out

    def meta(self) -> dict[str, Any]:
        meta = {
            "shape": list(self.orig_shape),
            "layer": self.layer,
            "permutation": self.permutation,
            "predictor": self.predictor_id,
            "owner": self.owner,
        }
        if self.owner:
            meta["predictor_header"] = self.shared().header()
        return meta

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> NernCode:
        shape = tuple(meta["shape"])
        orders = enc.unpack_orders(meta["permutation"], dict(tensors), shape[0], shape[1])
        predictor = None
        if meta["owner"]:
            head = meta["predictor_header"]
            net = Predictor(6 * head["levels"], head["hidden"], head["num_blocks"], head["kernel_size"] ** 2)
            with torch.no_grad():
                for name, p in net.flat().items():
                    p.copy_(tensors[name])  # fresh memory: aligned like the original, so the same matmul
            predictor = SharedPredictor(net, **head)
            if predictor.id != meta["predictor"]:
                raise ValueError(f"NeRN predictor tensors do not match their hash {meta['predictor']}")
            register_loaded(predictor)
        return cls(shape, meta["layer"], meta["permutation"], orders, meta["predictor"], meta["owner"], predictor)

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> PredictorNetwork:
        return PredictorNetwork(self, init, generator)

    def stats(self) -> dict[str, Any]:
        return {"layer": self.layer, "permutation": self.permutation, "owner": self.owner}


class PredictorNetwork(b2s.DecoderNetwork):
    """g(φ) = the predictor applied to one layer's encoded grid (φ: the whole shared MLP).

    There is no closed form to compare with; the budget |φ| is fixed by the architecture, so
    nothing is projected and R (½ of the squared parameters, weight decay) has weight 0 by default.
    """

    projection = "never"
    solver_lam = 0.0
    closed_form = False

    def __init__(self, code: NernCode, init: str, generator: torch.Generator | None):
        super().__init__()
        shared = code.shared()
        if init == "random":
            self.net = shared.fresh_net(generator)
        else:
            self.net = shared.fresh_net()
            self.net.load_state_dict(shared.net.state_dict())
        self.net.requires_grad_(True)
        features, inverse = code._grid()
        self.register_buffer("features", features)
        self.register_buffer("inverse", inverse if inverse is not None else torch.arange(features.shape[0]))
        self.shape = code.shape
        self.scale = shared.scale

    def forward(self) -> torch.Tensor:
        return (self.net(self.features) * self.scale)[self.inverse].reshape(self.shape)

    def regularizer(self) -> torch.Tensor:
        return 0.5 * sum((p.pow(2).sum() for p in self.net.parameters()), torch.zeros(()))
