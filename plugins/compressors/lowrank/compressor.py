"""The compressor: every targeted conv and linear weight decomposed on its own."""

from __future__ import annotations

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, Target, weight_layers

from .codes import DenseCode
from .config import LowRankConfig
from .decompose import compress_weight

__all__ = ["compress", "compress_tensor", "target"]


def compress(model: nn.Module, config: LowRankConfig, ctx: Context) -> Compressed:
    """Decompose the model's conv and linear weights (grouped and depthwise convs stay raw)."""
    layers = weight_layers(model, min_numel=config.min_numel, skip_first=config.skip_first, skip_last=config.skip_last)
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
    return Compressed.from_codes(
        model, codes, info={"ranks": ranks, "factored_layers": factored, "dense_layers": len(codes) - factored}
    )


def target(config: LowRankConfig, compressed: Compressed, model: nn.Module) -> Target | None:
    """With ``target_ratio``: the decomposed layers' ratio reached (rank 1 of a small layer, or a layer
    kept dense because factoring costs more, can fall short). A ``rank`` or ``energy`` rule has no
    ratio to reach: a result that factors no layer covers no weight, which the core catches."""
    if config.target_ratio is None:
        return None
    return Target("layer ratio", float(config.target_ratio), compressed.size().ratio_layers, 0.05, "x")


def compress_tensor(name: str, tensor: torch.Tensor, config: LowRankConfig, ctx: Context) -> Code:
    """One tensor (e.g. a payload of an earlier stage): 0-D and 1-D tensors stay dense."""
    return compress_weight(tensor, config)
