"""The compressor: every targeted conv and linear weight decomposed on its own."""

from __future__ import annotations

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, weight_layers

from .codes import DenseCode
from .config import LowRankConfig
from .decompose import compress_weight

__all__ = ["compress", "compress_tensor"]


def compress(model: nn.Module, config: LowRankConfig, ctx: Context) -> Compressed:
    """Decompose the model's conv and linear weights (grouped and depthwise convs stay raw)."""
    layers = weight_layers(model, min_numel=config.min_numel, skip_first=config.skip_first,
                           skip_last=config.skip_last)
    layers = {k: m for k, m in layers.items() if getattr(m, "groups", 1) == 1}  # depthwise/grouped stay raw
    state = model.state_dict()
    progress = ctx.progress(len(layers), "lowrank")
    codes: dict[str, Code] = {}
    for key in layers:
        codes[key] = compress_weight(state[key], config)
        progress.update()
    progress.close()
    ranks = {k: c.stats().get("rank", "dense") for k, c in codes.items()}
    factored = sum(not isinstance(c, DenseCode) for c in codes.values())
    return Compressed.from_codes(model, codes, info={"ranks": ranks, "factored_layers": factored,
                                                     "dense_layers": len(codes) - factored})


def compress_tensor(name: str, tensor: torch.Tensor, config: LowRankConfig, ctx: Context) -> Code:
    """One tensor (e.g. a payload of an earlier stage): 0-D and 1-D tensors stay dense."""
    return compress_weight(tensor, config)
