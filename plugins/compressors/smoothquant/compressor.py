"""``smoothquant`` on a model: measure each layer's input maxima, smooth the norm-fed groups, quantize the
weights to W8 and the layer inputs to A8 (static ranges or per-token quantizers, both the core's: in the
artifact, rebuilt on load)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context
from b2s_bench.calibration import BlockStep, calibrate_blocks
from b2s_bench.metrics import REPARAMETRIZED

from ..awq.compressor import calibration_setup, compressed_from, working_state
from ..awq.fold import divide_rows, find_folds, prev_keys, scale_inputs, weight_of
from ..quantize.config import QuantizeConfig
from ..quantize.rounding import quantize_tensor
from .config import SmoothQuantConfig
from .smoothing import smoothing_scale, static_range, weight_maxima

__all__ = ["compress", "smooth", "Smoothed"]


@dataclasses.dataclass
class Smoothed:
    """A model's smoothed fp state and what it did.

    Attributes:
        state: the inference state with the smoothing folded in (fp32; before any quantization).
        peaks: max|X_j| per input channel of each layer's input in the smoothed model.
        groups: each smoothed group: its layers, its norm, max/median of max|X_j| before and after.
    """

    state: dict[str, torch.Tensor]
    peaks: dict[str, torch.Tensor]
    groups: list[dict[str, Any]]


@torch.no_grad()
def smooth(model: nn.Module, names: list[str], batches: list[torch.Tensor], config: SmoothQuantConfig, ctx: Context) -> Smoothed:
    """Measure the layers' input maxima on ``batches`` and fold s into the norm-fed groups (if ``smooth``)."""
    stats: dict[str, torch.Tensor] = {}

    def collect(step: BlockStep) -> None:  # smoothing is exact in fp: the dense model's maxima are the ones
        stats.update({n: s.max_abs.float().cpu() for n, s in step.stats.items() if s.max_abs is not None})

    calibrate_blocks(model, batches, collect, statistics=("max_abs",), device=ctx.device)
    state = working_state(model)
    peaks = {n: stats[n].clone() for n in names if n in stats}
    groups: list[dict[str, Any]] = []
    if not config.smooth:
        return Smoothed(state, peaks, groups)
    folds, _ = find_folds(model, names, batches[0][:4].to(ctx.device), ctx.generator(43))
    for fold in folds:
        if fold.kind != "norm" or fold.members[0] not in stats:
            continue
        assert fold.prev is not None
        act_max = stats[fold.members[0]]
        s = smoothing_scale(act_max, weight_maxima([weight_of(model.get_submodule(m)) for m in fold.members]), config.alpha)
        for m in fold.members:
            state[f"{m}.weight"] = scale_inputs(state[f"{m}.weight"], s)
            peaks[m] = act_max / s
        for key in prev_keys(model, fold.prev):
            state[key] = divide_rows(state[key], s)
        after = act_max / s
        groups.append(
            {
                "layers": list(fold.members),
                "norm": fold.prev,
                "range_ratio_before": float(act_max.max() / act_max.median().clamp(min=1e-12)),
                "range_ratio_after": float(after.max() / after.median().clamp(min=1e-12)),
            }
        )
    return Smoothed(state, peaks, groups)


@torch.no_grad()
def compress(model: nn.Module, config: SmoothQuantConfig, ctx: Context) -> Compressed:
    """SmoothQuant W8A8: smoothing folded into the norms, per-channel weights, per-tensor (or per-token) inputs."""
    keys, names, batches = calibration_setup(model, ctx, config.calibration_samples, config.batch_size, "smoothquant")
    done = smooth(model, names, batches, config, ctx)
    grid = QuantizeConfig(
        bits=config.weight_bits, granularity=config.weight_granularity, symmetric=True, scale_bits=config.scale_bits
    )
    codes: dict[str, Code] = {key: quantize_tensor(done.state[key], grid) for key in keys}
    info: dict[str, Any] = {
        "weight_bits": config.weight_bits,
        "activation_bits": config.activation_bits,
        "alpha": config.alpha,
        "calibration_samples": sum(int(b.shape[0]) for b in batches),
        "smoothed": done.groups,
        "activation_mode": config.activation_mode,
    }
    if done.groups:
        info[REPARAMETRIZED] = f"SmoothQuant migrated activation scales into the weights of {len(done.groups)} group(s)"
    reached = [n for n in names if n in done.peaks]
    if config.activation_mode == "dynamic":  # the core's per-token quantizers: stored in the artifact, rebuilt on load
        info["per_token_inputs"] = len(reached)
        return compressed_from(model, codes, done.state, info, token_activations=dict.fromkeys(reached, config.activation_bits))
    ranges = {n: static_range(float(done.peaks[n].max()), config.activation_bits) for n in reached}
    return compressed_from(model, codes, done.state, info, activations=ranges, activation_bits=config.activation_bits)
