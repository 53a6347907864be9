"""Uniform quantization: per tensor, per channel or per group; symmetric or affine; RTN or AdaRound.

Symmetric grids use the full range by default (s = max|W| / ((2^b − 1)/2), torchao's convention,
codes −2^(b−1) .. 2^(b−1) − 1); ``range: restricted`` keeps the older s = max|W| / (2^(b−1) − 1)
(:mod:`.rounding`).

Theory form: W = s·(q − z), a "rounding layer" q = round(V/s); R(φ) is the indicator of the grid,
and round-to-nearest is the closed-form minimizer for a fixed grid. AdaRound (calibration track)
learns q = ⌊W/s⌋ + h(V) per layer from the layer's outputs on calibration inputs instead.

Beyond the weights: data-free bias correction (DFQ) from the BatchNorm statistics or measured on
data, and ranges for simulated activation quantization (``activation_bits``) from synthesized
(ZeroQ-style) or real inputs: the shared machinery of :mod:`b2s_bench.calibration`.
The data track follows the settings (:func:`data_track`); ``info`` records weight and activation
bits apart.

The package: :mod:`.config` (settings and data track), :mod:`.codes` (the codes and their rounding
layers), :mod:`.rounding` (the quantizer), :mod:`.adaround` (what learns from data), :mod:`.compressor`
(the compressor), and here its registration.

Bits: N·b for the codes, plus a scale (``scale_bits``) per group and, when affine, a b-bit zero
point per group, plus a 32-bit header per tensor. 16 and 32 bits store the tensor as fp16/fp32.
A bias added by bias correction is stored raw (fp32); activation bits do not change the storage
(each range counts 64 bits of metadata, in the core).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import FLOAT_BITS, QuantizeConfig, data_track

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import AdaRoundCode, AdaRoundNetwork, FloatCode, RoundingNetwork, UniformCode
    from .compressor import compress, compress_tensor
    from .rounding import quantize_groups, quantize_tensor

__all__ = [
    "SPEC",
    "QuantizeConfig",
    "data_track",
    "UniformCode",
    "AdaRoundCode",
    "FloatCode",
    "RoundingNetwork",
    "AdaRoundNetwork",
    "quantize_tensor",
    "quantize_groups",
    "compress",
    "compress_tensor",
    "FLOAT_BITS",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "AdaRoundCode": ".codes",
        "AdaRoundNetwork": ".codes",
        "FloatCode": ".codes",
        "RoundingNetwork": ".codes",
        "UniformCode": ".codes",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "quantize_groups": ".rounding",
        "quantize_tensor": ".rounding",
    },
)

SPEC = CompressorSpec(
    name="quantize",
    family="quantization",
    track=data_track,
    config=QuantizeConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    codes=(
        b2s.lazy(".codes:UniformCode", __name__, kind="quantize.uniform"),
        b2s.lazy(".codes:FloatCode", __name__, kind="quantize.float"),
    ),
    identity={"bits": 32},
    version="4",  # 4: range (default "full", torchao's symmetric grid; 3 was "restricted"); 3: header_bits(meta())
    quick={"adaround_iterations": 20, "calibration_samples": 32, "synthetic_samples": 16, "synthetic_iterations": 20},
    defaults_source=(
        "ours: 8-bit per-channel symmetric round-to-nearest, data-free; the grid is torchao's weight-only "
        "convention (range: full, zero point 0, round half to even)"
    ),
    description="uniform quantization of conv/linear weights (tensor/channel/group, sym/affine, RTN or "
    "AdaRound), DFQ bias correction, activation ranges from synthetic or real data",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
