"""HQQ (Badri & Shaji 2023, "Half-Quadratic Quantization of Large Machine Learning Models", the mobiusml
blog and the hqq package): data-free weight quantization whose zero points (and, by setting, scales)
minimise the lp error (p = 0.7) of the weights by half-quadratic splitting (:mod:`.solver`).

Faithful: the affine min/max grid per group of 64 weights along a row (hqq's axis 1; axis 0 by
setting), the starting point and its guards, the lp shrinkage, the closed-form zero point, β = 10,
κ = 1.01, 20 iterations with hqq's early stop, the zero point rounded at start at 4 bits, fp16 scales
and zero points. With ``kappa: 1`` (hqq's default solver never grows β) the codes equal
``hqq.core.quantize.Quantizer.quantize``'s (the slow cross-check test).

Bits: N·b for the codes, an fp16 scale and an fp16 zero point per group (``scale_bits``), plus the header
``b2s.header_bits(meta())``: quantize's UniformCode with real zero points (:mod:`.codes`).

The package: :mod:`.config`, :mod:`.codes`, :mod:`.solver`, :mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import HQQConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import HQQCode, group_view
    from .compressor import compress, compress_tensor
    from .solver import hqq_groups, hqq_tensor, lp_error, shrink_lp

__all__ = [
    "SPEC",
    "HQQConfig",
    "HQQCode",
    "group_view",
    "hqq_groups",
    "hqq_tensor",
    "lp_error",
    "shrink_lp",
    "compress",
    "compress_tensor",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "HQQCode": ".codes",
        "group_view": ".codes",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "hqq_groups": ".solver",
        "hqq_tensor": ".solver",
        "lp_error": ".solver",
        "shrink_lp": ".solver",
    },
)

SPEC = CompressorSpec(
    name="hqq",
    family="quantization",
    track="data-free",
    config=HQQConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    codes=(b2s.lazy(".codes:HQQCode", __name__, kind="hqq.affine"),),
    identity=None,  # none: its codes are 1-8 bits
    version="1",
    description="HQQ (Badri & Shaji 2023): affine group quantization whose zero points minimise the lp "
    "(p=0.7) weight error by half-quadratic splitting, data-free",
    defaults_source="the authors' code (mobiusml/hqq 0.2.8, hqq/core/quantize.py hqq_base_quant_config and "
    "hqq/core/optimize.py): 4 bits, group 64, axis 1, lp 0.7, beta 10, kappa 1.01, 20 iterations, fp16 meta",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
