"""k-means weight sharing (Han, Mao, Dally, "Deep Compression", ICLR 2016, Section 3).

Per weight tensor, k = 2**bits shared values are found by Lloyd's k-means on the weights, started
from the paper's linear initialisation (centroids evenly spaced between the smallest and largest
weight; ``init: density|random`` are the paper's other two); every weight is stored as a
``bits``-bit index into the tensor's codebook. After ``prune`` in a pipeline it shares the kept
values (prune's payload), as in Deep Compression, whose third stage (Huffman coding of the indices)
the ``entropy`` stage supplies through :meth:`ShareCode.symbols`.

Theory form: W = C[I], a codebook lookup; R(φ) is the indicator that every weight takes one of k
values. k-means is a local search (its network form fits the codebook with the indices fixed:
the gradient of a shared value is the sum of its weights' gradients, the paper's trained
quantization, here fitted to the weights, not to the task loss).

The paper's trained quantization (:mod:`.finetune`): with ``finetune_epochs > 0`` the shared values
are fine-tuned on the training split's loss with the indices fixed (the training track); the
default 0 is data-free. As the first stage on the model's weights; as a later stage (after
``prune``) through the spec's ``refine``, on the whole pruned model: the indices and prune's
positions stay, so pruned weights stay exactly 0.

The package: :mod:`.config` (settings), :mod:`.kmeans` (Lloyd in one dimension), :mod:`.codes` (the
code and its network), :mod:`.finetune` (trained quantization), :mod:`.compressor` (the compressor), and here its registration.

Bits: N·bits for the indices (payload), 2**bits shared values at 32 (or 16) bits (codebook), plus
the header ``b2s.header_bits(meta())`` per tensor. A tensor whose code would cost at least its fp32
values (a small tensor with a large codebook), or under ``min_numel``, stays fp32: raw when
``share`` is the first stage, a :class:`KeptFloatCode` in a later one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import INITS, ShareConfig, data_track

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import CodebookNetwork, KeptFloatCode, ShareCode
    from .compressor import compress, compress_tensor, pays_off, share_tensor
    from .finetune import finetune_codebooks, refine
    from .kmeans import KMeansResult, assign, initial_centroids, kmeans_1d

__all__ = [
    "SPEC",
    "ShareConfig",
    "INITS",
    "data_track",
    "finetune_codebooks",
    "refine",
    "ShareCode",
    "KeptFloatCode",
    "CodebookNetwork",
    "pays_off",
    "KMeansResult",
    "kmeans_1d",
    "initial_centroids",
    "assign",
    "share_tensor",
    "compress",
    "compress_tensor",
]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "CodebookNetwork": ".codes",
        "KeptFloatCode": ".codes",
        "ShareCode": ".codes",
        "compress": ".compressor",
        "compress_tensor": ".compressor",
        "pays_off": ".compressor",
        "share_tensor": ".compressor",
        "finetune_codebooks": ".finetune",
        "refine": ".finetune",
        "KMeansResult": ".kmeans",
        "assign": ".kmeans",
        "initial_centroids": ".kmeans",
        "kmeans_1d": ".kmeans",
    },
)

SPEC = CompressorSpec(
    name="share",
    family="quantization",
    track=data_track,
    config=ShareConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    compress_tensor=b2s.lazy(".compressor:compress_tensor", __name__),
    refine=b2s.lazy(".finetune:refine", __name__),  # trained quantization as a later stage (finetune_epochs > 0)
    codes=(
        b2s.lazy(".codes:ShareCode", __name__, kind="share.codebook"),
        b2s.lazy(".codes:KeptFloatCode", __name__, kind="share.float"),
    ),
    identity=None,  # k shared values reproduce a tensor only when it has at most k distinct values
    version="1",
    quick={"iterations": 20},
    defaults_source=(
        "Deep Compression (Han et al. ICLR 2016, Sec. 3): linear centroid initialisation, 5-bit indices (the "
        "paper's fc width; 8 for convs via layer_bits); ours: the stopping rule"
    ),
    description="k-means weight sharing (Deep Compression): a 2**bits-value codebook per tensor, bits-bit indices",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
