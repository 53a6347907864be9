"""The interface from the theory: every compressor is a network subject to a regularization.

A compressed tensor is a :class:`Code`: a decoder network g(φ) that rebuilds the tensor, a
regularizer R(φ) that says what makes φ small, and an exact storage cost in bits. A
:class:`Compressed` model holds the codes and the untouched tensors, evaluates as an ``nn.Module``
and saves as a real artifact. A :class:`CompressorSpec` is what a plugin registers.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from .sizes import FP32, SizeBreakdown, SizeReport, dtype_bits, inference_state

__all__ = [
    "TRACKS",
    "FAMILIES",
    "Code",
    "StoredTensorCode",
    "DecoderNetwork",
    "Compressed",
    "CompressorSpec",
    "Context",
    "Progress",
    "conform_shapes",
]

#: Data-access tracks, from least to most data (methods.md §1.2).
TRACKS = ("data-free", "synthetic", "calibration", "training")
FAMILIES = ("identity", "lowrank", "pruning", "quantization", "ergodic", "inr", "distillation", "other")


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
    """

    projection: ClassVar[str] = "step"
    solver_lam: ClassVar[float] = 0.0
    closed_form: ClassVar[bool] = True

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
    @abc.abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Shape of the decoded tensor."""

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
            return dataclasses.replace(self, **tensors)  # type: ignore[arg-type]
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


def conform_shapes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Resize parameters and buffers of ``model`` to the shapes in ``state`` (structured pruning).

    Layer attributes (channels, features, groups) follow, so a physically shrunk model can be
    rebuilt from the original architecture and a state dict alone.
    """
    own = dict(model.named_parameters())
    own.update(dict(model.named_buffers()))
    for key, value in state.items():  # a bias the compressor added (e.g. bias correction)
        mod_name, _, pname = key.rpartition(".")
        if key not in own and pname == "bias" and mod_name:
            mod = model.get_submodule(mod_name)
            if getattr(mod, "bias", "absent") is None:
                mod.bias = nn.Parameter(torch.empty_like(value))
                own[key] = mod.bias
    changed: set[str] = set()
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            changed.add(key.rpartition(".")[0])
    for mod_name in changed:
        mod = model.get_submodule(mod_name)
        for pname, p in list(mod.named_parameters(recurse=False)):
            key = f"{mod_name}.{pname}"
            if key in state:
                setattr(mod, pname, nn.Parameter(torch.empty_like(state[key]), requires_grad=p.requires_grad))
        for bname, b in list(mod.named_buffers(recurse=False)):
            key = f"{mod_name}.{bname}"
            if key in state and b is not None:
                mod.register_buffer(bname, torch.empty_like(state[key]))
        w = getattr(mod, "weight", None)
        if isinstance(mod, nn.modules.conv._ConvNd) and w is not None:
            depthwise = mod.groups > 1 and mod.groups == mod.in_channels
            if mod.transposed:
                mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
            else:
                mod.out_channels = w.shape[0]
                mod.groups = w.shape[0] if depthwise else mod.groups
                mod.in_channels = w.shape[1] * mod.groups
        elif isinstance(mod, nn.Linear) and w is not None:
            mod.out_features, mod.in_features = w.shape
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            ref = getattr(mod, "running_mean", None)
            ref = ref if ref is not None else w
            mod.num_features = ref.shape[0]
        elif isinstance(mod, nn.LayerNorm) and w is not None:
            mod.normalized_shape = tuple(w.shape)


