"""Uniform quantization: per tensor, per channel or per group; symmetric or affine; RTN or AdaRound.

Theory form: W = s·(q − z), a "rounding layer" q = round(V/s); R(φ) is the indicator of the grid,
and round-to-nearest is the closed-form minimizer for a fixed grid. AdaRound (calibration track)
learns q = ⌊W/s⌋ + h(V) per layer from the layer's outputs on calibration inputs instead.

Beyond the weights (``quantize_calibration.py``): data-free bias correction (DFQ) from the
BatchNorm statistics or measured on data, and ranges for simulated activation quantization
(``activation_bits``) from synthesized (ZeroQ-style, ``synthesis.py``) or real inputs. The data
track follows the settings (:func:`data_track`); ``info`` records weight and activation bits apart.

Bits: N·b for the codes, plus a scale (``scale_bits``) per group and, when affine, a b-bit zero
point per group, plus a 32-bit header per tensor. 16 and 32 bits store the tensor as fp16/fp32.
A bias added by bias correction is stored raw (fp32); activation bits do not change the storage
(each range counts 64 bits of metadata, in the core).
"""

from __future__ import annotations

import copy
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
    check,
    inference_state,
    pack_bits,
    skeleton_of,
    unpack_bits,
    weight_layers,
)

from ...data.synthesis import ZEROQ, synthesize
from .calibration import (
    activation_ranges,
    adaround_q,
    analytic_shift,
    bn_input_means,
    bn_successors,
    layer_inputs,
    measured_shifts,
)

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


