"""``squant`` on a model: SQuant's codes for every targeted conv and linear weight, data-free.

``info["case"]`` records the terms of SQuant's objective over the quantized layers, in steps, for
SQuant's codes and for round-to-nearest on the same grid: the mean |summed error| of a kernel and
of an output channel, the largest of each and of one code's error, and the share of codes flipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, weight_layers

from ..quantize.codes import grid_range
from .config import SQuantConfig
from .rounding import CaseStats, case_stats, make_code, squant_codes, squant_tensor

__all__ = ["compress", "compress_tensor"]


def _summary(stats: list[CaseStats], flipped: int, numel: int) -> dict[str, Any]:
    kernels = sum(s.kernels for s in stats)
    channels = sum(s.channels for s in stats)
    return {
        "mean_kernel_ase": sum(s.kernel_ase for s in stats) / max(kernels, 1),
        "mean_channel_ase": sum(s.channel_ase for s in stats) / max(channels, 1),
        "max_kernel_ase": max((s.max_kernel_ase for s in stats), default=0.0),
        "max_channel_ase": max((s.max_channel_ase for s in stats), default=0.0),
        "max_error": max((s.max_error for s in stats), default=0.0),
        "flipped_share": flipped / max(numel, 1),
    }


def compress(model: nn.Module, config: SQuantConfig, ctx: Context) -> Compressed:
    """Quantize the model's conv and linear weights with SQuant (weights only, no data)."""
    layers = weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    qmin, qmax = grid_range(config.bits, config.symmetric)
    codes: dict[str, Code] = {}
    ours: list[CaseStats] = []
    nearest: list[CaseStats] = []
    flipped = numel = 0
    for key in layers:
        x, q, scale, zero = squant_codes(state[key], config)
        rtn = torch.clamp(torch.round(x), qmin, qmax)
        ours.append(case_stats(x, q))
        nearest.append(case_stats(x, rtn))
        flipped += int((q != rtn).sum())
        numel += q.numel()
        codes[key] = make_code(q, scale, zero, config, tuple(state[key].shape))
    info: dict[str, Any] = {
        "weight_bits": config.bits,
        "squant": config.levels,
        "data_track": "data-free",
        "case": {"squant": _summary(ours, flipped, numel), "round_to_nearest": _summary(nearest, 0, numel)},
    }
    return Compressed.from_codes(model, codes, info=info)


def compress_tensor(name: str, tensor: torch.Tensor, config: SQuantConfig, ctx: Context) -> Code:
    """SQuant on one tensor, as a later pipeline stage (a 1-D payload, such as pruning's kept values, is
    one kernel; see :func:`.rounding.kernel_view`)."""
    return squant_tensor(tensor, config)
