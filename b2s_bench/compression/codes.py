"""Codes: one compressed tensor each, as the theory has it.

A :class:`Code` is a decoder network g(φ) that rebuilds the tensor, a regularizer R(φ) that says what
makes φ small, and an exact storage cost in bits. :class:`StoredTensorCode` keeps a tensor as it is;
:class:`NestedCode` stores an outer code's fp32 payload as inner codes (pruning then quantization
quantizes the kept values; Big2Small then quantization quantizes the INR parameters): its bits are the
outer code's, less the fp32 payload it no longer stores, plus the inner codes'.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .sizes import FP32, SizeBreakdown, dtype_bits

__all__ = ["Code", "StoredTensorCode", "DecoderNetwork", "NestedCode", "Symbols"]


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


@dataclasses.dataclass(frozen=True)
class Symbols:
    """An integer symbol stream a code stores at a fixed width, which an entropy coder may store in fewer bits.

    The code's ``tensors()[name]`` is exactly ``pack_bits(values, width)``, and its :meth:`Code.bits`
    counts ``values.numel() * width`` bits for it under the field ``part``. A later stage that codes
    the stream stores the coded bytes instead, and on restore gives the code back
    ``pack_bits(decoded values, width)`` under ``name``.
    """

    values: torch.Tensor  # int64, 1-D, each in [0, 2**width)
    width: int  # bits per symbol as stored
    part: str  # the SizeBreakdown field that counts the stream


class Code(abc.ABC):
    """One compressed tensor.

    Subclasses set a unique ``kind`` (used to restore artifacts), and implement decode, bits,
    regularizer, tensors/meta (what is stored) and restore. Codes whose φ includes fp32 tensors that
    a later pipeline stage may compress list them in :meth:`payload` (each one counted as
    ``32 * numel`` under the ``payload_part`` field of :meth:`bits`); codes that store integer
    symbols at a fixed width list them in :meth:`symbols`, for an entropy-coding stage.

    A code that wraps another code of any kind (an entropy-coded stream around a quantized tensor)
    sets ``wraps_codes = True`` and implements :meth:`restore_wrapped`, which the artifact loader
    calls with a function that restores any installed code kind.
    """

    kind: ClassVar[str] = ""
    payload_part: ClassVar[str] = "payload"
    wraps_codes: ClassVar[bool] = False

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

    def symbols(self) -> dict[str, Symbols]:
        """Integer symbol streams stored at a fixed width, by the name of the tensor that packs them (see
        :class:`Symbols`); an entropy-coding stage may store them in fewer bits."""
        return {}

    @classmethod
    def restore_wrapped(
        cls,
        meta: Mapping[str, Any],
        tensors: Mapping[str, torch.Tensor],
        restore: Callable[[str, Mapping[str, Any], Mapping[str, torch.Tensor]], Code],
    ) -> Code:
        """For codes with ``wraps_codes``: like :meth:`restore`, given ``restore(kind, meta, tensors)``,
        which rebuilds a code of any installed kind."""
        raise NotImplementedError(f"{cls.__name__} sets wraps_codes but does not implement restore_wrapped")

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


@dataclasses.dataclass
class NestedCode(Code):
    """An outer code whose payload tensors are stored as inner codes."""

    outer: Code
    inner: dict[str, Code]
    kind = "nested"

    def __post_init__(self) -> None:
        payload = self.outer.payload()
        for name in self.inner:
            if name not in payload:
                raise KeyError(f"{type(self.outer).__name__} has no payload tensor {name!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.outer.shape

    def resolved_outer(self) -> Code:
        return self.outer.replace_payload({n: c.decode() for n, c in self.inner.items()})

    def decode(self) -> torch.Tensor:
        return self.resolved_outer().decode()

    def bits(self) -> SizeBreakdown:
        outer = self.outer.bits().as_dict()
        payload = self.outer.payload()
        part = self.outer.payload_part
        outer[part] -= FP32 * sum(payload[n].numel() for n in self.inner)
        if outer[part] < 0:
            raise ValueError(f"{type(self.outer).__name__} does not count its payload as fp32 under {part!r}")
        return SizeBreakdown(**outer) + SizeBreakdown.sum(c.bits() for c in self.inner.values())

    def regularizer(self) -> torch.Tensor:
        return self.resolved_outer().regularizer() + sum((c.regularizer() for c in self.inner.values()), torch.zeros(()))

    def tensors(self) -> dict[str, torch.Tensor]:
        own = {k: v for k, v in self.outer.tensors().items() if k not in self.inner}
        for n, c in self.inner.items():
            own.update({f"{n}/{k}": v for k, v in c.tensors().items()})
        return own

    def meta(self) -> dict[str, Any]:
        return {
            "outer": {
                "kind": self.outer.kind,
                "meta": self.outer.meta(),
                "tensors": sorted(k for k in self.outer.tensors() if k not in self.inner),
            },
            "inner": {n: {"kind": c.kind, "meta": c.meta(), "tensors": sorted(c.tensors())} for n, c in self.inner.items()},
        }

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Code:
        raise TypeError("nested codes are restored by the artifact loader, which knows every code type")

    def stats(self) -> dict[str, Any]:
        return {**self.outer.stats(), "inner": {n: c.stats() for n, c in self.inner.items()}}
