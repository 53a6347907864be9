"""Entropy coding as a pipeline stage: the symbol streams of earlier stages' codes, stored in fewer bits.

``pipeline: [{name: quantize, bits: 4, granularity: channel}, {name: entropy, coder: huffman}]``.
Any code that declares integer symbol streams (``Code.symbols()``, e.g. quantize's integer codes)
gets them coded by a canonical, length-limited Huffman coder (:mod:`.huffman`, Deep Compression's
choice) or by constriction's ANS coder (:mod:`.ans`); the decoded weights do not change. The coded
bytes and the stored model (code lengths or quantized counts, :mod:`.streams`) are counted exactly
(:mod:`.codes`). As a first stage it is not applicable (nothing to code).

The package: :mod:`.config` (settings), :mod:`.huffman`, :mod:`.ans`, :mod:`.streams` (one coded
stream and its model), :mod:`.codes` (``EntropyCode``), :mod:`.compressor` (``recode``), and here
its registration (family ``entropy``, data-free).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import EntropyConfig

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .codes import EntropyCode
    from .compressor import compress, recode
    from .streams import CodedStream, encode_stream, entropy_bits

__all__ = ["SPEC", "EntropyConfig", "EntropyCode", "CodedStream", "encode_stream", "entropy_bits", "compress", "recode"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "EntropyCode": ".codes",
        "compress": ".compressor",
        "recode": ".compressor",
        "CodedStream": ".streams",
        "encode_stream": ".streams",
        "entropy_bits": ".streams",
    },
)

SPEC = CompressorSpec(
    name="entropy",
    family="entropy",
    track="data-free",
    config=EntropyConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    recode=b2s.lazy(".compressor:recode", __name__),
    codes=(b2s.lazy(".codes:EntropyCode", __name__, kind="entropy.coded"),),
    version="1",
    defaults_source=(
        "Deep Compression (Han et al. ICLR 2016, Sec. 4): Huffman coding of the stored integers; ours: the "
        "24-bit code-length limit and fixed-width fallback"
    ),
    description="entropy coding of earlier stages' integer symbols (canonical length-limited Huffman, or "
    "ANS via constriction) as a later pipeline stage; lossless, model and coded bytes counted",
)


@b2s.hookimpl
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
