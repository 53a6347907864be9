"""What AWQ and SmoothQuant read of each layer's input, in one calibration pass.

One forward pass with hooks over the calibration batches gives, per layer: the per-input-channel mean
|x| and max |x| over every token (a linear layer's rows, a convolution's positions) and a bounded sample
of the inputs themselves for the searches (``keep`` rows; for a convolution, whole inputs). The
statistics come from the dense model in one pass (the authors' code runs block by block on the model
scaled so far; folded scales leave those fp activations unchanged, only clipping moves them slightly).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from b2s_bench.calibration import run_hooked

__all__ = ["LayerInputs", "capture_inputs", "channel_dim", "as_rows"]


def channel_dim(layer: nn.Module) -> int:
    """The dimension of a layer's input that holds its input channels: 1 for a convolution, else the last."""
    return 1 if isinstance(layer, nn.modules.conv._ConvNd) else -1


def as_rows(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` as (tokens, channels), channels taken from ``dim``."""
    return x.movedim(dim, -1).reshape(-1, x.shape[dim])


@dataclasses.dataclass
class LayerInputs:
    """One layer's input, summarised.

    Attributes:
        mean_abs / max_abs: per input channel, over every token seen.
        sample: kept inputs: (rows, channels) for a linear layer, (n, C, ...) whole inputs for a convolution.
        tokens: tokens the statistics cover.
    """

    mean_abs: torch.Tensor
    max_abs: torch.Tensor
    sample: torch.Tensor
    tokens: int


@torch.no_grad()
def capture_inputs(
    model: nn.Module,
    names: Sequence[str],
    batches: Sequence[torch.Tensor],
    device: torch.device,
    keep: int,
    generator: torch.Generator,
) -> dict[str, LayerInputs]:
    """Each named layer's :class:`LayerInputs` over ``batches`` (kept on the CPU)."""
    sums: dict[str, torch.Tensor] = {}
    maxes: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(names, 0)
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    per_batch = max(1, math.ceil(keep / max(1, len(batches))))

    def make_hook(name: str, dim: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float()
            rows = as_rows(x, dim)
            total = rows.abs().sum(0).cpu()
            peak = rows.abs().amax(0).cpu()
            sums[name] = sums[name] + total if name in sums else total
            maxes[name] = torch.maximum(maxes[name], peak) if name in maxes else peak
            counts[name] += rows.shape[0]
            if dim == -1:
                pick = torch.randperm(rows.shape[0], generator=generator)[: min(per_batch, rows.shape[0])]
                kept[name].append(rows[pick.to(rows.device)].cpu())
            else:  # a convolution needs whole inputs: as many as hold ``per_batch`` positions
                positions = max(1, rows.shape[0] // x.shape[0])
                kept[name].append(x[: max(1, math.ceil(per_batch / positions))].cpu())

        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(make_hook(n, channel_dim(model.get_submodule(n)))) for n in names]
    run_hooked(model, handles, batches, device)
    out = {}
    for n in names:
        if n in sums:
            sample = torch.cat(kept[n])
            out[n] = LayerInputs(sums[n] / counts[n], maxes[n], sample[:keep] if sample.dim() == 2 else sample, counts[n])
    return out
