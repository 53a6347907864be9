"""Bit packing: the numpy packbits implementation against the first one (torch, one int64 per bit).

Packs and unpacks as many 4-bit codes as EfficientNet-Lite0 has conv/linear weights (4.65 M; the
values are random, only their count and width matter) with both implementations, in the same
process, checks that they give the same bytes, and prints seconds and peak extra memory of each
and the ratios old / new. Peak memory is the growth of the process's peak resident set (VmHWM)
during one call, reset before each call through /proc/self/clear_refs (Linux), so it sees torch's
and numpy's buffers alike; where that reset is not possible, tracemalloc's peak (numpy only).
Unpacking's peak is mostly its result: int64, 8 bytes a value.

    .venv/bin/python benchmarks/bench_packing.py [--n 4650000] [--bits 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import torch

from b2s_bench import pack_bits, unpack_bits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_packing import reference_pack_bits, reference_unpack_bits  # noqa: E402  (the old implementation)


def _vm(field: str) -> float | None:
    """A /proc/self/status memory field in MB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measure(fn: Callable[[], torch.Tensor], repeat: int) -> tuple[float, float, torch.Tensor]:
    """(best seconds, peak extra MB of the first run, result) of ``fn``."""
    gc.collect()
    resettable = _reset_peak() and _vm("VmHWM") is not None
    rss0 = _vm("VmRSS") or 0.0
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    best = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    extra = (_vm("VmHWM") or 0.0) - rss0 if resettable else traced
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best, extra, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_650_000, help="values to pack (EfficientNet-Lite0: 4.65 M)")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    values = torch.randint(0, 1 << args.bits, (args.n,), generator=torch.Generator().manual_seed(0))
    t_new, m_new, packed_new = measure(lambda: pack_bits(values, args.bits), args.repeat)
    t_old, m_old, packed_old = measure(lambda: reference_pack_bits(values, args.bits), args.repeat)
    assert torch.equal(packed_new, packed_old), "the two implementations disagree"
    u_new, um_new, back_new = measure(lambda: unpack_bits(packed_new, args.bits, args.n), args.repeat)
    u_old, um_old, back_old = measure(lambda: reference_unpack_bits(packed_new, args.bits, args.n), args.repeat)
    assert torch.equal(back_new, values) and torch.equal(back_old, values)
    print(f"{args.n:,} values at {args.bits} bits ({packed_new.numel() / 1e6:.2f} MB packed), best of {args.repeat}")
    print("| step | old s | new s | time old/new | old peak MB | new peak MB | memory old/new |")
    print("|---|---|---|---|---|---|---|")
    for name, to, tn, mo, mn in (("pack", t_old, t_new, m_old, m_new), ("unpack", u_old, u_new, um_old, um_new)):
        print(f"| {name} | {to:.3f} | {tn:.3f} | {to / tn:.1f}x | {mo:.0f} | {mn:.1f} | {mo / max(mn, 1e-3):.0f}x |")


if __name__ == "__main__":
    main()
