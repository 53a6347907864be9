"""Measurements behind Big2Small's defaults: learning rate, batch per step, INR quantization, reordering.

Each study fits Big2Small to real trained layers (default: the Fashion-MNIST CNN's 128 x 3136
``classifier.1``; ``--model lite0-large``: EfficientNet-Lite0's three largest weights) and prints,
per setting, the weight PSNR, the counted rate and the gap to the Gaussian rate-distortion limit
(see ``b2s_bench.fitting.limits``), the passes over the tensor and the fit time. Every row of a study
shares the other settings (``BASE`` plus the command line), so rows differ by the one lever.

    python benchmarks/tune_big2small.py lr                 # lr x step budget, with and without warm-up
    python benchmarks/tune_big2small.py batch --seconds 60 # crop size / sampling at equal wall time
    python benchmarks/tune_big2small.py quant              # 8/6-bit INR: after the fit vs QAT, by omega0
    python benchmarks/tune_big2small.py permute            # row/column reordering: none, pca, greedy
    python benchmarks/tune_big2small.py curve --steps 4000 # one long fit's convergence curve
    python benchmarks/tune_big2small.py grid --grid '{"omega0": [3, 10], "lr": [0.001, 0.003]}'  # any product

Timings on a shared machine are noisy; the studies compare error at equal steps (or equal seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import b2s_common as common
import torch

#: the CPU recipe the studies start from (the suites' previous CPU settings, the version-1 defaults)
BASE: dict[str, Any] = {
    "block": 8,
    "patch_rows": 32,
    "patch_cols": 32,
    "patches": 2,
    "sampling": "random",
    "lr": 1e-3,
    "target_ratio": 4.0,
}


def study_lr(model: torch.nn.Module, base: dict[str, Any], args: argparse.Namespace) -> None:
    lrs = [float(x) for x in args.lrs.split(",")]
    for steps in [int(x) for x in args.budgets.split(",")]:
        print(f"\n-- {steps} steps")
        for lr in lrs:
            for warmup in (0, steps // 20) if lr >= 1e-2 else (0,):
                comp, _ = common.fit(model, {**base, "steps": steps, "lr": lr, "warmup_steps": warmup})
                print(common.row(f"lr {lr:g} warm-up {warmup}", common.numbers(model, comp)), flush=True)


def _steps_for(model: torch.nn.Module, settings: dict[str, Any], seconds: float) -> int:
    """Steps that take about ``seconds`` (timed on a short fit of the same settings)."""
    probe = 20
    comp, _ = common.fit(model, {**settings, "steps": probe, "eval_every": probe})
    return max(probe, int(seconds / comp.info["fit_seconds"] * probe))


BATCHES: list[tuple[str, dict[str, Any]]] = [
    ("2 random 32x32 crops", {"patch_rows": 32, "patch_cols": 32, "patches": 2}),
    ("8 random 32x32 crops", {"patch_rows": 32, "patch_cols": 32, "patches": 8}),
    ("8 32x32 tiles, epochs", {"patch_rows": 32, "patch_cols": 32, "patches": 8, "sampling": "tiles"}),
    ("4 random 64x64 crops", {"patch_rows": 64, "patch_cols": 64, "patches": 4}),
    ("all 64x64 tiles (full tensor)", {"patch_rows": 64, "patch_cols": 64, "patches": 0}),
]


def study_batch(model: torch.nn.Module, base: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n-- about {args.seconds:g} s of fitting each")
    for label, batch in BATCHES:
        settings = {**base, **batch}
        steps = _steps_for(model, settings, args.seconds)
        comp, _ = common.fit(model, {**settings, "steps": steps})
        print(common.row(f"{label} ({steps} st)", common.numbers(model, comp)), flush=True)


def study_quant(model: torch.nn.Module, base: dict[str, Any], args: argparse.Namespace) -> None:
    for omega in [float(x) for x in args.omegas.split(",")]:
        print(f"\n-- omega0 {omega:g}, {args.steps} steps")
        ref = None
        for bits, qat in ((32, False), (8, False), (8, True), (6, False), (6, True)):
            settings = {"steps": args.steps, "omega0": omega, "inr_bits": bits, "qat": "on" if qat else "off"}
            comp, _ = common.fit(model, {**base, **settings})
            values = common.numbers(model, comp)
            ref = values["psnr"] if ref is None else ref
            label = "fp32 INR" if bits == 32 else f"{bits}-bit INR, {'QAT' if qat else 'after the fit'}"
            print(common.row(label, values) + f"  vs fp32 {values['psnr'] - ref:+.2f} dB", flush=True)


def study_permute(model: torch.nn.Module, base: dict[str, Any], args: argparse.Namespace) -> None:
    for bits in (32, 6):
        print(f"\n-- {bits}-bit INR, {args.steps} steps")
        for mode in ("none", "pca", "greedy"):
            t0 = time.perf_counter()
            comp, wall = common.fit(model, {**base, "steps": args.steps, "permute": mode, "inr_bits": bits, "qat": "auto"})
            extra = wall - comp.info["fit_seconds"] - comp.info["finetune_seconds"]
            print(common.row(f"permute {mode}", common.numbers(model, comp)) + f"  (+{extra:.1f} s outside the fit)", flush=True)
            del t0


def study_curve(model: torch.nn.Module, base: dict[str, Any], args: argparse.Namespace) -> None:
    comp, wall = common.fit(model, {**base, "steps": args.steps, "eval_every": max(1, args.steps // 40)})
    print(common.row(f"{args.steps} steps", common.numbers(model, comp)))
    curve = comp.info["curve"]
    print("step    seconds  train_loss  psnr (sample)")
    for s, sec, loss, psnr in zip(curve["step"], curve["seconds"], curve["train_loss"], curve["psnr"], strict=True):
        print(f"{s:6d} {sec:9.1f} {loss:11.4f} {psnr:8.2f}")
    if args.json:
        print(json.dumps(curve))


def study_grid(model: torch.nn.Module, base: dict[str, Any], args: argparse.Namespace) -> None:
    """The cartesian product of ``--grid`` (JSON: setting -> list of values), at ``--steps``."""
    import itertools

    grid = json.loads(args.grid)
    print(f"\n-- {args.steps} steps")
    for values in itertools.product(*grid.values()):
        change = dict(zip(grid, values, strict=True))
        comp, _ = common.fit(model, {**base, "steps": args.steps, **change})
        label = " ".join(f"{k}={v}" for k, v in change.items())
        print(common.row(label, common.numbers(model, comp)), flush=True)


STUDIES = {
    "grid": study_grid,
    "lr": study_lr,
    "batch": study_batch,
    "quant": study_quant,
    "permute": study_permute,
    "curve": study_curve,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument(
        "--model", default="fmnist", help="fmnist, lite0-large (its 3 largest weights), lite0 or smooth (synthetic)"
    )
    parser.add_argument("--set", default="{}", help="JSON settings added to the base recipe, e.g. '{\"lr\": 0.01}'")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--budgets", default="250,1000,4000", help="lr study: step budgets")
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03", help="lr study: learning rates")
    parser.add_argument("--omegas", default="3,5,10", help="quant study: omega0 values")
    parser.add_argument("--seconds", type=float, default=60.0, help="batch study: fit seconds per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: a shared, busy machine)")
    parser.add_argument("--grid", default="{}", help="grid study: JSON lists, e.g. '{\"lr\": [0.001, 0.003]}'")
    parser.add_argument("--json", action="store_true", help="curve study: also print the curve as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = common.load(args.model)
    base = {**BASE, **json.loads(args.set)}
    print(f"{args.study} study on {args.model} ({torch.get_num_threads()} thread(s)); base settings {base}")
    STUDIES[args.study](model, base, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
