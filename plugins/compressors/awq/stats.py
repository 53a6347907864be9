"""What AWQ's searches read of a layer's input besides the core's statistics: a bounded sample of it.

The per-channel mean |x| and max |x| come from the core's block-by-block pass
(:func:`b2s_bench.calibration.calibrate_blocks`, statistics ``mean_abs`` / ``max_abs``); the scale and
clipping searches also need inputs to measure output errors on, and :func:`keep_samples` keeps up to
``keep`` of them per layer (random rows of a linear layer's input; for a convolution, whole inputs that
hold as many positions) from one more forward of the block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["keep_samples", "channel_dim", "as_rows"]


def channel_dim(layer: nn.Module) -> int:
    """The dimension of a layer's input that holds its input channels: 1 for a convolution, else the last."""
    return 1 if isinstance(layer, nn.modules.conv._ConvNd) else -1


def as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` as (tokens, channels), channels taken from ``dim``."""
    return x.movedim(dim, -1).reshape(-1, x.shape[dim])


@torch.no_grad()
def keep_samples(
    layers: Mapping[str, nn.Module], run: Callable[[], Any], batches: int, keep: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Up to ``keep`` input rows of each layer (whole inputs for a convolution) seen while ``run()`` runs
    ``batches`` batches, on the CPU: (rows, channels) for a linear layer, (n, C, ...) for a convolution."""
    per_batch = max(1, math.ceil(keep / max(1, batches)))
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in layers}

    def make_hook(name: str, dim: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float()
            if dim == -1:
                rows = as_rows(x, dim)
                pick = torch.randperm(rows.shape[0], generator=generator)[: min(per_batch, rows.shape[0])]
                kept[name].append(rows[pick.to(rows.device)].cpu())
            else:
                positions = max(1, x[0].numel() // x.shape[1])
                kept[name].append(x[: max(1, math.ceil(per_batch / positions))].cpu())

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n, channel_dim(m))) for n, m in layers.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, parts in kept.items():
        if parts:
            sample = torch.cat(parts)
            out[name] = sample[:keep] if sample.dim() == 2 else sample
    return out
