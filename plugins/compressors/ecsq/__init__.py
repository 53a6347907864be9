"""Entropy-constrained scalar quantization (ECSQ): a uniform quantizer whose step meets a rate after
entropy coding.

Per conv/linear weight (above ``min_numel``; the first/last layer optionally skipped; other tensors
stay fp32): a mid-tread uniform quantizer, q = round(w/Δ), W = Δ·q, with Δ found by bisection so that
the empirical entropy of the indices plus an estimate of the entropy coder's probability model, per
weight, is at most ``rate`` (:mod:`.quantizer`: the model estimate, the bisection). With ``rdo`` the
rounding is rate-distortion optimised: each index minimises (w − Δq)² + λ·(−log2 p(q)), alternated
with the histogram p, λ = c·Δ² (the ECSQ design of Chou, Lookabaugh and Gray; c = ln 2 / 6 by default,
the high-rate slope of D(R)).

Theory form: W = Δ·q, a uniform rounding layer; R(φ) = N·H(q), the rate of an ideal entropy code.
At high rate on a Gaussian, ECSQ sits 10·log10(πe/6) ≈ 1.53 dB above D(R) = σ²·2^(−2R).

Bits (:mod:`.codes`): the indices at a fixed width (the smallest holding their span), declared as a
symbol stream, Δ in fp32 and the header (shape, width, offset): honest on its own; an entropy-coding
stage after it (``pipeline: [{name: ecsq, rate: 3}, {name: entropy}]``) brings the stored size to
about ``rate`` bits a weight. ``target`` checks the rate reached (:mod:`.compressor`).

The package: :mod:`.config`, :mod:`.quantizer` (the step search and RDO rounding), :mod:`.codes`,
:mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import DEFAULT_LAMBDA_SCALE, MAX_RATE, ECSQConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import ECSQCode
    from .compressor import TARGET_TOLERANCE, compress, compress_tensor, rate_reached, target
    from .quantizer import Quantized, lagrangian, model_bits, quantize_at, rate_of, rdo_indices, search_step, stream_entropy

__all__ = [
    "SPEC",
    "ECSQConfig",
    "ECSQCode",
    "DEFAULT_LAMBDA_SCALE",
    "MAX_RATE",
    "TARGET_TOLERANCE",
    "Quantized",
    "compress",
    "compress_tensor",
    "target",
    "rate_reached",
    "search_step",
    "quantize_at",
    "rdo_indices",
    "lagrangian",
    "rate_of",
    "model_bits",
    "stream_entropy",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "ECSQCode": ".codes",
        "TARGET_TOLERANCE": ".compressor",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "rate_reached": ".compressor",
        "target": ".compressor",
        "Quantized": ".quantizer",
        "lagrangian": ".quantizer",
        "model_bits": ".quantizer",
        "quantize_at": ".quantizer",
        "rate_of": ".quantizer",
        "rdo_indices": ".quantizer",
        "search_step": ".quantizer",
        "stream_entropy": ".quantizer",
    },
)

SPEC = CompressorSpec(
    name="ecsq",
    family="quantization",
    track="data-free",
    config=ECSQConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    codes=(b2s.lazy(".codes:ECSQCode", __name__, kind="ecsq.uniform"),),
    # in rounding passes over the model: about 12 steps tried (measured on a 4M-weight Gaussian), and
    # with RDO about 19 more, each a rounding, its thresholds and a sort's share
    cost=lambda config: 60.0 if config.rdo else 12.0,
    identity={"rate": MAX_RATE},  # the finest step, max|w|·2^-30, on layers up to 2^22 weights (MAX_RATE)
    version="2",  # 2: a tensor no step can code at the rate stays fp32 (was zeroed at the coarsest step)
    defaults_source=(
        "ours: 4 bits a weight after entropy coding, no RDO; RDO's λ = (ln 2/6)·Δ², the high-rate slope of a uniform quantizer"
    ),
    description="entropy-constrained scalar quantization: a uniform step bisected to an entropy rate "
    "(bits per weight after entropy coding), optional RDO rounding; indices declared for an entropy stage",
    target=b2s.lazy(".compressor:target", __name__),
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
