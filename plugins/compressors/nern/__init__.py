"""NeRN, reconstruction only (Ashkenazi et al., arXiv 2212.13554): a data-free INR baseline.

One ReLU MLP, shared by all predicted layers, maps the encoded coordinate (layer, filter, input
channel) of each kernel to the whole k×k kernel (see :mod:`.nern_encoding`). Only convs with a
k×k kernel (``kernel_size``, 3 by default) and groups == 1 are predicted, as NeRN predicts the 3×3
block convs; everything else is stored raw and counted. It is fitted to the weights alone with the
reconstruction loss (the RMSE of all predicted kernels), Adam(W) and a cosine schedule, optionally
with NeRN's magnitude-oriented batching. NeRN trains with Ranger (RAdam + Lookahead); torch has no
Ranger, and for this smooth regression loss we use Adam(W) (a setting, ``optimizer``) instead.
NeRN's attention and distillation terms need data and are left out, which is what keeps it on the data-free track.

Theory form: W[c] = g_φ(γ(c)), an MLP over weight coordinates; R is the parameter budget |φ|.
:meth:`NernCode.as_network` gives the predictor as a network whose forward rebuilds one layer.

Representing the shared predictor: one :class:`NernCode` per predicted layer. The code of the first
predicted layer (model order) *owns* the predictor: it stores its parameters and counts them
(``inr``: 32 bits each, plus a 7 x 32-bit predictor header: width, depth, J, β, k, L and the
fp32 output scale). The other codes refer to it by a content hash and count only their own
header (32 bits: layer index and permutation mode) and permutation tables (``indices``). So the
predictor is counted once and stored once; each code still decodes on its own. After loading, a
referring code finds the predictor through the owner code restored from the same artifact (a weak
registry by hash, in :mod:`.nern_predictor`, which also holds the MLP and its fitting).

A later pipeline stage cannot compress the shared predictor yet: the owner code raises in
:meth:`payload`, since quantizing the owner's copy alone would leave the other layers decoding
with the fp32 predictor. That needs core support for codes shared between tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import ADDED_SETTING, Code, Compressed, CompressorSpec, Context, SizeBreakdown, check, weight_layers

from . import encoding as enc
from .predictor import (
    HEADER_FIELDS,
    Predictor,
    SharedPredictor,
    find_loaded,
    fit_predictor,
    predictor_params,
    register_loaded,
)

__all__ = ["SPEC", "NernConfig", "NernCode", "PredictorNetwork", "compress", "width_for_ratio"]

HEADER_BITS = 32  # per code: layer index and permutation mode
PREDICTOR_HEADER_BITS = 32 * len(HEADER_FIELDS)  # each field one 32-bit value
DEFAULT_HIDDEN = 128


# -- the code ---------------------------------------------------------------------------------------------
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

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.orig_shape)

    def shared(self) -> SharedPredictor:
        if self.predictor is None:
            found = find_loaded(self.predictor_id)
            if found is None:
                raise LookupError(f"NeRN predictor {self.predictor_id} is not loaded: restore the code that "
                                  "owns it (meta 'owner': true) from the same artifact")
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
            return SizeBreakdown(indices=perm, metadata=HEADER_BITS)
        return SizeBreakdown(inr=32 * self.shared().numel, indices=perm,
                             metadata=HEADER_BITS + PREDICTOR_HEADER_BITS)

    def regularizer(self) -> torch.Tensor:
        """|φ|, the parameter budget, attributed to the owner (the codes' sum is the predictor's size)."""
        return torch.tensor(float(self.shared().numel if self.owner else 0))

    def payload(self) -> dict[str, torch.Tensor]:
        if self.owner:
            raise NotImplementedError(
                "NeRN's predictor is shared by all predicted layers; a later pipeline stage cannot "
                "compress it until the core supports codes shared between tensors")
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = enc.pack_orders(self.permutation, self.orders, self.orig_shape[0], self.orig_shape[1])
        if self.owner:
            out.update({k: v.detach().float().contiguous() for k, v in self.shared().net.flat().items()})
        return out

    def meta(self) -> dict[str, Any]:
        meta = {"shape": list(self.orig_shape), "layer": self.layer, "permutation": self.permutation,
                "predictor": self.predictor_id, "owner": self.owner}
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
        return cls(shape, meta["layer"], meta["permutation"], orders, meta["predictor"], meta["owner"],
                   predictor)

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


# -- config ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NernConfig:
    """Settings of ``nern``.

    Attributes:
        hidden: width h of the predictor's hidden layers (128 unless ``target_ratio`` is set).
        target_ratio: instead of ``hidden``, the largest width whose codes (predictor, tables and
            headers) cost at most the predicted layers' fp32 bits / target_ratio (at least 1).
        num_blocks: number of Linear layers (NeRN: 5, i.e. 3 hidden-to-hidden layers).
        levels / base: J and β of the encoding γ(p) = [sin(π β^j p), cos(π β^j p)]_{j<J}.
        kernel_size: predict convs with this square kernel (and groups == 1).
        include_grouped: also predict grouped and depthwise convs of that kernel size (not NeRN).
        permutation: "none", "infilter" or "crossfilter" kernel reordering (tables stored, counted).
        steps / batch_size / lr: Adam(W) steps with a cosine schedule, kernels per step (all when
            fewer), learning rate.
        optimizer / weight_decay: "adam" or "adamw", and AdamW's decoupled weight decay.
        magnitude_batching: fraction of steps whose batch is drawn in proportion to kernel norms
            (NeRN: 0.2); the others draw uniformly.
        raw_if_larger: store the layers raw when the predictor, tables and headers would cost at
            least as many bits as the kernels they predict (a small net under a default width).
    """

    hidden: int | None = None
    target_ratio: float | None = None
    num_blocks: int = 5
    levels: int = 40
    base: float = 0.76
    kernel_size: int = 3
    include_grouped: bool = False
    permutation: Literal["none", "infilter", "crossfilter"] = "infilter"
    steps: int = 2000
    batch_size: int = 4096
    lr: float = 5e-3
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    magnitude_batching: float = 0.2
    raw_if_larger: bool = dataclasses.field(default=True, metadata=ADDED_SETTING)

    def __post_init__(self) -> None:
        check(self.hidden is None or self.target_ratio is None,
              f"set only one of hidden, target_ratio, got hidden={self.hidden}, "
              f"target_ratio={self.target_ratio}",
              "target_ratio")
        if self.target_ratio is not None:
            check(self.target_ratio > 0, f"target_ratio must be > 0, got {self.target_ratio}", "target_ratio")
        elif self.hidden is None:  # the default width, written into the config so the record shows it
            object.__setattr__(self, "hidden", DEFAULT_HIDDEN)
        else:
            check(self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}", "hidden")
        check(self.num_blocks >= 2, f"num_blocks must be >= 2, got {self.num_blocks}", "num_blocks")
        check(self.levels >= 1, f"levels must be >= 1, got {self.levels}", "levels")
        check(0.0 < self.base <= 1.0, f"base must be in (0, 1], got {self.base}", "base")
        check(self.kernel_size >= 1, f"kernel_size must be >= 1, got {self.kernel_size}", "kernel_size")
        check(self.permutation in enc.PERMUTATIONS,
              f"permutation must be one of {list(enc.PERMUTATIONS)}, got {self.permutation!r}", "permutation")
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}", "steps")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        check(0.0 <= self.magnitude_batching <= 1.0,
              f"magnitude_batching must be in [0, 1], got {self.magnitude_batching}", "magnitude_batching")


# -- fitting ---------------------------------------------------------------------------------------------
def predicted_layers(model: nn.Module, config: NernConfig) -> dict[str, nn.Module]:
    """The convs NeRN predicts, in model order."""
    k = config.kernel_size
    return {key: m for key, m in weight_layers(model, types=(nn.Conv2d,)).items()
            if tuple(m.weight.shape[2:]) == (k, k) and (m.groups == 1 or config.include_grouped)}


def width_for_ratio(weights: int, table_bits: int, num_codes: int, config: NernConfig) -> int:
    """The largest hidden width whose codes cost at most 32·weights / target_ratio bits (at least 1)."""
    budget = 32 * weights / float(config.target_ratio or 1.0)
    fixed = table_bits + num_codes * HEADER_BITS + PREDICTOR_HEADER_BITS

    def fits(hidden: int) -> bool:
        params = predictor_params(config.levels, hidden, config.num_blocks, config.kernel_size)
        return fixed + 32 * params <= budget

    if not fits(1):
        return 1
    hi = 2
    while fits(hi):
        hi *= 2
    lo = hi // 2  # fits(lo), not fits(hi); the cost grows with the width: bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def compress(model: nn.Module, config: NernConfig, ctx: Context) -> Compressed:
    layers = predicted_layers(model, config)
    if not layers:
        ctx.log(f"nern: no conv with a {config.kernel_size}x{config.kernel_size} kernel to predict")
        return Compressed.from_codes(model, {}, info={"predicted_layers": []})
    state = model.state_dict()
    num_layers = len(layers)
    targets, coords, tables = [], [], {}
    for index, key in enumerate(layers):
        w = state[key].detach().float().cpu()
        c_out, c_in = int(w.shape[0]), int(w.shape[1])
        orders = enc.layer_order(w, config.permutation)
        kernels = w.reshape(c_out * c_in, -1)
        src = enc.source_index(orders, c_out, c_in)
        targets.append(kernels if src is None else kernels[src])  # grid position t holds kernel src[t]
        coords.append(enc.grid_coords(index, num_layers, c_out, c_in))
        tables[key] = orders
    hidden = config.hidden
    weights = sum(state[k].numel() for k in layers)
    tables_bits = sum(enc.permutation_bits(config.permutation, *state[k].shape[:2]) for k in layers)
    if hidden is None:
        hidden = width_for_ratio(weights, tables_bits, num_layers, config)
    cost = (tables_bits + num_layers * HEADER_BITS + PREDICTOR_HEADER_BITS
            + 32 * predictor_params(config.levels, hidden, config.num_blocks, config.kernel_size))
    if config.raw_if_larger and cost >= 32 * weights:  # it would cost more than the kernels: keep them raw
        ctx.log(f"nern: a width-{hidden} predictor ({cost:,} bits) costs more than the {weights:,} weights it "
                "would predict; they are stored raw")
        return Compressed.from_codes(model, {}, info={"predicted_layers": [], "hidden": hidden,
                                                      "raw_reason": f"predictor {cost} bits >= raw {32 * weights} bits"})
    shared, losses, final = fit_predictor(torch.cat(targets), torch.cat(coords), config, ctx, num_layers,
                                          hidden)
    codes: dict[str, Code] = {}
    for index, key in enumerate(layers):
        codes[key] = NernCode(tuple(state[key].shape), index, config.permutation, tables[key], shared.id,
                              owner=index == 0, predictor=shared)
    info = {"predicted_layers": list(layers), "owner": next(iter(layers)), "hidden": hidden,
            "predictor_params": shared.numel, "losses": losses, "final_rmse": final}
    return Compressed.from_codes(model, codes, info=info)


SPEC = CompressorSpec(
    name="nern",
    family="inr",
    track="data-free",
    config=NernConfig,
    compress=compress,
    codes=(NernCode,),
    identity=None,  # none: the predictor approximates the kernels; no setting makes it exact
    version="2",
    description="NeRN, reconstruction loss only: one MLP predicts each k x k conv kernel from its coordinate",
    uses_gpu=True,
    quick={"hidden": 16, "steps": 60, "levels": 8},
)


@b2s.hookimpl
def b2s_register_compressors(register: Any) -> None:
    register(SPEC)
