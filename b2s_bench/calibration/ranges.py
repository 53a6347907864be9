"""Ranges for simulated activation quantization: each quantized layer's input range.

On data (:func:`activation_ranges`, synthetic or real inputs) or data-free from the BatchNorm before the
layer (:func:`bn_activation_ranges`: draws from the Gaussian model of its input, f(z), z ~ N(β, γ²)).
The range is the min/max of the values seen, or the shrink of it with the least fake-quantization MSE
(``mse``). The core applies the fake quantization (:func:`fake_quantize` is the same function); the
ranges are metadata and do not change the weights' storage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..compression.compressed import fake_quantize_per_token
from .graph import bn_input_models, run_hooked

__all__ = ["fake_quantize", "fake_quantize_per_token", "activation_ranges", "bn_activation_ranges"]


def fake_quantize(x: torch.Tensor, low: float, high: float, bits: int) -> torch.Tensor:
    """Affine fake quantization over [low, high], as the core's activation quantizer does it."""
    scale = max(high - low, 1e-12) / (2**bits - 1)
    return torch.clamp(torch.round((x - low) / scale), 0, 2**bits - 1) * scale + low


def _mse_range(sample: torch.Tensor, lo: float, hi: float, bits: int, grid: int) -> tuple[float, float]:
    """The shrink of [lo, hi] (toward 0, 50 factors down to 0.1) with the least fake-quantization MSE."""
    best = (float(((fake_quantize(sample, lo, hi, bits) - sample) ** 2).mean()), lo, hi)
    for alpha in torch.linspace(1.0, 0.1, grid)[1:].tolist():
        a, b = lo * alpha if lo < 0 else lo, hi * alpha if hi > 0 else hi
        err = float(((fake_quantize(sample, a, b, bits) - sample) ** 2).mean())
        if err < best[0]:
            best = (err, a, b)
    return best[1], best[2]


@torch.no_grad()
def activation_ranges(
    model: nn.Module,
    names: Sequence[str],
    batches: Iterable[torch.Tensor],
    device: torch.device,
    bits: int,
    method: str,
    generator: torch.Generator,
    keep: int = 1 << 16,
    grid: int = 50,
) -> dict[str, tuple[float, float]]:
    """(low, high) of each layer's input: min/max over the data, or the shrink of it with the least
    fake-quantization MSE on a random sample of ``keep`` values per layer."""
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    samples: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float().reshape(-1)
            lows[name] = min(lows.get(name, math.inf), float(x.min()))
            highs[name] = max(highs.get(name, -math.inf), float(x.max()))
            if method == "mse":
                idx = torch.randint(0, x.numel(), (min(keep, x.numel()),), generator=generator).to(x.device)
                samples[name].append(x[idx].cpu())

        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(make_hook(name)) for name in names]
    run_hooked(model, handles, batches, device)
    out = {}
    for name in names:
        if name not in lows:
            continue
        lo, hi = lows[name], highs[name]
        if method == "mse" and samples[name]:
            s = torch.cat(samples[name])
            if s.numel() > keep:
                s = s[torch.randperm(s.numel(), generator=generator)[:keep]]
            lo, hi = _mse_range(s, lo, hi, bits, grid)
        out[name] = (lo, hi if hi > lo else lo + 1e-8)
    return out


@torch.no_grad()
def bn_activation_ranges(
    model: nn.Module,
    names: Sequence[str],
    bits: int,
    method: str,
    generator: torch.Generator,
    keep: int = 1 << 16,
    grid: int = 50,
) -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
    """Data-free (low, high) of each layer's input from the BatchNorm statistics before it: ``keep``
    draws from its Gaussian model (spread evenly over the channels), then min/max or the MSE shrink.

    Returns (ranges, skipped): ``skipped`` says for each other layer why it has no BN model (its input
    is not BN (+ activation), e.g. the model's input or a residual sum).
    """
    found, skipped = bn_input_models(model, names)
    out = {}
    for name in names:
        if name not in found:
            continue
        m = found[name]
        draws = m.sample(max(1, keep // max(1, m.beta.numel())), generator).reshape(-1)
        lo, hi = float(draws.min()), float(draws.max())
        if method == "mse":
            lo, hi = _mse_range(draws, lo, hi, bits, grid)
        out[name] = (lo, hi if hi > lo else lo + 1e-8)
    return out, skipped
