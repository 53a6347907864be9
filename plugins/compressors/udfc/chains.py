"""Where UDFC can compensate: conv/linear → BatchNorm → activation → one dense conv/linear.

The graph analysis is the core's (:mod:`b2s_bench.calibration`): ``bn_successors`` says which
layers feed a BatchNorm alone, ``bn_input_models`` which BatchNorm (and activation, through
mean-preserving pooling and flattening) feeds each layer, and whether that layer is the BatchNorm's
only reader. UDFC adds its own conditions: the chain is exclusive (a residual add or a second
branch would see the damaged channel uncompensated, so such chains are skipped and recorded), the
next layer is dense (groups 1: a depthwise conv cannot merge two channels), and it comes after
layer l in the model's order (the compensation must reach it before it is compressed). timm's
BatchNormAct2d (a BatchNorm with its activation inside) counts as BatchNorm + activation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from b2s_bench.calibration import bn_input_models, bn_successors

__all__ = ["Chain", "find_chains"]


@dataclasses.dataclass(frozen=True)
class Chain:
    """Layer ``layer`` feeds BatchNorm ``bn``, activation ``act`` (None: none) and then only ``next``,
    whose input channel c is ``positions`` consecutive input features (1 for a conv)."""

    layer: str
    bn: str
    act: Callable[[torch.Tensor], torch.Tensor] | None
    next: str
    positions: int
    channels: int


def find_chains(model: nn.Module, layers: Sequence[str]) -> tuple[dict[str, Chain], dict[str, str]]:
    """(chains by layer l, why each other layer in ``layers`` heads none); ``layers`` in model order."""
    followed = {name: key.rpartition(".")[0] for name, key in bn_successors(model, list(layers)).items()}
    producer = {bn: name for name, bn in followed.items()}
    inputs, _ = bn_input_models(model, list(layers))
    chains: dict[str, Chain] = {}
    skipped = {name: "its output does not go to a BatchNorm alone" for name in layers if name not in followed}
    position = {name: i for i, name in enumerate(layers)}
    for nxt, found in inputs.items():
        layer = producer.get(found.bn)
        if layer is None or layer in chains:
            continue
        why_not = _fits(model, layer, nxt)
        if why_not:
            skipped[layer] = why_not
        elif not found.exclusive:
            skipped[layer] = f"the output of {found.bn} is read by more than {nxt} (a residual or a branch)"
        elif position[nxt] <= position[layer]:
            skipped[layer] = f"{nxt} comes before {layer} in the model's order"
        else:
            chains[layer] = Chain(layer, found.bn, found.act, nxt, found.repeat, int(found.beta.numel()))
    for name in layers:
        if name not in chains and name not in skipped:
            skipped[name] = "its BatchNorm does not feed one conv or linear layer through an activation"
    return chains, skipped


def _fits(model: nn.Module, layer: str, nxt: str) -> str:
    """Why the chain ``layer`` → ``nxt`` cannot be compensated ("" if it can)."""
    here, there = model.get_submodule(layer), model.get_submodule(nxt)
    if isinstance(here, nn.modules.conv._ConvNd) and here.transposed:
        return f"{layer} is a transposed conv"
    if isinstance(there, nn.modules.conv._ConvNd):
        if there.groups != 1 or there.transposed:
            return f"{nxt} is a grouped or transposed conv (groups {there.groups}): it cannot merge channels"
        return ""
    if isinstance(there, nn.Linear):
        return ""
    return f"{nxt} is not a conv or linear layer"
