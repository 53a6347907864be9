"""What suites/paper.yaml's Big2Small fits cost: floating-point operations per fit step, counted from
the INRs the budget rule gives each layer at the suite's settings (target ratio 1.5, one INR evaluation
per weight, 4 crops of 256 x 256 weights a step), and this machine's fp32 matmul rate for scale.

    python benchmarks/estimate_paper_cost.py

Every weight of an INR multiplies every coordinate it is evaluated at (the FiLM network, the hidden
layers, the output), so a forward pass costs 2 x (its parameters) operations per coordinate and a
step (forward and backward) about 6 x; a step evaluates min(N, 4 x 256 x 256) coordinates of a layer
of N weights. Random-init models: the budget depends on the shapes only.
"""

from __future__ import annotations

import math
import time

import timm
import torch
import torchvision
from b2s_bench_plugins.compressors.big2small.compressor import choose_width, make_arch
from b2s_bench_plugins.compressors.big2small.inr import param_count
from torch import nn

from b2s_bench import build_config, weight_layers
from b2s_bench.plugins import load_plugins

#: the suite's Big2Small settings (suites/paper.yaml, on a GPU)
SETTINGS = {"target_ratio": 1.5, "steps": 10000, "block": 1, "patch_rows": 256, "patch_cols": 256, "patches": 4}


def flops_per_step(model: nn.Module, inr_bits: int) -> tuple[int, float, int]:
    """(INRs fitted, operations of one fit step, steps) at the suite's settings."""
    spec = load_plugins().compressors.get("big2small")
    config = build_config(spec.config, {**SETTINGS, "inr_bits": inr_bits}, owner="big2small")
    total, fitted = 0.0, 0
    for layer in weight_layers(model).values():
        shape = tuple(layer.weight.shape)
        n = math.prod(shape)
        width = choose_width(shape, config) if n * 4 >= config.min_bytes else None
        if width is None:
            continue
        fitted += 1
        total += 6 * param_count(make_arch(shape, width, config)) * min(n, config.patches * config.patch_rows * config.patch_cols)
    return fitted, total, config.steps


def main() -> None:
    models = {
        "resnet18 (6-bit INR)": (torchvision.models.resnet18(), 6),
        "resnet50 (8-bit INR)": (torchvision.models.resnet50(), 8),
        "swin-t (6-bit INR)": (timm.create_model("swin_tiny_patch4_window7_224"), 6),
    }
    for name, (model, bits) in models.items():
        fitted, step, steps = flops_per_step(model, bits)
        print(f"{name}: {fitted} INRs, {step / 1e12:.2f} TFLOP a step, {step * steps / 1e15:.1f} PFLOP for {steps} steps")
    a = torch.randn(2048, 2048)
    a @ a
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    rate = 10 * 2 * 2048**3 / (time.perf_counter() - t0)
    print(f"this machine: fp32 matmul {rate / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
