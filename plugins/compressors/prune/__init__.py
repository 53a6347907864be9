"""Magnitude pruning: unstructured (global or per layer); structured channels via torch-pruning.

Theory form: W = M ⊙ V, a gating layer; R(φ) = ||M||₀ ≤ k, whose closed-form minimizer keeps
the k largest magnitudes. The generic solver fits V under the L1 relaxation and projects onto the
constraint (keeps the k largest |V|), which reaches that mask (see :class:`MaskNetwork`).

Bits: the kept values at 32 bits, plus their positions as the cheaper of a bitmask (N bits) and
CSR-style indices (nnz·⌈log2 cols⌉ + (rows+1)·⌈log2(nnz+1)⌉), plus a 32-bit header per tensor.
Where that costs at least the dense tensor (low sparsity), the tensor is stored dense, zeros
included, and its positions cost nothing: pruning never makes a tensor bigger than fp32. With
``positions: relative``, Deep Compression's relative indices: ``index_bits``-bit gaps with filler
zeros (:mod:`.codes`), declared as a symbol stream for the entropy stage.

The package: :mod:`.config`, :mod:`.codes` (the sparse code and its gating network),
:mod:`.compressor` (magnitude masks and the compressor), :mod:`.structured` (channel pruning),
and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import PruneConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import MaskNetwork, SparseCode, sparse_code
    from .compressor import compress, compress_tensor, magnitude_masks

__all__ = ["SPEC", "PruneConfig", "SparseCode", "MaskNetwork", "sparse_code", "magnitude_masks", "compress", "compress_tensor"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "MaskNetwork": ".codes",
        "SparseCode": ".codes",
        "sparse_code": ".codes",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "magnitude_masks": ".compressor",
        "target": ".compressor",
    },
)

SPEC = CompressorSpec(
    name="prune",
    family="pruning",
    track="data-free",
    config=PruneConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    codes=(b2s.lazy(".codes:SparseCode", __name__, kind="prune.sparse"),),
    identity={"sparsity": 0.0, "method": "magnitude"},
    version="5",  # 5: channel pruning also lowers the channel ratio where it removed over 1.1 x `sparsity`
    # (4: channel pruning reaches `sparsity` in weights removed; transformers prune head dims)
    # (3: the header counted is b2s.header_bits(meta()))
    defaults_source=(
        "ours: 50 % global unstructured magnitude pruning (Han et al. 2015 give no sparsity for a new model);"
        " relative indices at Deep Compression's fc width, 5 bits (Han et al. ICLR 2016, Sec. 2)"
    ),
    description="magnitude pruning: unstructured global/per-layer, or structured channels (torch-pruning)",
    target=b2s.lazy(".compressor:target", __name__),
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
