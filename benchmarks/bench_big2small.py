"""Benchmark: Big2Small's batched INR fitting against the naive per-layer loop, on EfficientNet-Lite0;
and (``--latency``) the deployed form's forward time as a ratio to the dense model.

Both runs fit the same INRs (same widths, initialisations, crops, steps and loss) to every conv/linear
weight above 100 KB; the batched run stacks the layers of each architecture and takes one optimizer
step for all, the naive run fits one layer after another. Reported: fit steps per second (a "step"
updates every layer once, so the naive loop's rate is steps / its total fit time), their ratio, the
final reconstruction error of both, and the peak RSS of the process after the batched fit.

    python benchmarks/bench_big2small.py                           # CPU, reduced steps (about 2 min)
    python benchmarks/bench_big2small.py --patch 32 --steps 60     # heavier steps: compute-bound on a CPU
    python benchmarks/bench_big2small.py --device cuda --steps 10000 --patch 0 --block 1   # paper-like, GPU
    python benchmarks/bench_big2small.py --skip-naive --mixed      # also a bf16-autocast fit against fp32
    python benchmarks/bench_big2small.py --latency                 # on-the-fly decoding vs dense (Fashion-MNIST CNN)

``--latency`` times, in one process, batch-1 and batch-256 forwards of the Fashion-MNIST CNN: dense;
deployed with the INR evaluated on every forward, its Fourier features kept and the INR run in
chunks sized for the device (one call on a GPU; the default); deployed with the weight cached after
the first forward (``deploy_cache``); and the previous on-the-fly path (features recomputed, 64k-entry
chunks). Each is a ratio to dense (median of repeats after warm-up).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from typing import Any

import b2s_common as common
import torch
from torch import nn

PAPER_STEPS = common.PAPER_STEPS


def run(model: nn.Module, settings: dict, device: str, seed: int) -> tuple[dict, dict, float]:
    compressed, wall = common.fit(model, settings, device, seed)
    return compressed.info, common.numbers(model, compressed), wall


def report(name: str, info: dict, err: dict, wall: float) -> None:
    print(
        f"{name:8s} {info['fit_seconds']:8.2f} s fit, {info['steps_per_second']:8.3f} steps/s "
        f"({info['layer_steps_per_second']:.1f} layer-steps/s); rel. error {err['rel_error']:.4f}, "
        f"PSNR {err['psnr']:.2f} dB; compress() {wall:.1f} s"
    )


@torch.inference_mode()
def forward_ms(model: nn.Module, x: torch.Tensor, repeats: int, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        model(x)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _chunked(model: nn.Module) -> nn.Module:
    """The deployed model with the previous on-the-fly path: features recomputed, 64k-entry chunks."""
    from b2s_bench_plugins.compressors.big2small.codes import DECODE_CHUNK

    slow = copy.deepcopy(model)
    for m in slow.modules():
        if type(m).__name__ == "INRLayer":
            m.decoder.keep_features, m.decoder.chunk = False, DECODE_CHUNK
    return slow


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Forward time of the deployed forms as ratios to dense; returns the table's numbers."""
    model = common.fmnist()
    settings = {"steps": 20, "block": args.block, "target_ratio": args.target_ratio}
    comp, _ = common.fit(model, settings, args.device, args.seed)
    forms = {
        "dense": comp.module().to(args.device),
        "on the fly (features kept)": comp.module(deployed=True).to(args.device),
        "on the fly, previous (chunks)": _chunked(comp.module(deployed=True)).to(args.device),
    }
    cached = comp.module(deployed=True)
    for m in cached.modules():
        if type(m).__name__ == "INRLayer":
            m.cache = True
    forms["deployed, weight cached"] = cached.to(args.device)
    out: dict[str, Any] = {}
    for batch in (1, 256):
        x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(args.device)
        times = {name: forward_ms(m, x, args.repeats, args.device) for name, m in forms.items()}
        print(f"\nbatch {batch}: dense {times['dense']:.3f} ms")
        for name, ms in times.items():
            print(f"  {name:32s} {ms:9.3f} ms  {ms / times['dense']:8.1f}x dense")
        out[batch] = {name: ms / times["dense"] for name, ms in times.items()}
    return out


