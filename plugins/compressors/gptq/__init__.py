"""GPTQ (Frantar et al., ICLR 2023): weights quantized column by column, each column's rounding error
compensated on the columns not yet quantized through the inverse Hessian of the layer's inputs.

Calibration track: the model runs block by block on the calibration inputs
(:mod:`b2s_bench.calibration.layerwise`), each layer's H = 2·XᵀX/n (a convolution through im2col);
later blocks see the outputs of the quantized earlier ones. ``true_sequential``: within a block too,
group by group of layers fed the same input (the authors' ``--true-sequential``).

Bits (quantize's UniformCode): N·b for the codes, a ``scale_bits`` scale and (asymmetric, the
default) a b-bit zero point per group of ``group_size`` input columns per output channel (the last
group's padding stored and counted), plus the header. ``act_order`` stores no permutation.

The package: :mod:`.config`, :mod:`.solver` (GPTQ on one matrix), :mod:`.codes`, :mod:`.compressor`,
and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import GPTQConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .compressor import compress, quantize_weight
    from .solver import gptq_matrix

__all__ = ["SPEC", "GPTQConfig", "gptq_matrix", "compress", "quantize_weight"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {"gptq_matrix": ".solver", "compress": ".compressor", "quantize_weight": ".compressor"},
)

SPEC = CompressorSpec(
    name="gptq",
    family="quantization",
    track="calibration",
    config=GPTQConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(b2s.lazy("..quantize.codes:UniformCode", __name__, kind="quantize.uniform"),),
    version="1",
    quick={"calibration_samples": 16},
    uses_gpu=True,
    defaults_source=(
        "the paper: GPTQ, Frantar et al. ICLR 2023, Sec. 3-5 (4-bit asymmetric min/max grid, groups of 128 "
        "in the LLM setting, lazy batches of 128 columns, λ = 1 % of the mean Hessian diagonal, 128 "
        "calibration samples: C4 segments there, the calibration track's inputs here; act_order off as in "
        "the paper, on in the authors' later code; true_sequential likewise: off as in the paper, on in "
        "their LLaMA command); fp16 scales as the authors' packed format"
    ),
    description="GPTQ (ICLR 2023): column-by-column quantization with inverse-Hessian error compensation, "
    "block by block on calibration inputs (convs through im2col)",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