def _params(lo: torch.Tensor, hi: torch.Tensor, bits: int,
            symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if symmetric:
        scale = torch.maximum(hi.abs(), lo.abs()) / (2 ** (bits - 1) - 1)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (2**bits - 1)
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group decodes to zeros
    return scale, zero


def _quantize(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
              symmetric: bool) -> torch.Tensor:
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
        return {"nbits": self.nbits, "symmetric": self.symmetric, "scale_bits": self.scale_bits,
                "pad": self.pad, "shape": list(self.orig_shape), "q_shape": list(self.q.shape)}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> UniformCode:
        q_shape = tuple(meta["q_shape"])
        n = math.prod(q_shape)
        offset = 2 ** (meta["nbits"] - 1) if meta["symmetric"] else 0
        q = (unpack_bits(tensors["q"], meta["nbits"], n) - offset).float().reshape(q_shape)
        scale = tensors["scale"].float()
        zero = (unpack_bits(tensors["zero"], meta["nbits"], scale.numel()).float() if "zero" in tensors
                else torch.zeros_like(scale))
        return cls(q, scale, zero, meta["nbits"], meta["symmetric"], meta["scale_bits"], meta["pad"],
                   tuple(meta["shape"]))

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


class FloatCode(StoredTensorCode):
    """A tensor stored as fp16 or fp32 (the 16- and 32-bit settings), with a header word."""

    kind = "quantize.float"
    stored_part = "payload"

    def bits(self) -> SizeBreakdown:
        return super().bits() + SizeBreakdown(metadata=HEADER_BITS)


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
        bias_correction: correct each layer's bias by −(Ŵ − W)·E[x] (DFQ): "bn" estimates E[x]
            data-free from the BatchNorm (+ activation) before the layer (other layers are skipped
            and recorded); "synthetic" / "calibration" measure the shift on synthesized / real inputs.
        absorb_bias: a corrected layer without a bias whose only consumer is a BatchNorm shifts that
            BN's running mean instead (exact, no extra bits); otherwise a bias is added (fp32, counted).
        activation_bits: simulated quantization of each quantized layer's input (None: weights only);
            it does not change the storage.
        activation_calibration: where the activation ranges come from: "synthetic" (ZeroQ-style
            inputs synthesized from the BN statistics) or "calibration" (real calibration inputs).
        activation_range: "minmax" or "mse" (the shrink of the range with the least error).
        adaround: learn the rounding per layer on calibration inputs (AdaRound) instead of rounding
            to nearest; the grid (scales, zero points, clipping) stays the one set above.
        adaround_iterations / adaround_lr / adaround_lambda / adaround_batch: its optimisation.
        calibration_samples: real calibration inputs used (AdaRound, ranges, bias correction).
        synthetic_samples / synthetic_iterations / synthetic_lr: the synthesized inputs.
    """

    bits: int = 8
    granularity: Literal["tensor", "channel", "group"] = "channel"
    group_size: int = 128
    symmetric: bool = True
    clipping: Literal["minmax", "mse"] = "minmax"
    scale_bits: int = 32
    skip_first: bool = False
    skip_last: bool = False
    bias_correction: Literal["none", "bn", "synthetic", "calibration"] = "none"
    absorb_bias: bool = True
    activation_bits: int | None = None
    activation_calibration: Literal["synthetic", "calibration"] = "synthetic"
    activation_range: Literal["minmax", "mse"] = "mse"
    adaround: bool = False
    adaround_iterations: int = 500
    adaround_lr: float = 0.01
    adaround_lambda: float = 0.01
    adaround_batch: int = 32
    calibration_samples: int = 256
    synthetic_samples: int = 64
    synthetic_iterations: int = 500
    synthetic_lr: float = 0.5

    def __post_init__(self) -> None:
        check(2 <= self.bits <= 8 or self.bits in FLOAT_BITS,
              f"bits must be in 2..8, 16 or 32, got {self.bits}", "bits")
        check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}", "group_size")
        check(self.scale_bits in (16, 32), f"scale_bits must be 16 or 32, got {self.scale_bits}",
              "scale_bits")
        check(self.activation_bits is None or 2 <= self.activation_bits <= 16,
              f"activation_bits must be in 2..16 or null, got {self.activation_bits}", "activation_bits")
        minimum = {"adaround_iterations": 0, "synthetic_iterations": 0, "adaround_batch": 1,
                   "calibration_samples": 1, "synthetic_samples": 2}
        for key, least in minimum.items():
            check(getattr(self, key) >= least, f"{key} must be >= {least}, got {getattr(self, key)}", key)
        for key in ("adaround_lr", "synthetic_lr"):
            check(getattr(self, key) > 0, f"{key} must be > 0, got {getattr(self, key)}", key)
        check(self.adaround_lambda >= 0, f"adaround_lambda must be >= 0, got {self.adaround_lambda}",
              "adaround_lambda")

    @property
    def uses_data(self) -> bool:
        return self.adaround or self.bias_correction != "none" or self.activation_bits is not None


def data_track(config: QuantizeConfig) -> str:
    """The data track the settings need: real inputs > synthesized inputs > weights only."""
    acts = config.activation_calibration if config.activation_bits is not None else None
    if config.adaround or "calibration" in (config.bias_correction, acts):
        return "calibration"
    if "synthetic" in (config.bias_correction, acts):
        return "synthetic"
    return "data-free"


def quantize_tensor(w: torch.Tensor, config: QuantizeConfig) -> Code:
    """Quantize one tensor (any shape; 0-D and 1-D tensors get one scale)."""
    if config.bits in FLOAT_BITS:
        return FloatCode(w.detach().to(torch.float16 if config.bits == 16 else torch.float32).cpu().clone())
    g, pad = _grouped(w.detach().cpu(), config.granularity, config.group_size)
    q, scale, zero = quantize_groups(g, config.bits, config.symmetric, config.clipping)
    if config.scale_bits == 16:
        scale = scale.half().float()
    return UniformCode(q, scale, zero, config.bits, config.symmetric, config.scale_bits, pad, tuple(w.shape))


# -- quantizing with data -------------------------------------------------------------------------
class _Data:
    """The inputs the settings allow, made or read once: real calibration inputs or synthesized ones."""

    def __init__(self, model: nn.Module, config: QuantizeConfig, ctx: Context, info: dict[str, Any]):
        self.model, self.config, self.ctx, self.info = model, config, ctx, info
        self._synthetic: list[torch.Tensor] | None = None

    def real(self) -> list[torch.Tensor]:
        if self.ctx.calibration is None:
            raise ValueError("these quantize settings need real calibration inputs (the calibration track), "
                             "and none were given")
        x = self.ctx.calibration(self.config.calibration_samples)
        self.info["calibration_samples"] = int(x.shape[0])
        return list(x.split(64))

    def synthetic(self) -> list[torch.Tensor]:
        if self._synthetic is None:
            c = self.config
            settings = dataclasses.replace(ZEROQ, samples=c.synthetic_samples, lr=c.synthetic_lr,
                                           iterations=c.synthetic_iterations,
                                           batch_size=min(64, c.synthetic_samples))
            made = synthesize(self.model, settings, self.ctx)
            self.info["synthesis"] = made.info()
            self._synthetic = list(made.images.split(64))
        return self._synthetic

    def of(self, kind: str) -> list[torch.Tensor]:
        return self.real() if kind == "calibration" else self.synthetic()


def _adaround(model: nn.Module, codes: dict[str, Code], config: QuantizeConfig, ctx: Context,
              batches: list[torch.Tensor]) -> dict[str, Any]:
    """AdaRound each layer in model order, in place in ``codes``; the layer facts for the record."""
    qmodel = copy.deepcopy(model).eval()  # earlier layers rounded: where x̃ comes from
    state = model.state_dict()
    gen = ctx.generator(31)
    facts: dict[str, Any] = {}
    bar = ctx.progress(len(codes), "adaround")
    try:
        for key, code in list(codes.items()):
            name = key.rpartition(".")[0]
            x_q = layer_inputs(qmodel, name, batches, ctx.device) if isinstance(code, UniformCode) else None
            if x_q is not None:
                layer = model.get_submodule(name)
                fixed = {n: p.detach() for n, p in layer.named_parameters() if n != "weight"}
                x_fp = layer_inputs(model, name, batches, ctx.device)
                with torch.no_grad():
                    target = torch.cat([layer(xb) for xb in x_fp.split(64)])
                del x_fp

                def forward(w: torch.Tensor, xb: torch.Tensor, layer: nn.Module = layer,
                            fixed: dict[str, torch.Tensor] = fixed) -> torch.Tensor:
                    return torch.func.functional_call(layer, {**fixed, "weight": w}, (xb,))

                g, _ = _grouped(state[key].detach().cpu(), config.granularity, config.group_size)
                q, facts[name] = adaround_q(
                    g, code.scale, code.zero, code.nbits, code.symmetric, code.unflatten, forward, x_q,
                    target, config.adaround_iterations, config.adaround_lr, config.adaround_lambda,
                    config.adaround_batch, gen)
                code = dataclasses.replace(code, q=q)
                codes[key] = code
                del x_q, target
            with torch.no_grad():
                weight = qmodel.get_submodule(name).weight
                weight.copy_(code.decode().to(weight.device, weight.dtype))
            bar.update(1)
    finally:
        bar.close()
    done = list(facts.values())
    return {"layers": facts, "iterations": config.adaround_iterations,
            "error_rtn": sum(f["error_rtn"] for f in done), "error_adaround": sum(
                f["error_adaround"] if f["kept"] else f["error_rtn"] for f in done)}


def _correct_biases(model: nn.Module, codes: dict[str, Code], raw: dict[str, torch.Tensor],
                    skeleton: nn.Module, config: QuantizeConfig, data: _Data) -> dict[str, Any]:
    """Subtract each layer's output shift (Ŵ − W)·E[x] from its bias, in ``raw`` (the skeleton gets
    any bias it lacked), or add it to the running mean of the BatchNorm right after it."""
    state = model.state_dict()
    deltas = {key.rpartition(".")[0]: code.decode().float() - state[key].detach().float().cpu()
              for key, code in codes.items()}
    if config.bias_correction == "bn":
        means, skipped = bn_input_means(model, list(deltas))
        shifts = {n: analytic_shift(model.get_submodule(n), deltas[n], ex) for n, ex in means.items()}
    else:
        shifts = measured_shifts(model, deltas, data.of(config.bias_correction), data.ctx.device)
        skipped = {n: "not reached by the data" for n in deltas if n not in shifts}
    no_bias = [n for n in shifts if f"{n}.bias" not in raw]
    successors = bn_successors(model, no_bias) if config.absorb_bias and no_bias else {}
    added, absorbed = [], {}
    for name, shift in shifts.items():
        bias_key = f"{name}.bias"
        if bias_key in raw:
            raw[bias_key] = (raw[bias_key].detach().cpu().float() - shift).to(raw[bias_key].dtype)
        elif name in successors and successors[name] in raw:
            key = successors[name]
            raw[key] = (raw[key].detach().cpu().float() + shift).to(raw[key].dtype)
            absorbed[name] = key
        else:
            layer = skeleton.get_submodule(name)
            raw[bias_key] = -shift
            layer.bias = nn.Parameter(torch.zeros(shift.numel()))
            added.append(bias_key)
    return {"mode": config.bias_correction, "corrected": sorted(shifts), "skipped": skipped,
            "added_bias": added, "absorbed_into_bn": absorbed,
            "mean_abs_shift": {n: float(s.abs().mean()) for n, s in shifts.items()}}


def _compress_with_data(model: nn.Module, codes: dict[str, Code], config: QuantizeConfig, ctx: Context,
                        info: dict[str, Any]) -> Compressed:
    """``quantize`` with AdaRound, bias correction and activation ranges, in that order."""
    data = _Data(model, config, ctx, info)
    codes = dict(codes)
    if config.adaround and config.bits not in FLOAT_BITS:
        info["adaround"] = _adaround(model, codes, config, ctx, data.real())
    state = inference_state(model)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    raw = {k: v for k, v in state.items() if k not in codes}
    skeleton = skeleton_of(model)
    if config.bias_correction != "none":
        info["bias_correction"] = _correct_biases(model, codes, raw, skeleton, config, data)
    comp = Compressed(codes, raw, skeleton, shapes, info=info)
    if config.activation_bits is None:
        return comp
    names = [key.rpartition(".")[0] for key in codes]
    module = comp.module().to(ctx.device)
    ranges = activation_ranges(module, names, data.of(config.activation_calibration), ctx.device,
                               config.activation_bits, config.activation_range, ctx.generator(77))
    info["activation_calibration"] = config.activation_calibration
    return Compressed(codes, raw, skeleton, shapes, info=info, activations=ranges,
                      activation_bits=config.activation_bits)


def compress(model: nn.Module, config: QuantizeConfig, ctx: Context) -> Compressed:
    layers = weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    codes = {key: quantize_tensor(state[key], config) for key in layers}
    info: dict[str, Any] = {"weight_bits": config.bits, "activation_bits": config.activation_bits,
                            "data_track": data_track(config)}
    if not config.uses_data:
        return Compressed.from_codes(model, codes, info=info)
    return _compress_with_data(model, codes, config, ctx, info)


def compress_tensor(name: str, tensor: torch.Tensor, config: QuantizeConfig, ctx: Context) -> Code:
    if config.uses_data:
        raise ValueError("quantize as a later pipeline stage rounds tensors only: bias_correction, "
                         "activation_bits and adaround need the whole model, so use them in the first stage")
    return quantize_tensor(tensor, config)


SPEC = CompressorSpec(
    name="quantize",
    family="quantization",
    track=data_track,
    config=QuantizeConfig,
    compress=compress,
    compress_tensor=compress_tensor,
    codes=(UniformCode, FloatCode),
    identity={"bits": 32},
    version="2",
    quick={"adaround_iterations": 20, "calibration_samples": 32, "synthetic_samples": 16,
           "synthetic_iterations": 20},
    description="uniform quantization of conv/linear weights (tensor/channel/group, sym/affine, RTN or "
                "AdaRound), DFQ bias correction, activation ranges from synthetic or real data",
)


@b2s.hookimpl
def b2s_register_compressors(register: Any) -> None:
    register(SPEC)
