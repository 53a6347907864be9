"""Hyper-Compression (Fan et al., arXiv 2409.00592): weights as points on a dynamical system's trajectory.

Two labelled variants (setting ``variant``):

* ``released`` follows the released code (``compress_decom_v3``, github.com/Juntongkuki/Hyper-Compression),
  our reading of it in methods.md §6.3. Every parameter with at least ``min_numel`` (10) entries,
  biases and BatchNorm γ/β included, is flattened, padded to even length with its mean and cut into
  pairs. The pairs' centroid c centres a square of side ``rect_l``; the codebook is c plus the n
  points of a wound line in the square (a sheared lattice, see :mod:`.codebook`).
  Pairs outside the square are sorted by radius into 1..``class_max`` rings, pulled into the square
  by their ring's factor, snapped and pushed back out; the index stored is ``class·(n+1) + codeword``.
  The class count of a layer is the first whose mean absolute error is at most ``loss_threshold``,
  else the best one. With ``set_loss_limit`` (the authors' stop threshold; on by default, as in their
  Sheared-LLaMA script), a layer whose MAE exceeds ``loss_limit`` (0.006) stays fp32. Weights are not
  normalised: ``rect_l`` is in weight units, as in the released code, which sets it per model (0.8
  for MobileNetV3, 0.1 for UNet and Sheared-LLaMA); ``rect_l: auto`` (the default) sets it per tensor
  to ``rect_scale`` (4) standard deviations of its weights, so a transformer's weights (std 0.02)
  are not snapped on a grid of a 0.8 square.
* ``canonical`` is the paper's theoretical form (methods.md §6.2): weights normalised to [0,1] per
  tensor (min and max kept in fp32), groups of ``k`` weights, and for each group the integer
  n < ``n_c`` whose point x(n) = frac(n·δ·a), a_k = 1/(π+k), δ = ``delta``, is nearest (exact search).

Theory form: the decoder of a group is the one-parameter orbit h(θ) = θ·a mod 1 (released: a point of
the closed wound line, scaled by a ring factor), and the regularizer is the integer constraint
θ ∈ δ·{0, …, N_c − 1}. There is no useful gradient fit: h is periodic and the constraint discrete, and
the exact nearest-point search already is the projection, so ``as_network()`` returns None.

Bits: released, ⌈N/2⌉·⌈log2((n+1)(classes+1))⌉ for the indices plus 4×32 (centroid and farthest
pair, under ``scales``) and a 32-bit header (class count, n, padding) per layer; canonical,
⌈N/k⌉·⌈log2 N_c⌉ plus 2×32 (min, max, under ``scales``) and a 32-bit header. Skipped tensors and
BatchNorm running statistics stay raw fp32 and count (the released code does not count the
statistics, methods.md §6.3 item 6).

The package: :mod:`.config`, :mod:`.codes`, :mod:`.codebook` (the geometry), :mod:`.compressor`,
and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import HyperCompressConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import LatticeCode, RawCode, WindingCode
    from .compressor import compress, compress_tensor, encode_tensor, targets

__all__ = [
    "SPEC",
    "HyperCompressConfig",
    "LatticeCode",
    "WindingCode",
    "RawCode",
    "encode_tensor",
    "targets",
    "compress",
    "compress_tensor",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "LatticeCode": ".codes",
        "RawCode": ".codes",
        "WindingCode": ".codes",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "encode_tensor": ".compressor",
        "targets": ".compressor",
    },
)

SPEC = CompressorSpec(
    name="hypercompress",
    family="ergodic",
    track="data-free",
    config=HyperCompressConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    codes=(
        b2s.lazy(".codes:LatticeCode", __name__, kind="hypercompress.lattice"),
        b2s.lazy(".codes:WindingCode", __name__, kind="hypercompress.winding"),
        b2s.lazy(".codes:RawCode", __name__, kind="hypercompress.raw"),
    ),
    identity=None,  # none: a finite codebook of orbit points cannot hit every fp32 value exactly
    version="3",  # 3: defaults rect_l: auto (4 standard deviations a tensor) and the stop threshold on
    defaults_source=(
        "the authors' released code (Hyper-Compression, arXiv 2409.00592): its MobileNetV3 settings (n 1600, class_max 4, "
        "MAE threshold 0.001, min_numel 10) with its Sheared-LLaMA stop threshold (a layer over MAE 0.006 stays fp32); "
        "rect_l: auto (4 standard deviations a tensor) is ours, where they set it per model (0.8 MobileNetV3, 0.1 UNet, LLaMA)"
    ),
    description=(
        "Hyper-Compression (2409.00592): variant=released follows the released code (pairs on a "
        "wound-line lattice + outlier rings); variant=canonical the paper's irrational winding"
    ),
    quick={"n_c": 1024},
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
