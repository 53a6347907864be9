"""Low-rank decomposition without data: truncated SVD of conv/linear layers, or Tucker-2 of convs.

Theory form: W = A Bᵀ, a two-layer linear network with an r-wide bottleneck; R(φ) is the rank,
relaxed to the nuclear norm ||W||_* = min ½(||A||² + ||B||²) over A Bᵀ = W. Truncated SVD with Σ
split as √Σ into both factors is the closed-form minimizer (Eckart–Young) and the balanced point
of the relaxation; the generic solver fitting the bottleneck network from a random start reaches
it (linear networks have no spurious local minima). Tucker-2 (HOSVD, optionally refined by HOOI)
is the multilinear analogue for convs: W = G ×₁ U_out ×₂ U_in. The codes, their network and
deployed (two- or three-layer) forms are in :mod:`.codes`.

Bits: the factors at 32 bits (payload) plus a 32-bit header (the ranks) per tensor. A layer whose
factors would not be strictly smaller than the dense weight (r(m+n) + 1 ≥ mn 32-bit words for
SVD, C_in R_i + R_i R_o k² + R_o C_out + 1 ≥ C_out C_in k² for Tucker-2) stays dense: it is stored
as a :class:`DenseCode`, counted exactly like a raw tensor (32·N, no header), so later pipeline
stages may still compress it and it counts among the targeted layers. Grouped and depthwise convs
and layers below ``min_numel`` are not targeted: they stay raw.

The package: :mod:`.config`, :mod:`.codes` (the codes, their networks and deployed forms),
:mod:`.decompose` (rank selection and the decompositions), :mod:`.compressor`, and here its
registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import DEFAULT_ENERGY, LowRankConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import HEADER_BITS, BottleneckNetwork, DenseCode, SvdCode, TuckerCode, TuckerNetwork
    from .compressor import compress, compress_tensor
    from .decompose import compress_weight, energy_rank, svd_code, thin_svd, tucker_code

__all__ = [
    "SPEC",
    "LowRankConfig",
    "DEFAULT_ENERGY",
    "SvdCode",
    "TuckerCode",
    "DenseCode",
    "BottleneckNetwork",
    "TuckerNetwork",
    "energy_rank",
    "thin_svd",
    "svd_code",
    "tucker_code",
    "compress_weight",
    "compress",
    "compress_tensor",
    "HEADER_BITS",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "HEADER_BITS": ".codes",
        "BottleneckNetwork": ".codes",
        "DenseCode": ".codes",
        "SvdCode": ".codes",
        "TuckerCode": ".codes",
        "TuckerNetwork": ".codes",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "target": ".compressor",
        "compress_weight": ".decompose",
        "energy_rank": ".decompose",
        "svd_code": ".decompose",
        "thin_svd": ".decompose",
        "tucker_code": ".decompose",
    },
)

SPEC = CompressorSpec(
    name="lowrank",
    family="lowrank",
    track="data-free",
    config=LowRankConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    codes=(
        b2s.lazy(".codes:SvdCode", __name__, kind="lowrank.svd"),
        b2s.lazy(".codes:TuckerCode", __name__, kind="lowrank.tucker2"),
        b2s.lazy(".codes:DenseCode", __name__, kind="lowrank.dense"),
    ),
    identity={"energy": 1.0},
    version="2",  # 2: the header counted is b2s.header_bits(meta())
    defaults_source="ours: truncated SVD keeping 95 % of each layer's spectral energy (no paper's operating point)",
    description="truncated SVD (a conv as C_out x C_in*k*k) or Tucker-2 (HOSVD/HOOI) by rank/energy/ratio",
    target=b2s.lazy(".compressor:target", __name__),
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
