"""The compressor: unstructured magnitude pruning, globally or per layer (the closed form of
||M||₀ ≤ k), or whole channels through torch-pruning (:mod:`.structured`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, Target, weight_layers

from .codes import sparse_code
from .config import PruneConfig
from .structured import compress_channels

__all__ = ["magnitude_masks", "compress", "compress_tensor", "target", "CHANNEL_TOLERANCE"]

#: structured pruning removes a channel's inputs and outputs, so the weights removed are about
#: 1 − (1 − s)² ≥ s of those it prunes; layers it must leave (the classifier, coupled ones) pull the
#: share down. Less than half the asked sparsity in weights removed is short of the target.
CHANNEL_TOLERANCE = 0.5


def magnitude_masks(tensors: Mapping[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep-masks pruning the ``round(sparsity * N)`` smallest magnitudes, globally or per tensor.

    This is the same selection as ``torch.nn.utils.prune`` with L1Unstructured (``topk`` of the
    smallest), so the two give identical masks.
    """
    if scope == "layer":
        out = {}
        for key, w in tensors.items():
            flat = w.detach().abs().reshape(-1)
            k = round(sparsity * flat.numel())
            mask = torch.ones_like(flat, dtype=torch.bool)
            if k:
                mask[torch.topk(flat, k, largest=False).indices] = False
            out[key] = mask.reshape(w.shape)
        return out
    flat = torch.cat([w.detach().abs().reshape(-1) for w in tensors.values()])
    k = round(sparsity * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k:
        keep[torch.topk(flat, k, largest=False).indices] = False
    out, start = {}, 0
    for key, w in tensors.items():
        out[key] = keep[start : start + w.numel()].reshape(w.shape)
        start += w.numel()
    return out


def compress(model: nn.Module, config: PruneConfig, ctx: Context) -> Compressed:
    """Prune the model's conv and linear weights (or its channels, with ``method: channel``)."""
    if config.method == "channel":
        return compress_channels(model, config, ctx)
    layers = weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    weights = {k: state[k].detach().cpu() for k in layers}
    masks = magnitude_masks(weights, config.sparsity, config.scope)
    codes = {k: sparse_code(weights[k], masks[k], config.positions, config.index_bits_for(k)) for k in weights}
    return Compressed.from_codes(model, codes)


def target(config: PruneConfig, compressed: Compressed, model: nn.Module) -> Target:
    """The share of the conv/linear weights removed (structured: by the smaller shapes; unstructured:
    zeros among the pruned layers' weights) against the asked ``sparsity``."""
    if config.method == "channel":
        before = {k: m.get_parameter("weight").numel() for k, m in weight_layers(model).items()}
        after = sum(compressed.raw[k].numel() if k in compressed.raw else n for k, n in before.items())
        removed = 1.0 - after / max(sum(before.values()), 1)
        return Target("sparsity (weights removed)", config.sparsity, removed, CHANNEL_TOLERANCE, "%")
    decoded = compressed.state_dict()
    total = sum(decoded[k].numel() for k in compressed.codes)
    zeros = sum(int((decoded[k] == 0).sum()) for k in compressed.codes)
    return Target("sparsity", config.sparsity, zeros / total if total else 0.0, 0.05, "%")


def compress_tensor(name: str, tensor: torch.Tensor, config: PruneConfig, ctx: Context) -> Code:
    """Prune one tensor by magnitude (a later pipeline stage: ``scope`` is per tensor here)."""
    w = tensor.detach().cpu()
    mask = magnitude_masks({name: w}, config.sparsity, "layer")[name]
    return sparse_code(w, mask, config.positions, config.index_bits_for(name))
