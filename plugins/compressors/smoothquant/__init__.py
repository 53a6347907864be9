"""SmoothQuant (Xiao et al., ICML 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for
Large Language Models"): W8A8 for transformers whose activations have outlier channels.

Per group of layers fed by one norm (q, k, v; the MLP's first layers), the activations' outliers migrate
into the weights: s_j = max|X_j|^α / max|W_j|^(1−α), α = 0.5 by default; X is divided by s (folded
into the norm's weight and bias: free) and W multiplied by s, an exact rewrite before quantization
(:mod:`.smoothing`; the folds are awq's, each checked on a calibration batch). Then W8: symmetric
per output channel (quantize's UniformCode; per tensor by setting, the paper's O1-O3) and A8 on every
quantized layer's input: static per tensor (O3, the default; symmetric, max|X| from the calibration
inputs after smoothing; applied at evaluation by the core's activation quantizer and counted, 64 bits a
range) or dynamic per token (O1 in the authors' code; the core's per-token quantizer,
``Compressed(token_activations=...)``: no scales stored, which layers and their bits are, 32 bits a layer).

Ours (documented where made): the matmuls inside attention (BMM inputs, quantized in the paper's O1-O3)
stay at full precision; every conv/linear layer's input is quantized, the first and last included (the
suite's ``activations:`` stage keeps SQuant's exceptions; do not add it on top: with static ranges the
core refuses either way). Both kinds of activation quantizer are part of the artifact: one loaded onto a
freshly built architecture computes what was evaluated.

The package: :mod:`.config`, :mod:`.smoothing`, :mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import SmoothQuantConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .compressor import Smoothed, compress, smooth
    from .smoothing import smoothing_scale, static_range, weight_maxima

__all__ = [
    "SPEC",
    "SmoothQuantConfig",
    "smoothing_scale",
    "static_range",
    "weight_maxima",
    "compress",
    "smooth",
    "Smoothed",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "compress": ".compressor",
        "smooth": ".compressor",
        "Smoothed": ".compressor",
        "smoothing_scale": ".smoothing",
        "static_range": ".smoothing",
        "weight_maxima": ".smoothing",
    },
)

SPEC = CompressorSpec(
    name="smoothquant",
    family="quantization",
    track="calibration",
    config=SmoothQuantConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(b2s.lazy("..quantize.codes:UniformCode", __name__, kind="quantize.uniform"),),
    identity=None,  # none: its codes are 2-8 bits and its inputs quantized
    version="3",  # 2: info["reparametrized"] (weight metrics not applicable); 3: per-token quantizers stored and counted
    quick={"calibration_samples": 16},
    description="SmoothQuant (ICML 2023): activation outliers migrated into the weights (alpha 0.5, folded into "
    "the norms), W8 per channel, A8 per tensor static (or per token dynamic)",
    defaults_source="the paper: SmoothQuant, Xiao et al. ICML 2023, Sec. 4-5 (alpha 0.5, W8A8, per-tensor static "
    "activations O3, 512 calibration samples); per-channel weights as the authors' code (mit-han-lab/smoothquant, "
    "smoothquant/fake_quant.py)",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
