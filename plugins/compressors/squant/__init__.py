"""SQuant (Guo et al., ICLR 2022, arXiv 2202.07471): data-free weight quantization that rounds by
flipping, minimising CASE (Constrained Absolute Sum of Error), the paper's data-free stand-in for the
Hessian-weighted error, decomposed into element, kernel and output-channel terms.

Per output channel, a uniform grid over the weights' min/max range (affine, as the authors' README
and code; symmetric by setting). Instead of rounding each weight to nearest, SQuant flips
codes to the other grid point so that summed rounding errors are small at three levels (element,
kernel, output channel: SQuant-E, -K, -C; :mod:`.rounding`), with no data and no gradient.

Faithful: the grid, the flip rule (round(|sum|) flips, the largest errors first) and its progressive
composition, SQuant-C's one flip per kernel ordered by the flipped code's error, the ablation
switches; the codes equal the authors' code's on random conv and linear weights (see
:mod:`.rounding`). Our choices (documented where they are made, settings where they can be): a linear
layer's row is one kernel (a tensor below 2-D one kernel); the affine range always includes 0, so that its
zero point is a b-bit code (the authors' raw min/max differs only for a channel of one sign); flips
are decided on the stored scale (``scale_bits``).

Activations are not this compressor's job: a suite's ``activations:`` stage
(:mod:`b2s_bench.calibration`) quantizes the layer inputs of every compressor, by default with
SQuant's rules (per tensor, data-free ranges from the BatchNorm statistics, the first layer's input
at full precision, the last layer's at 8 bits; the range within the BN model is the stage's
``rule``, not SQuant's multiple of the BN's σ). SQuant at W4A4 is ``{name: squant, bits: 4}`` with
``activations: {bits: 4}``.

Bits: N·b for the codes, a scale (``scale_bits``) per output channel and, when affine, a b-bit zero
point per channel, plus the header ``b2s.header_bits(meta())``: quantize's per-channel UniformCode,
declaring the same symbol streams (:mod:`.codes`).

The package: :mod:`.config`, :mod:`.codes`, :mod:`.rounding` (the flips), :mod:`.compressor`, and
here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import SQuantConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import SQuantCode, SQuantNetwork
    from .compressor import compress, compress_tensor
    from .rounding import case_stats, kernel_view, squant_codes, squant_round, squant_tensor

__all__ = [
    "SPEC",
    "SQuantConfig",
    "SQuantCode",
    "SQuantNetwork",
    "kernel_view",
    "squant_round",
    "squant_codes",
    "squant_tensor",
    "case_stats",
    "compress",
    "compress_tensor",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "SQuantCode": ".codes",
        "SQuantNetwork": ".codes",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "case_stats": ".rounding",
        "kernel_view": ".rounding",
        "squant_codes": ".rounding",
        "squant_round": ".rounding",
        "squant_tensor": ".rounding",
    },
)

SPEC = CompressorSpec(
    name="squant",
    family="quantization",
    track="data-free",
    config=SQuantConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    codes=(b2s.lazy(".codes:SQuantCode", __name__, kind="squant.uniform"),),
    identity=None,  # none: its codes are 2-8 bits (quantize's bits 32 is the identity of this grid)
    version="1",
    description="SQuant (ICLR 2022): per-channel uniform weights, rounding by flips that bound the summed "
    "error of each kernel and output channel (CASE), data-free",
    defaults_source="the paper: SQuant, Guo et al. ICLR 2022 (4-bit weights, E&K&C); the grid from the authors' "
    "README and code (clevercool/SQuant: per-channel affine min/max, fp32 scales)",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
