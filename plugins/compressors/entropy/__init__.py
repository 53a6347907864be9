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

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .codes import EntropyCode
from .compressor import compress, recode
from .config import EntropyConfig
from .streams import CodedStream, encode_stream, entropy_bits

__all__ = ["SPEC", "EntropyConfig", "EntropyCode", "CodedStream", "encode_stream", "entropy_bits", "compress", "recode"]

SPEC = CompressorSpec(
    name="entropy",
    family="entropy",
    track="data-free",
    config=EntropyConfig,
    compress=compress,
    recode=recode,
    codes=(EntropyCode,),
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
