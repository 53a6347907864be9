"""Which tensors a compressor targets: the weights of conv and linear layers, in model order."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["weight_layers", "LAYER_TYPES"]

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def weight_layers(
    model: nn.Module,
    min_numel: int = 0,
    skip_first: bool = False,
    skip_last: bool = False,
    types: Iterable[type[nn.Module]] = LAYER_TYPES,
) -> dict[str, nn.Module]:
    """``{"layer.weight": layer}`` for conv/linear layers (subclasses included), in model order.

    Args:
        min_numel: skip weights with fewer elements.
        skip_first / skip_last: leave the first / last such layer alone (a common convention).
    """
    types = tuple(types)
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, types) and isinstance(getattr(m, "weight", None), nn.Parameter)]
    if skip_first and layers:
        layers = layers[1:]
    if skip_last and layers:
        layers = layers[:-1]
    return {f"{name}.weight": m for name, m in layers if _weight(m).numel() >= min_numel}


def _weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)  # the layers above are filtered on it
    return weight
