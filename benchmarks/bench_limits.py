"""The rate–distortion limits' cost against a cell's own time, at 4, 8 and 32 bits per weight.

For EfficientNet-Lite0 (``timm`` ``tf_efficientnet_lite0``, random init) and ResNet-50
(``torchvision`` ``resnet50``, random init: the tensor set of the shipped model), in one process:
each setting is a quantize cell (per-channel round-to-nearest at 4 and 8 bits; at 32 bits an fp32
copy, what an identity cell stores) whose time is its compression plus one plain evaluation pass
(``--images`` random 224 x 224 images, batch 32); against it, ``Evaluation.limits()`` of the cell.
The weight structure (an SVD per tensor) describes the original tensors, the same in every cell of
a model, and is computed once per model and cached: the first cell of a model pays it ("structure,
once"), every later cell reads it. Printed: seconds of each part and the ratio limits / (compress
+ evaluate), for a later cell and for the first (limits + structure). Times are CPU seconds of
this process (``time.process_time``) on one thread, so that other work on a shared machine does not
move the ratios; on an idle machine wall and CPU time agree.

    .venv/bin/python benchmarks/bench_limits.py [--images 64] [--threads 1]
    .venv/bin/python benchmarks/bench_limits.py --records RUN_DIR [RUN_DIR ...]

``--records``: the share measured by real cells instead, per model, from finished run folders (each
record's ``timings.limits`` against its ``timings.total``): the goal's own terms, on the shipped models
(``b2s-bench run`` for EfficientNet-Lite0 and the CNN, ``run segmentation`` for the UNet, ``run lm``
for the language model).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from b2s_bench import Compressed, Context, StoredTensorCode, build_config
from b2s_bench.fitting import limits as rd
from b2s_bench.metrics import Evaluation
from b2s_bench.sources import LoadedModel


def lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()


def resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None).eval()


def compress(model: nn.Module, bits: int) -> Compressed:
    """A quantize cell's codes at ``bits``; at 32 bits every conv/linear weight stored as it is."""
    from b2s_bench_plugins.compressors import quantize

    if bits == 32:
        codes = {k: StoredTensorCode(p.detach().clone()) for k, p in model.named_parameters() if p.dim() > 1}
        return Compressed.from_codes(model, codes)
    config = build_config(quantize.SPEC.config, {"bits": bits, "granularity": "channel"})
    return quantize.SPEC.compress(model, config, Context())


@torch.inference_mode()
def evaluate(model: nn.Module, images: int) -> float:
    """Seconds of one forward pass over ``images`` random images, batch 32."""
    x = torch.randn(images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    t0 = time.process_time()
    for batch in x.split(32):
        model(batch)
    return time.process_time() - t0


def bench(name: str, build: Callable[[], nn.Module], images: int) -> None:
    import copy

    dense = build()
    params = sum(p.numel() for p in dense.parameters())
    baseline = LoadedModel(dense, (3, 224, 224), 1000, "random init")
    eval_s = evaluate(dense, images)
    print(f"{name}: {params / 1e6:.1f} M parameters; evaluation pass over {images} images {eval_s:.2f} s")
    structure_s = None
    for bits in (4, 8, 32):
        t0 = time.process_time()
        compressed = compress(copy.deepcopy(dense), bits)
        compress_s = time.process_time() - t0
        ev = Evaluation(
            dense, baseline, compressed, None, torch.device("cpu"), 32, lambda: (torch.empty(0), None), {"compress": compress_s}
        )
        if structure_s is None:  # the first cell of the model: the structure, once
            t0 = time.process_time()
            for _, w, _ in ev.coded_pairs:
                rd.structure_of(w)
            structure_s = time.process_time() - t0
        t0 = time.process_time()
        model = ev.limits()["model"]
        limits_s = time.process_time() - t0
        cell = compress_s + eval_s
        gap = "n/a" if model["gap_db"] is None else f"{model['gap_db']:+.2f} dB"
        # how many evaluated images make the limits 5 % of a cell (real suites evaluate thousands)
        five = (limits_s / 0.05 - compress_s) / (eval_s / images)
        print(
            f"  {bits:2d} bits ({model['rate']:5.2f} b/coded w, gap {gap:>9s}): compress {compress_s:5.2f} s, "
            f"limits {limits_s:5.3f} s = {100 * limits_s / cell:5.2f} % of compress+evaluate "
            f"(first cell, + structure {structure_s:.2f} s: {100 * (limits_s + structure_s) / cell:5.2f} %); "
            f"under 5 % from {max(five, 0):.0f} images"
        )


def from_records(runs: list[Path]) -> None:
    """The limits' share of real cells, per model, from run folders' records (``timings.limits`` over
    ``timings.total``, both measured by the cell): all cells together and the worst cell; goal < 5 %."""
    print("| run | model | cells | limits / cell time | worst cell | goal | the runner's checks / cell time |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        per: dict[str, list[tuple[float, float, str, float]]] = {}
        for path in sorted((run / "cells").glob("*.json")):
            rec = json.loads(path.read_text())
            timings = rec.get("timings") or {}
            if "limits" in timings and timings.get("total"):
                model = (rec.get("model") or {}).get("name", "?")
                per.setdefault(model, []).append(
                    (float(timings["limits"]), float(timings["total"]), rec.get("label", ""), float(timings.get("checks") or 0.0))
                )
        for model, cells in per.items():
            limits, total = sum(c[0] for c in cells), sum(c[1] for c in cells)
            worst = max(cells, key=lambda c: c[0] / c[1])
            print(
                f"| {run.name} | {model} | {len(cells)} | {100 * limits / total:.1f} % of {total:.1f} s | "
                f"{100 * worst[0] / worst[1]:.1f} % ({worst[2][:40]}, {worst[0]:.3f} of {worst[1]:.2f} s) | < 5 % | "
                f"{100 * sum(c[3] for c in cells) / total:.1f} % |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images of the evaluation pass")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--records",
        type=Path,
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="instead: the share in finished run folders' records, per model (e.g. a run of each suite of a shipped model)",
    )
    args = parser.parse_args()
    if args.records:
        from_records(args.records)
        return
    torch.set_num_threads(args.threads)
    bench("EfficientNet-Lite0", lite0, args.images)
    bench("ResNet-50", resnet50, args.images)


if __name__ == "__main__":
    main()
