"""Wanda (Sun et al., ICLR 2024): prune the weights of lowest |W_ij|·||X_j||₂ (weight magnitude times
the norm of its input feature over the calibration inputs), compared within each output row,
unstructured or N:M, with no weight update.

Calibration track, block by block (:mod:`b2s_bench.calibration.layerwise`: the column norms, a
conv's through im2col; ``true_sequential``: within a block too, group by group). Bits as
sparsegpt's: prune's SparseCode (unstructured) or the N:M pattern code (3 bits per 4 weights at
2:4), kept values at fp32, plus the header.

The package: :mod:`.config`, :mod:`.codes`, :mod:`.compressor`, and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import WandaConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .compressor import compress, prune_weight, wanda_keep

__all__ = ["SPEC", "WandaConfig", "wanda_keep", "prune_weight", "compress"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {"wanda_keep": ".compressor", "prune_weight": ".compressor", "compress": ".compressor"},
)

SPEC = CompressorSpec(
    name="wanda",
    family="pruning",
    track="calibration",
    config=WandaConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(
        b2s.lazy("..prune.codes:SparseCode", __name__, kind="prune.sparse"),
        b2s.lazy("..sparsegpt.codes:NMCode", __name__, kind="sparsegpt.nm"),
    ),
    identity={"sparsity": 0.0},
    version="1",
    quick={"calibration_samples": 16},
    target=b2s.lazy(".compressor:target", __name__),
    defaults_source=(
        "the paper: Wanda, Sun et al. ICLR 2024, Sec. 3-4 (50 % unstructured, scores compared per output row, "
        "or 2:4; no weight update; 128 calibration samples: C4 segments there, the calibration track's "
        "inputs here)"
    ),
    description="Wanda (ICLR 2024): prune by |weight| x input-feature norm per output row, unstructured or "
    "N:M, no update, block by block on calibration inputs",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