def fitting(args: argparse.Namespace) -> int:
    model = common.lite0()
    settings = {
        "steps": args.steps,
        "patch_rows": args.patch,
        "patch_cols": args.patch,
        "patches": args.patches,
        "block": args.block,
        "target_ratio": args.target_ratio,
    }
    print(f"EfficientNet-Lite0 on {args.device} ({torch.get_num_threads()} torch threads); settings {settings}")
    if args.steps < PAPER_STEPS:
        print(
            f"NOTE: a reduced step count ({args.steps}, the paper: {PAPER_STEPS}) keeps the run short; the"
            " speed ratio does not depend on it, the reconstruction error does."
        )
    rss0 = common.peak_rss_mb()
    info_b, err_b, wall_b = run(model, {**settings, "batched": True}, args.device, args.seed)
    rss_b = common.peak_rss_mb()
    print(
        f"\ncompressed layers: {info_b['compressed_layers']} in {info_b['fit_groups']} stacked groups "
        f"({info_b['architectures']} INR architectures); layers left raw: {len(info_b['raw_layers'])}"
    )
    report("batched", info_b, err_b, wall_b)
    print(f"peak RSS after fitting the whole model (batched): {rss_b:.0f} MB (before: {rss0:.0f} MB; target < 4096 MB)")
    if args.mixed:
        info_m, err_m, wall_m = run(model, {**settings, "batched": True, "precision": "bf16"}, args.device, args.seed)
        report("bf16", info_m, err_m, wall_m)
        gap = (err_m["rel_error"] - err_b["rel_error"]) / err_b["rel_error"]
        print(
            f"mixed precision (bf16 autocast) / fp32: {info_m['steps_per_second'] / info_b['steps_per_second']:.2f}x "
            f"the steps/s; relative error {100 * gap:+.2f} % against fp32"
        )
    if args.skip_naive:
        return 0
    info_n, err_n, wall_n = run(model, {**settings, "batched": False}, args.device, args.seed)
    report("naive", info_n, err_n, wall_n)
    speedup = info_b["steps_per_second"] / info_n["steps_per_second"]
    gap = abs(err_b["rel_error"] - err_n["rel_error"]) / err_n["rel_error"]
    print(f"\nspeed-up, batched / naive: {speedup:.2f}x (target >= 3x)")
    print(
        f"final relative error, batched vs naive: {err_b['rel_error']:.4f} vs {err_n['rel_error']:.4f}: "
        f"{100 * gap:.2f} % apart (target within 5 %)"
    )
    print(f"peak RSS of the process: {common.peak_rss_mb():.0f} MB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help=f"fit steps per layer (paper: {PAPER_STEPS})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--patch", type=int, default=16, help="crop side in weights (0: whole tensors)")
    parser.add_argument("--patches", type=int, default=2, help="crops per layer per step")
    parser.add_argument("--block", type=int, default=8, help="weights per INR evaluation (1: one per weight)")
    parser.add_argument("--target-ratio", type=float, default=4.0, help="fp32 INR budget: N / ratio parameters")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: on a shared, busy machine, more are slower)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-naive", action="store_true", help="only the batched fit")
    parser.add_argument(
        "--mixed", action="store_true", help="also fit batched with precision: bf16 (autocast) and compare it with fp32"
    )
    parser.add_argument("--latency", action="store_true", help="time the deployed forms against dense instead")
    parser.add_argument("--repeats", type=int, default=20, help="--latency: timed forwards per form")
    args = parser.parse_args(argv)
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if args.latency:
        latency(args)
        return 0
    return fitting(args)


if __name__ == "__main__":
    sys.exit(main())
