"""Benchmark: compress time of the calibration methods GPTQ, SparseGPT and Wanda against their
data-free counterparts (quantize's round-to-nearest on the same grid, prune's per-layer magnitude
pruning), as ratios, in one process; and each one's output error on held-out inputs.

    python benchmarks/bench_llm_methods.py                 # the zoo Fashion-MNIST CNN (shipped weights), CPU
    python benchmarks/bench_llm_methods.py --model vit     # a randomly initialised ViT-Tiny (timm), 12 blocks
    python benchmarks/bench_llm_methods.py --samples 64 --repeats 5 --device cuda

One CPU thread by default: on a shared two-core machine two threads made ``cholesky_inverse`` of a
3136² Hessian 25 times slower (8.6 s against 0.36 s).

Calibration and held-out inputs are standard-normal images of the model's input shape (no dataset is
read: the timing does not depend on what the images show, and the output errors compare the methods
on the same inputs). Each time is the median of ``--repeats`` runs of ``compress()``; the ratio is to
the data-free method with the same storage (4-bit asymmetric groups of 128; 50 % per layer or 2:4).
The output error is ||f(x) − f̂(x)|| / ||f(x)|| over the held-out inputs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch import nn

from b2s_bench import Context, build_config
from b2s_bench.plugins import load_plugins

#: (label, compressor, settings, the data-free baseline's label)
RUNS: list[tuple[str, str, dict[str, Any], str]] = [
    ("rtn 4-bit g128", "quantize", {"bits": 4, "granularity": "group", "group_size": 128, "symmetric": False}, ""),
    ("gptq 4-bit g128", "gptq", {}, "rtn 4-bit g128"),
    ("gptq 4-bit g128 act_order", "gptq", {"act_order": True}, "rtn 4-bit g128"),
    ("magnitude 50%", "prune", {"sparsity": 0.5, "scope": "layer"}, ""),
    ("sparsegpt 50%", "sparsegpt", {}, "magnitude 50%"),
    ("wanda 50%", "wanda", {}, "magnitude 50%"),
    ("sparsegpt 2:4", "sparsegpt", {"structure": "2:4"}, "magnitude 50%"),
    ("wanda 2:4", "wanda", {"structure": "2:4"}, "magnitude 50%"),
]

CALIBRATED = ("gptq", "sparsegpt", "wanda")


def model_and_shape(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    if name == "fmnist":
        from b2s_bench_plugins.sources import zoo

        recipe = zoo.RECIPES["fmnist-cnn"]
        model = zoo.architecture(recipe)
        model.load_state_dict(zoo.cached_weights(recipe))
        return model.eval(), (1, 28, 28)
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval(), (3, 224, 224)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("fmnist", "vit"), default="fmnist")
    parser.add_argument("--samples", type=int, default=None, help="calibration inputs (default: 128 fmnist, 16 vit)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: a shared, busy CPU runs fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples = args.samples or (128 if args.model == "fmnist" else 16)
    model, shape = model_and_shape(args.model)
    device = torch.device(args.device)
    model = model.to(device)
    gen = torch.Generator().manual_seed(0)
    calibration = torch.randn(samples, *shape, generator=gen)
    held_out = torch.randn(64 if args.model == "fmnist" else 8, *shape, generator=gen).to(device)
    with torch.no_grad():
        reference = model(held_out)
    plugins = load_plugins()
    seconds: dict[str, float] = {}
    print(f"{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters, {samples} calibration inputs, {device}")
    print(f"{'method':28s} {'compress s':>10s} {'x baseline':>10s} {'output err':>10s}")
    for label, name, settings, baseline in RUNS:
        spec = plugins.compressors.get(name)
        extra = {"calibration_samples": samples} if name in CALIBRATED else {}
        config = build_config(spec.config, {**settings, **extra}, owner=name)
        ctx = Context(device=device, calibration=lambda n: calibration[:n], input_shape=shape)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            comp = spec.compress(model, config, ctx)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        seconds[label] = statistics.median(times)
        with torch.no_grad():
            out = comp.module().to(device)(held_out)
        err = float((out - reference).norm() / reference.norm())
        ratio = f"{seconds[label] / seconds[baseline]:10.1f}" if baseline else f"{'1.0':>10s}"
        print(f"{label:28s} {seconds[label]:10.3f} {ratio} {err:10.4f}")


if __name__ == "__main__":
    main()
