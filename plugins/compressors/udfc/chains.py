"""Where UDFC can compensate: conv/linear → BatchNorm → activation → one dense conv/linear.

The graph walk is the quantize plugin's BatchNorm analysis (``bn_successors``, the chain from a
layer's input up to its BatchNorm; to be the public ``b2s_bench.calibration`` face); here only the
checks UDFC adds: every tensor on the chain has one reader (a residual add or a second branch
would see the damaged channel uncompensated, so such chains are skipped and recorded), the next
layer is dense (groups 1: a depthwise conv cannot merge two channels), and its input is the
BatchNorm's channels (or, after a pooling and a flatten, a whole number of positions of each).
timm's BatchNormAct2d (a BatchNorm with its activation inside) counts as BatchNorm + activation
(the shared walk reads its ``act``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

from ..quantize.calibration import _chain_to_bn, _layer_nodes, _shape_only, _trace, bn_successors

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


def _readers(node: fx.Node) -> list[fx.Node]:
    return [u for u in node.users if not _shape_only(u)]


def _sole_path(start: fx.Node, bn_node: fx.Node) -> bool:
    """Every node from the BatchNorm down to ``start``'s input has exactly one reader."""
    cur = start.args[0] if start.args else None
    below = start
    while isinstance(cur, fx.Node):
        if _readers(cur) != [below]:
            return False
        if cur is bn_node:
            return True
        below, cur = cur, (cur.args[0] if cur.args else None)
    return False


def find_chains(model: nn.Module, layers: Sequence[str]) -> tuple[dict[str, Chain], dict[str, str], list[str]]:
    """(chains by layer l, why each other layer in ``layers`` has none, the layers in call order).

    The call order is the traced graph's (topological), so a layer's compensation reaches its next
    layer before that one is compressed; an untraceable model keeps ``layers``' order and has no chains.
    """
    gm, why = _trace(model)
    if gm is None:
        return {}, {n: why for n in layers}, list(layers)
    modules = dict(gm.named_modules())
    nodes = _layer_nodes(gm, layers)
    order = [str(n.target) for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in nodes]
    order = list(dict.fromkeys(order)) + [n for n in layers if n not in order]
    followed = {name: key.rpartition(".")[0] for name, key in bn_successors(model, list(layers)).items()}
    by_bn: dict[str, str] = {}
    for name, bn in followed.items():
        if len(nodes[name]) == 1 and _readers(nodes[name][0]) and str(_readers(nodes[name][0])[0].target) == bn:
            by_bn[bn] = name
    chains: dict[str, Chain] = {}
    skipped: dict[str, str] = {}
    for name in layers:
        if name not in followed:
            skipped[name] = "its output does not go to a BatchNorm alone"
    for nxt in layers:
        if len(nodes[nxt]) != 1:
            continue
        found = _chain_to_bn(nodes[nxt][0], modules)
        if isinstance(found, str):
            continue
        bn_node, act, flattened = found
        bn_name = str(bn_node.target) if bn_node.op == "call_module" else ""
        layer = by_bn.get(bn_name)
        if layer is None or layer in chains:
            continue
        bn_module = model.get_submodule(bn_name)
        why_not = _fits(model, layer, bn_module, nxt, flattened)
        if isinstance(why_not, str):
            skipped[layer] = why_not
        elif not _sole_path(nodes[nxt][0], bn_node):
            skipped[layer] = f"the output of {bn_name} is read by more than {nxt} (a residual or a branch)"
        else:
            chains[layer] = Chain(layer, bn_name, act, nxt, why_not, int(bn_module.get_buffer("running_mean").numel()))
    for name in layers:
        if name not in chains and name not in skipped:
            skipped[name] = "its BatchNorm does not feed one conv or linear layer through an activation alone"
    return chains, skipped, order


def _fits(model: nn.Module, layer: str, bn: nn.Module, nxt: str, flattened: bool) -> int | str:
    """The positions per channel of ``nxt``'s input, or why the chain is not compensable."""
    channels = int(bn.running_mean.numel()) if isinstance(bn.running_mean, torch.Tensor) else -1
    here, there = model.get_submodule(layer), model.get_submodule(nxt)
    out = here.out_channels if isinstance(here, nn.modules.conv._ConvNd) else getattr(here, "out_features", -1)
    if out != channels:
        return f"{layer} has {out} outputs, its BatchNorm {channels}"
    if isinstance(there, nn.modules.conv._ConvNd):
        if there.groups != 1 or there.transposed:
            return f"{nxt} is a grouped or transposed conv (groups {there.groups}): it cannot merge channels"
        return 1 if there.in_channels == channels else f"{nxt} reads {there.in_channels} channels, not {channels}"
    if isinstance(there, nn.Linear):
        if there.in_features == channels:
            return 1
        if flattened and there.in_features % channels == 0:
            return there.in_features // channels
        return f"{nxt} reads {there.in_features} features from {channels} channels"
    return f"{nxt} is not a conv or linear layer"
