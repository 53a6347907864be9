"""What a plugin registers and what its compress receives.

A :class:`CompressorSpec` is what a plugin registers; its ``compress`` receives a :class:`Context` and
returns a :class:`~b2s_bench.compression.compressed.Compressed` model, whose tensors are
:class:`~b2s_bench.compression.codes.Code` s. :func:`weight_layers` names the tensors compressors
target: the weights of conv and linear layers, in model order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import nn

from .spec import CompressorSpec
from .tracks import FAMILIES, TRACKS

__all__ = ["TRACKS", "FAMILIES", "CompressorSpec", "Context", "Progress", "weight_layers", "LAYER_TYPES"]

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
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, types) and isinstance(getattr(m, "weight", None), nn.Parameter)
    ]
    if skip_first and layers:
        layers = layers[1:]
    if skip_last and layers:
        layers = layers[:-1]
    return {f"{name}.weight": m for name, m in layers if _weight(m).numel() >= min_numel}


def _weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)  # the layers above are filtered on it
    return weight


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...
    def set_postfix_str(self, s: str) -> Any: ...
    def close(self) -> Any: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclasses.dataclass
class Context:
    """What a compressor may use besides the model.

    The runner fills ``calibration`` and ``training`` only when the compressor's data track
    allows them, so a data-free method cannot see data by accident.
    """

    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    track: str = "data-free"
    input_shape: tuple[int, ...] | None = None  # one example, e.g. (3, 224, 224)
    num_classes: int | None = None
    #: the vocabulary of a model that reads token ids (a language model): its inputs are int64 ids in
    #: [0, input_vocab), so :meth:`example_input` draws those, and image-like synthesis does not apply
    input_vocab: int | None = None
    #: returns up to n unlabeled inputs (calibration track and up)
    calibration: Callable[[int], torch.Tensor] | None = None
    #: returns an iterable of (inputs, labels) batches from the training split (training track)
    training: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None
    #: builds another model by its source name (e.g. a distillation student); weights are not loaded
    build_model: Callable[[str], nn.Module] | None = None
    progress: Callable[[int, str], Progress] = dataclasses.field(default=lambda total, desc: _NoProgress())
    log: Callable[[str], None] = dataclasses.field(default=lambda msg: None)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """``batch`` seeded inputs: Gaussian floats, or int64 token ids of a model with ``input_vocab``."""
        if self.input_shape is None:
            raise ValueError("this model has no known input shape")
        if self.input_vocab is not None:
            shape = (batch, *self.input_shape)
            return torch.randint(0, self.input_vocab, shape, generator=self.generator(7)).to(self.device)
        return torch.randn(batch, *self.input_shape, generator=self.generator(7)).to(self.device)
