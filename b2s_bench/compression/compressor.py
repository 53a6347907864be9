"""What a plugin registers and what its compress receives.

A :class:`CompressorSpec` is what a plugin registers; its ``compress`` receives a :class:`Context` and
returns a :class:`~b2s_bench.compression.compressed.Compressed` model, whose tensors are
:class:`~b2s_bench.compression.codes.Code` s. :func:`weight_layers` names the tensors compressors
target: the weights of conv and linear layers, in model order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from .tracks import FAMILIES, TRACKS

if TYPE_CHECKING:
    from .codes import Code
    from .compressed import Compressed
    from .coverage import Target

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
        if self.input_shape is None:
            raise ValueError("this model has no known input shape")
        return torch.randn(batch, *self.input_shape, generator=self.generator(7)).to(self.device)


@dataclasses.dataclass(frozen=True)
class CompressorSpec:
    """What a plugin registers for one compressor.

    Attributes:
        name: unique name used in suites (``quantize``).
        family: one of FAMILIES.
        track: the data track (one of TRACKS), or a function of the config for methods whose
            track depends on a setting.
        config: a frozen dataclass type that validates itself in ``__post_init__``.
        compress: ``compress(model, config, ctx) -> Compressed``.
        version: bump it whenever results change; it is part of every cell id.
        compress_tensor: ``compress_tensor(name, tensor, config, ctx) -> Code``, for compressors
            that can act on a single tensor; needed to be a later stage of a pipeline.
        recode: ``recode(name, code, config, ctx) -> Code``, for a later pipeline stage that stores an
            earlier stage's codes differently without changing what they decode to (entropy coding of
            their :meth:`~b2s_bench.compression.codes.Code.symbols`); it returns ``code`` itself when
            it has nothing to do. A spec with ``recode`` may be a later stage without ``compress_tensor``.
        codes: the Code classes this compressor produces (to load its artifacts).
        identity: settings that must reproduce the dense model (None if the family has none).
        description: one line for ``b2s-bench ls``.
        uses_gpu: whether it benefits from a GPU (shown by ``validate``).
        quick: settings that make a run take seconds on a tiny model (used by the contract test
            ``b2s_bench.testing.check_compressor``), e.g. few fitting steps.
        cost: ``cost(config) -> float``, a cell's expected time in units of one rounding pass over
            the model (a fit of 5,000 steps might say 100). Only the order in which a run starts
            its cells depends on it: the longest first, so that workers finish together.
        target: ``target(config, compressed, model) -> Target | None``: what the config asked
            (a sparsity, a ratio, ...) against what ``compressed`` achieved on the dense ``model``;
            a cell that misses it beyond its tolerance is ``short-of-target`` (:mod:`b2s_bench.compression.coverage`).
        defaults_source: where the defaults of ``config`` come from, one line for readers of a comparison
            ("the paper: SQuant, Guo et al. ICLR 2022, Sec. 5", "the authors' code", "ours"): with it,
            a record says whether a baseline ran at its authors' operating point.
        calibration_inputs: ``calibration_inputs(model, config, ctx) -> Tensor``, the inputs this method
            calibrates activation ranges on, made from the dense ``model`` (DSG's diverse synthetic
            samples): a suite's ``activations`` stage with ``ranges: synthetic`` uses them for a pipeline
            whose first stage offers them, and synthesizes ZeroQ's distilled data otherwise.
    """

    name: str
    family: str
    track: str | Callable[[Any], str]
    config: type
    compress: Callable[[nn.Module, Any, Context], Compressed]
    version: str = "1"
    compress_tensor: Callable[[str, torch.Tensor, Any, Context], Code] | None = None
    recode: Callable[[str, Code, Any, Context], Code] | None = None
    codes: tuple[type[Code], ...] = ()
    identity: Mapping[str, Any] | None = None
    description: str = ""
    uses_gpu: bool = False
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost: Callable[[Any], float] | None = None
    target: Callable[[Any, Compressed, nn.Module], Target | None] | None = None
    defaults_source: str = ""
    calibration_inputs: Callable[[nn.Module, Any, Context], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"compressor {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if isinstance(self.track, str) and self.track not in TRACKS:
            raise ValueError(f"compressor {self.name!r}: track must be one of {TRACKS}, got {self.track!r}")
        if not dataclasses.is_dataclass(self.config):
            raise TypeError(f"compressor {self.name!r}: config must be a dataclass type")
        for code in self.codes:
            if not code.kind:
                raise TypeError(f"compressor {self.name!r}: {code.__name__}.kind is empty")

    def track_for(self, config: Any) -> str:
        track = self.track(config) if callable(self.track) else self.track
        if track not in TRACKS:
            raise ValueError(f"compressor {self.name!r} returned an unknown track {track!r}")
        return track