class Compressed:
    """A compressed model: codes for the replaced tensors plus the untouched ones, stored raw.

    Args:
        codes: state_dict key -> code.
        raw: state_dict key -> tensor kept as is; counted at its dtype's width (plus 32 bits a
            dimension where its shape differs from the original architecture's: the new shape must
            be stored).
        skeleton: the architecture (its weights are ignored; shapes are conformed on build).
        original_shapes: shapes of the original model's inference state (the fp32 baseline).
        replaced: original keys that count as compressed layers (default: the keys of ``codes``).
        architecture: model source name to rebuild ``skeleton`` when loading, if it differs
            from the original model (a distillation student).
        info: compressor facts for the record (per-layer ranks, chosen budgets, ...).
        activations: simulated activation quantization: layer name -> (low, high) range of its
            input, fake-quantized to ``activation_bits`` at evaluation. Activation bits do not
            change the weight storage; each range is counted as 2 x 32 bits of metadata.
    """

    def __init__(
        self,
        codes: Mapping[str, Code],
        raw: Mapping[str, torch.Tensor],
        skeleton: nn.Module,
        original_shapes: Mapping[str, tuple[int, ...]],
        replaced: Iterable[str] | None = None,
        architecture: str | None = None,
        info: Mapping[str, Any] | None = None,
        activations: Mapping[str, tuple[float, float]] | None = None,
        activation_bits: int | None = None,
    ):
        overlap = set(codes) & set(raw)
        if overlap:
            raise ValueError(f"tensors both coded and raw: {sorted(overlap)[:5]}")
        self.codes = dict(codes)
        self.raw = {k: v.detach() for k, v in raw.items()}
        self.skeleton = skeleton
        self.original_shapes = {k: tuple(s) for k, s in original_shapes.items()}
        self.replaced = frozenset(self.codes if replaced is None else replaced) | frozenset(self.codes)
        self.architecture = architecture
        self.info = dict(info or {})
        self.activations = {k: (float(lo), float(hi)) for k, (lo, hi) in (activations or {}).items()}
        self.activation_bits = activation_bits
        self._decoded: dict[str, torch.Tensor] | None = None
        if self.activations and not activation_bits:
            raise ValueError("activation ranges need activation_bits")

    @classmethod
    def from_codes(
        cls, model: nn.Module, codes: Mapping[str, Code], info: Mapping[str, Any] | None = None
    ) -> Compressed:
        """The common case: some tensors of ``model`` are coded, the rest are stored raw as they are.

        ``model`` itself becomes the skeleton (not copied: the runner hands every cell its own copy),
        so do not modify it afterwards.
        """
        state = inference_state(model)
        unknown = set(codes) - set(state)
        if unknown:
            raise KeyError(f"codes for tensors the model does not have: {sorted(unknown)[:5]}")
        raw = {k: v for k, v in state.items() if k not in codes}
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        return cls(codes, raw, model, shapes, info=info)

    def with_codes(self, codes: Mapping[str, Code]) -> Compressed:
        return Compressed(codes, self.raw, self.skeleton, self.original_shapes, self.replaced, self.architecture,
                          self.info, self.activations, self.activation_bits)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The decoded inference state (codes decoded, raw tensors as float where they were float).

        Decoding runs once: some decoders (an INR evaluated at every weight) cost seconds, and the
        model, the weight metrics and the artifact all read the result. Codes are never changed in
        place (a pipeline builds a new Compressed), so the cache stays valid. Callers get a new dict
        whose tensors they must not modify.
        """
        if self._decoded is None:
            state = {k: c.decode().detach() for k, c in self.codes.items()}
            for k, v in self.raw.items():
                state[k] = v.float() if v.is_floating_point() else v
            self._decoded = state
        return dict(self._decoded)

    def keep_decoded(self, decoded: Mapping[str, torch.Tensor]) -> None:
        """Hand over tensors the compressor already decoded (each equal to its code's ``decode()``),
        so an expensive decoder does not run twice."""
        unknown = set(decoded) - set(self.codes)
        if unknown:
            raise KeyError(f"decoded tensors without a code: {sorted(unknown)[:5]}")
        state = {k: t.detach() for k, t in decoded.items()}
        state.update({k: c.decode().detach() for k, c in self.codes.items() if k not in decoded})
        for k, v in self.raw.items():
            state[k] = v.float() if v.is_floating_point() else v
        self._decoded = state

    def module(self, deployed: bool = False, fresh: bool = True) -> nn.Module:
        """An ``nn.Module`` ready to evaluate, built from the skeleton and the decoded state.

        Args:
            deployed: replace layers by the codes' deployed forms where they have one (for example
                low-rank factors as two layers, or weights rebuilt on the fly).
            fresh: build on a copy of the skeleton. False builds into the skeleton itself (the
                runner does, once per cell, to save a copy); later calls still work.
        """
        model = copy.deepcopy(self.skeleton) if fresh or deployed else self.skeleton
        state = self.state_dict()
        conform_shapes(model, state)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise RuntimeError(f"compressed state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for layer_name, (lo, hi) in self.activations.items():
            model.get_submodule(layer_name).register_forward_pre_hook(
                _ActivationQuantizer(lo, hi, self.activation_bits or 8))
        if deployed:
            for key, code in self.codes.items():
                layer_name = key.rpartition(".")[0]
                layer = model.get_submodule(layer_name)
                new = code.deployed(layer)
                if new is not None:
                    parent_name, _, child = layer_name.rpartition(".")
                    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        return model.eval()

    def size(self) -> SizeReport:
        """Exact stored bits, the fp32 baseline, and what the compressed layers alone cost."""
        code_bits = SizeBreakdown.sum(c.bits() for c in self.codes.values())
        raw_bits = {k: v.numel() * dtype_bits(v.dtype) for k, v in self.raw.items()}
        # a raw tensor stored at a new shape of the original architecture (structured pruning) needs its
        # dimensions, 32 bits each; another architecture (a distilled student) defines its own shapes
        shape_bits = {k: 32 * v.dim() for k, v in self.raw.items() if self.architecture is None
                      and k in self.original_shapes and tuple(v.shape) != self.original_shapes[k]}
        total = code_bits + SizeBreakdown(raw=sum(raw_bits.values()),
                                          metadata=64 * len(self.activations) + sum(shape_bits.values()))
        baseline = FP32 * sum(_numel(s) for s in self.original_shapes.values())
        layers_baseline = FP32 * sum(_numel(self.original_shapes[k]) for k in self.replaced if k in self.original_shapes)
        layers = code_bits.total + sum(shape_bits.values()) + sum(
            b for k, b in raw_bits.items() if k in self.replaced or k not in self.original_shapes
        )
        return SizeReport(total, baseline, layers_baseline, layers)

    def save(self, path: str) -> int:
        """Write the artifact (safetensors + JSON manifest) to the folder ``path``; return its bytes."""
        from .artifact import save_compressed

        return save_compressed(self, path)

    @classmethod
    def load(cls, path: str, skeleton: nn.Module, code_types: Mapping[str, type[Code]]) -> Compressed:
        """Read an artifact written by :meth:`save`. ``code_types`` maps ``Code.kind`` to its class."""
        from .artifact import load_compressed

        return load_compressed(path, skeleton, code_types)


class _ActivationQuantizer:
    """Forward pre-hook: fake-quantize a layer's input to ``bits`` over [low, high] (affine)."""

    def __init__(self, low: float, high: float, bits: int):
        self.low, self.high, self.bits = low, high, bits
        self.scale = max(high - low, 1e-12) / (2**bits - 1)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        q = torch.clamp(torch.round((x - self.low) / self.scale), 0, 2**self.bits - 1)
        return (q * self.scale + self.low, *args[1:])


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def skeleton_of(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the CPU, to rebuild from (its tensor values are not used)."""
    return copy.deepcopy(model).cpu()


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
