"""``entropy`` as a pipeline stage: recode each earlier code's symbol streams.

``recode`` codes every stream a code declares (``Code.symbols()``) with the configured coder,
checks that decoding gives back the same values (cheap next to the coding), and keeps a stream at
its fixed width when coding would not make it smaller (``keep_if_larger``: the coded bytes, the model
and the stream's header fields against ``count * width``; and the whole code too, once the wrapper's
header, which holds the inner code's kind, is added). As a first stage there
is nothing to code, which is a not-applicable cell saying how to write the pipeline.
"""

from __future__ import annotations

import numpy as np
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, Compressed, Context

from .codes import EntropyCode
from .config import EntropyConfig
from .streams import CodedStream, encode_stream

__all__ = ["compress", "recode"]


def compress(model: nn.Module, config: EntropyConfig, ctx: Context) -> Compressed:
    raise b2s.NotApplicableError(
        "entropy is a later pipeline stage: it codes the integer symbols of an earlier stage's codes; write "
        "`pipeline: [{name: quantize, bits: 4}, {name: entropy, coder: " + config.coder + "}]`"
    )


def recode(name: str, code: Code, config: EntropyConfig, ctx: Context) -> Code:
    """``code`` with its symbol streams entropy-coded, or ``code`` itself when none gets smaller."""
    streams: dict[str, CodedStream] = {}
    for tensor, sym in code.symbols().items():
        values = sym.values.detach().cpu().numpy().astype(np.int64, copy=False)
        if values.size == 0:
            continue
        stream = encode_stream(values, sym.width, config.coder, config.max_code_length, config.ans_precision, sym.part)
        # what coding costs: the bytes, the model and the stream's header fields
        cost = stream.data_bits + stream.model_bits + b2s.header_bits(stream.meta())
        if config.keep_if_larger and cost >= values.size * sym.width:
            continue
        decoded = stream.decode()
        if not np.array_equal(decoded, values):
            raise RuntimeError(f"{name}: the {config.coder} coder did not decode stream {tensor!r} exactly (a bug)")
        streams[tensor] = stream
    if not streams:
        return code
    coded = EntropyCode(code, streams)
    if config.keep_if_larger and coded.bits().total >= code.bits().total:  # the wrapper's own header did not pay
        return code
    return coded
