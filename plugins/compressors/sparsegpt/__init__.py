"""SparseGPT (Frantar & Alistarh, ICML 2023): one-shot pruning, unstructured or N:M, each block of
columns' mask chosen by OBS saliency and the pruned weights' error compensated on the later columns
through the inverse Hessian of the layer's inputs (GPTQ's machinery with a mask instead of a grid).

Calibration track, block by block (:mod:`b2s_bench.calibration.layerwise`; ``true_sequential``:
within a block too, group by group, as the authors' ``llama.py --true-sequential``). Joint quantization (the
paper's 50 % + 4-bit) is not done: stack a quantizer as a separate stage.

Bits: unstructured, prune's SparseCode (kept values at fp32 and the cheaper of a bitmask and CSR
indices, or dense where no bigger); N:M, :class:`.codes.NMCode` (kept values at fp32 and one pattern
index of ⌈log2 C(M, N)⌉ bits per group of M: 3 bits per 4 weights at 2:4); plus the header.

The package: :mod:`.config`, :mod:`.solver`, :mod:`.codes`, :mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import SparseGPTConfig, parse_structure

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import NMCode, pruned_code
    from .compressor import compress, prune_weight
    from .solver import nm_keep, sparsegpt_matrix

__all__ = [
    "SPEC",
    "SparseGPTConfig",
    "parse_structure",
    "NMCode",
    "pruned_code",
    "sparsegpt_matrix",
    "nm_keep",
    "compress",
    "prune_weight",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "NMCode": ".codes",
        "pruned_code": ".codes",
        "sparsegpt_matrix": ".solver",
        "nm_keep": ".solver",
        "compress": ".compressor",
        "prune_weight": ".compressor",
    },
)

SPEC = CompressorSpec(
    name="sparsegpt",
    family="pruning",
    track="calibration",
    config=SparseGPTConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(
        b2s.lazy("..prune.codes:SparseCode", __name__, kind="prune.sparse"),
        b2s.lazy(".codes:NMCode", __name__, kind="sparsegpt.nm"),
    ),
    identity={"sparsity": 0.0},
    version="1",
    quick={"calibration_samples": 16},
    uses_gpu=True,
    target=b2s.lazy(".compressor:target", __name__),
    defaults_source=(
        "the paper: SparseGPT, Frantar & Alistarh ICML 2023, Sec. 3-4 (50 % unstructured per layer, or 2:4; "
        "mask selection and lazy updates in blocks of 128 columns; λ = 1 % of the mean Hessian diagonal; "
        "128 calibration samples: C4 segments there, the calibration track's inputs here)"
    ),
    description="SparseGPT (ICML 2023): one-shot unstructured or N:M pruning with inverse-Hessian (OBS) "
    "updates, block by block on calibration inputs (convs through im2col)",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
