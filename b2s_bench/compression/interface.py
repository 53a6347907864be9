"""The interface from the theory: every compressor is a network subject to a regularization.

A compressed tensor is a :class:`Code`: a decoder network g(φ) that rebuilds the tensor, a
regularizer R(φ) that says what makes φ small, and an exact storage cost in bits. A
:class:`CompressorSpec` is what a plugin registers; its ``compress`` receives a :class:`Context`
and returns a :class:`~b2s_bench.compression.compressed.Compressed` model.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from .sizes import SizeBreakdown, dtype_bits
from .tracks import FAMILIES, TRACKS

if TYPE_CHECKING:
    from .compressed import Compressed
    from .coverage import Target

__all__ = [
    "TRACKS",
    "FAMILIES",
    "Code",
    "StoredTensorCode",
    "DecoderNetwork",
    "CompressorSpec",
    "Context",
    "Progress",
]



class DecoderNetwork(nn.Module):
    """g(φ) as a module: ``forward()`` returns the rebuilt tensor and the parameters are φ.

    ``regularizer()`` is the differentiable R(φ) and ``project()`` applies a hard constraint in
    place (for projected gradient), so the generic solver can fit any code given this way.

    Attributes:
        projection: when the solver calls ``project()``: after every "step" (projected
            gradient, e.g. a sparsity constraint), only at the "end" (a relaxation snapped at the
            end, e.g. a rounding layer), or "never".
        solver_lam: the weight λ of R(φ) the solver uses by default (ramped up from 0).
        closed_form: whether the code itself is the family's closed-form solution (truncated
            SVD, top-k magnitudes, round-to-nearest), so that refitting this network with the
            generic solver is a closed-form-vs-solver check. False for codes that are themselves
            gradient fits (INRs).
        solution: how the code's φ was found: "closed form" when the code is the family's
            closed-form solution, "local search" for codes found by a local search such as k-means
            or AdaRound, whose solver gap is not a closed-form check.
    """

    projection: ClassVar[str] = "step"
    solver_lam: ClassVar[float] = 0.0
    closed_form: ClassVar[bool] = True
    solution: ClassVar[str] = "closed form"

    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())

    @torch.no_grad()
    def project(self) -> None:
        """Project φ onto the constraint set (a no-op for unconstrained decoders)."""


class Code(abc.ABC):
    """One compressed tensor.

    Subclasses set a unique ``kind`` (used to restore artifacts), and implement decode, bits,
    regularizer, tensors/meta (what is stored) and restore. Codes whose φ includes fp32 tensors that
    a later pipeline stage may compress list them in :meth:`payload` (each one counted as
    ``32 * numel`` under the ``payload_part`` field of :meth:`bits`).
    """

    kind: ClassVar[str] = ""
    payload_part: ClassVar[str] = "payload"

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the decoded tensor: the ``orig_shape`` a code stores, unless it overrides this."""
        orig = getattr(self, "orig_shape", None)
        if orig is None:
            raise NotImplementedError(f"{type(self).__name__} must store orig_shape or override shape")
        return tuple(int(s) for s in orig)

    @abc.abstractmethod
    def decode(self) -> torch.Tensor:
        """Rebuild the tensor g(φ)."""

    @abc.abstractmethod
    def bits(self) -> SizeBreakdown:
        """Exact stored bits of φ and everything else needed to decode."""

    @abc.abstractmethod
    def regularizer(self) -> torch.Tensor:
        """R(φ) at the stored φ (for example the rank, the number of non-zeros, or the grid distance)."""

    @abc.abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors, packed at their stored width (written to the artifact)."""

    @abc.abstractmethod
    def meta(self) -> dict[str, Any]:
        """JSON-serializable header needed to decode (shapes, bit widths, ...)."""

    @classmethod
    @abc.abstractmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Code:
        """Inverse of (meta, tensors)."""

    def as_network(self, init: str = "code", generator: torch.Generator | None = None) -> DecoderNetwork | None:
        """The decoder as a network whose parameters are φ.

        Args:
            init: "code" starts at this code's φ; "random" at a random φ (for the generic solver).
        """
        return None

    def payload(self) -> dict[str, torch.Tensor]:
        """fp32 parts of φ that a later pipeline stage may compress (name -> tensor)."""
        return {}

    def replace_payload(self, tensors: Mapping[str, torch.Tensor]) -> Code:
        """A copy of this code with some payload tensors replaced (dataclass codes get this for free)."""
        if dataclasses.is_dataclass(self):
            return dataclasses.replace(self, **tensors)
        raise NotImplementedError(f"{type(self).__name__} does not support replacing its payload")

    def stats(self) -> dict[str, Any]:
        """Per-tensor facts for the record (rank, sparsity, outliers, ...)."""
        return {}

    def deployed(self, layer: nn.Module) -> nn.Module | None:
        """Optionally, a module that replaces ``layer`` in the deployed form (e.g. two low-rank layers)."""
        return None


@dataclasses.dataclass
class StoredTensorCode(Code):
    """A tensor stored as it is, at its own dtype: g is the identity and R(φ) = 0.

    Compressors use it for tensors they leave alone (too small, or past a loss limit) and for
    float settings. Subclasses set ``kind`` and, where the bits belong elsewhere, ``stored_part``.
    """

    value: torch.Tensor
    stored_part: ClassVar[str] = "raw"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def decode(self) -> torch.Tensor:
        return self.value.float()

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(**{self.stored_part: self.value.numel() * dtype_bits(self.value.dtype)})

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"value": self.value.contiguous()}

    def meta(self) -> dict[str, Any]:
        return {}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> StoredTensorCode:
        return cls(tensors["value"])


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
    """

    name: str
    family: str
    track: str | Callable[[Any], str]
    config: type
    compress: Callable[[nn.Module, Any, Context], Compressed]
    version: str = "1"
    compress_tensor: Callable[[str, torch.Tensor, Any, Context], Code] | None = None
    codes: tuple[type[Code], ...] = ()
    identity: Mapping[str, Any] | None = None
    description: str = ""
    uses_gpu: bool = False
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost: Callable[[Any], float] | None = None
    target: Callable[[Any, Compressed, nn.Module], Target | None] | None = None

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
