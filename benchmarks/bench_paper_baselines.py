"""Paper baselines on ImageNet-sized models: compress time (and, for the synthetic-data methods, the
synthesis time) next to ``quantize`` in the same process.

    python benchmarks/bench_paper_baselines.py [--device cpu|cuda] [--samples 4] [--iterations 3]
        [--only dsg udfc] [--model EfficientNet-Lite0 ResNet-18]

Models: random-init EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) and torchvision ResNet-18
(times do not depend on the weights; a random-init BN has running mean 0 and variance 1). Sample
and step counts are small on a CPU and printed with every row; the papers' are 64 samples and 500
steps, so a full synthesis costs about (64/samples)·(500/iterations) times the printed one.

UDFC (``udfc_rows``, re-implemented from the paper): W6 (the operating point Big2Small's table
compares it at) and 30 % of the prunable channels with W6 (the paper's ResNet-34 headline setting),
next to quantize at W6 (per-channel symmetric min/max, the grid UDFC stores); with what it did (chains
compensated, channels pruned) and the whole-model ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from b2s_bench import Context, build_config
from b2s_bench.calibration import ZEROQ, synthesize
from b2s_bench.plugins import load_plugins


def models() -> dict[str, Callable[[], nn.Module]]:
    """The benchmark models, random-init, by name (built on demand)."""
    import timm
    import torchvision

    return {
        "EfficientNet-Lite0": lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False),
        "ResNet-18": lambda: torchvision.models.resnet18(weights=None),
    }


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _dsg_row(name: str, model: nn.Module, device: torch.device, samples: int, iterations: int, bits: int) -> dict[str, Any]:
    plugins = load_plugins()
    dsg, quantize = plugins.compressors.get("dsg"), plugins.compressors.get("quantize")
    assert dsg.calibration_inputs is not None
    ctx = Context(device=device, input_shape=(3, 224, 224), num_classes=1000)
    qcfg = build_config(quantize.config, {"bits": bits, "granularity": "channel", "symmetric": False}, owner="quantize")
    synthesis = {"samples": samples, "batch_size": samples, "iterations": iterations}
    dcfg = build_config(dsg.config, {"bits": bits, **synthesis}, owner="dsg")
    quantize.compress(model, qcfg, ctx)  # warm-up: the first call pays for allocations
    q, q_s = _timed(partial(quantize.compress, model, qcfg, ctx))
    d, d_s = _timed(partial(dsg.compress, model, dcfg, ctx))
    images, dsg_syn = _timed(partial(dsg.calibration_inputs, model, dcfg, ctx))
    zero, zq_syn = _timed(partial(synthesize, model, dataclasses.replace(ZEROQ, **synthesis), ctx))
    return {
        "model": name,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "quantize_s": q_s,
        "dsg_s": d_s,
        "dsg_synthesis_s": dsg_syn,
        "zeroq_synthesis_s": zq_syn,
        "samples": int(images.shape[0]),
        "iterations": iterations,
        "same_weights_as_quantize": all(torch.equal(d.codes[k].decode(), q.codes[k].decode()) for k in q.codes),
        "bits_ratio": d.size().total_bits / q.size().total_bits,
        "zeroq_bn_loss": (zero.bn_loss_start, zero.bn_loss_end),
    }


def dsg_rows(device: torch.device, samples: int = 4, iterations: int = 3, bits: int = 4) -> list[dict[str, Any]]:
    """DSG against quantize (the same per-channel affine min/max grid) on each model: compress seconds,
    and the seconds to synthesize ``samples`` images in ``iterations`` steps with DSG's terms
    (``calibration_inputs``) and with ZeroQ's (what an activations stage synthesizes otherwise)."""
    return [_dsg_row(name, build().to(device).eval(), device, samples, iterations, bits) for name, build in models().items()]


def udfc_rows(device: torch.device, names: list[str] | None = None) -> list[dict[str, Any]]:
    """UDFC at W6 and at 30 % channels + W6 against quantize at W6 on each model: compress seconds,
    whole-model ratio, chains compensated and channels pruned."""
    plugins = load_plugins()
    quantize, udfc = plugins.compressors.get("quantize"), plugins.compressors.get("udfc")
    ctx = Context(device=device, input_shape=(3, 224, 224), num_classes=1000)
    runs = [
        (quantize, {"bits": 6}),
        (udfc, {"bits": 6}),
        (udfc, {"bits": 6, "sparsity": 0.3}),
    ]
    rows = []
    for name, build in models().items():
        if names and name not in names:
            continue
        model = build().to(device).eval()
        quantize.compress(model, build_config(quantize.config, {"bits": 6}, owner="quantize"), ctx)  # warm-up
        for spec, settings in runs:
            config = build_config(spec.config, settings, owner=spec.name)
            comp, seconds = _timed(partial(spec.compress, model, config, ctx))  # neither compressor changes the model
            info = comp.info
            rows.append(
                {
                    "model": name,
                    "compressor": spec.name,
                    "settings": settings,
                    "seconds": seconds,
                    "ratio": comp.size().ratio_model,
                    "chains": len(info.get("compensated", {})) if spec.name == "udfc" else None,
                    "pruned": sum(info.get("pruned_channels", {}).values()) if spec.name == "udfc" else None,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=["dsg", "udfc"], default=["dsg", "udfc"])
    parser.add_argument("--model", nargs="*", default=None, help="UDFC rows: these models only")
    args = parser.parse_args()
    device = torch.device(args.device)
    if "udfc" in args.only:
        print(f"UDFC on {device}, {torch.get_num_threads()} threads; quantize: W6 per-channel symmetric min/max")
        print(f"{'model':20s} {'compressor':10s} {'settings':30s} {'seconds':>8s} {'ratio':>6s}  what it did")
        for r in udfc_rows(device, args.model):
            did = f"{r['chains']} chains compensated, {r['pruned']} channels pruned" if r["compressor"] == "udfc" else ""
            print(f"{r['model']:20s} {r['compressor']:10s} {str(r['settings']):30s} {r['seconds']:8.2f} {r['ratio']:6.2f}  {did}")
    if "dsg" not in args.only:
        return
    print(f"on {device}, {torch.get_num_threads()} threads; W4 per-channel affine min/max")
    print(f"synthesis (DSG and ZeroQ alike): {args.samples} samples x {args.iterations} steps at 224 x 224")
    print(
        f"{'model':20s} {'params M':>8s} {'quantize s':>10s} {'dsg s':>7s} {'DSG synth s':>11s} {'ZeroQ synth s':>13s} "
        f"{'same W':>6s} {'bits dsg/q':>10s}"
    )
    for r in dsg_rows(device, args.samples, args.iterations):
        print(
            f"{r['model']:20s} {r['params_M']:8.2f} {r['quantize_s']:10.3f} {r['dsg_s']:7.3f} {r['dsg_synthesis_s']:11.2f} "
            f"{r['zeroq_synthesis_s']:13.2f} {str(r['same_weights_as_quantize']):>6s} {r['bits_ratio']:10.4f}"
        )


if __name__ == "__main__":
    main()
