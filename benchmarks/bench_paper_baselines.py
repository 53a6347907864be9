"""Compress time of the paper baselines against ``quantize`` at the same bits, in the same process.

    python benchmarks/bench_paper_baselines.py [--repeats 3] [--threads 1] [--only NAME ...]

One row per (baseline, model): the baseline's compress seconds (best of ``--repeats``) and its ratio
to ``quantize``'s on the same model, at the same bits and on the same grid where the baseline has one
(SQuant: per output channel, affine, min/max; the ratio is then what the flips cost over
round-to-nearest). Models, random init, nothing downloaded: EfficientNet-Lite0
(``timm.create_model("tf_efficientnet_lite0")``) and ResNet-18 (``torchvision.models.resnet18()``).
To add a baseline, add a row to ``RUNS``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from b2s_bench import Context
from b2s_bench.config import build_config
from b2s_bench.plugins import load_plugins

#: (baseline, its settings, quantize's settings at the same bits)
RUNS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("squant", {"bits": 4}, {"bits": 4, "granularity": "channel", "symmetric": False}),
    ("squant", {"bits": 8}, {"bits": 8, "granularity": "channel", "symmetric": False}),
    # DSG's weights are quantize's grid: its cost is the synthesis (benchmarks/bench_synthesis.py)
    ("dsg", {"bits": 4}, {"bits": 4, "granularity": "channel", "symmetric": False}),
    # UDFC (re-implemented from the paper) at W6, Big2Small's operating point for it, and with 30 % of the
    # prunable channels removed (the paper's ResNet-34 headline); quantize at W6 per channel, symmetric
    ("udfc", {"bits": 6}, {"bits": 6}),
    ("udfc", {"bits": 6, "sparsity": 0.3}, {"bits": 6}),
]


def riem_rows(steps: int = 1) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """RieM at its defaults (4-bit states, 6 branches of width 14, d per layer from target ratio 8) but
    ``steps`` fitting steps (its default is 2,000, the authors' 10^6): a timing, not a fit. Its time is
    about ``steps`` forward and backward passes and three no-grad passes (the start's centring, the
    final error, each code's decode) over every layer's R × C × 14 × 6 sigmoid block; quantize at 4
    bits per channel (about the same size) is the reference. Minutes on a CPU: ``--only riem --repeats 1``."""
    return [("riem", {"steps": steps}, {"bits": 4, "granularity": "channel"})]


RUNS += riem_rows()


def lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18()


MODELS: dict[str, Callable[[], nn.Module]] = {"EfficientNet-Lite0": lite0, "ResNet-18": resnet18}


def seconds(name: str, settings: dict[str, Any], model: nn.Module, ctx: Context, repeats: int) -> float:
    """The best of ``repeats`` compress times (each on a fresh copy of the model)."""
    spec = load_plugins().compressors.get(name)
    config = build_config(spec.config, settings, owner=name)
    best = float("inf")
    for _ in range(repeats):
        work = copy.deepcopy(model)
        t0 = time.perf_counter()
        spec.compress(work, config, ctx)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="baseline names to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ctx = Context(device=torch.device("cpu"), input_shape=(3, 224, 224), num_classes=1000)
    print(f"CPU, {torch.get_num_threads()} thread(s), best of {args.repeats}; ratio = baseline s / quantize s")
    print(f"{'compressor':30s} {'model':20s} {'compress s':>10s} {'quantize s':>10s} {'ratio':>6s}")
    for model_name, build in MODELS.items():
        model = build().eval()
        for name, settings, reference in RUNS:
            if args.only and name not in args.only:
                continue
            ours = seconds(name, settings, model, ctx, args.repeats)
            theirs = seconds("quantize", reference, model, ctx, args.repeats)
            label = f"{name} {settings}"
            print(f"{label:30s} {model_name:20s} {ours:10.3f} {theirs:10.3f} {ours / theirs:6.2f}", flush=True)


if __name__ == "__main__":
    main()
