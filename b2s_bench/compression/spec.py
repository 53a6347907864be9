"""What a plugin registers for a compressor: :class:`CompressorSpec` (torch-free, so that registering
costs nothing: its callables and codes may be :func:`~b2s_bench.compression.lazy.lazy` references)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .lazy import Lazy
from .tracks import FAMILIES, TRACKS

if TYPE_CHECKING:
    from torch import Tensor, nn

    from .codes import Code
    from .compressed import Compressed
    from .compressor import Context
    from .coverage import Target

__all__ = ["CompressorSpec"]


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
        codes: the Code classes this compressor produces (to load its artifacts); each may be a
            ``b2s.lazy("module:Class", kind=...)`` reference naming its kind (:meth:`code_classes`
            imports them).
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
        refine: ``refine(compressed, model, config, ctx) -> Compressed``, for a later pipeline stage that
            also works on the whole model (Deep Compression's trained quantization: shared values
            fine-tuned on the training split's loss). The pipeline calls it after the stage's per-tensor
            step (``compress_tensor`` or ``recode``) with ``compressed``, the model after that step (its
            ``info`` empty), ``model``, the dense model the pipeline started from (a copy the refine may
            change, or None where the caller of :func:`~b2s_bench.execution.cell.apply_stage` gave
            none), the stage's config and the pipeline's Context (``ctx.training`` is set only when the
            pipeline's track, the most data any stage uses, is "training"). It returns ``compressed``
            itself when the config asks for nothing, else a Compressed with the same layout (the same
            coded and raw keys, each code of the same kinds storing tensors of the same dtypes and
            shapes: a refinement changes stored values, never what is stored), whose ``info`` holds
            its facts (the stage's ``refine`` entry in the record).

    Every callable above may be a ``b2s.lazy(".module:function", __name__)`` reference, so that a plugin
    registers without importing torch (:mod:`b2s_bench.compression.lazy`); ``config`` may not: suites are
    checked against it, so it lives in a torch-free module.
    """

    name: str
    family: str
    track: str | Callable[[Any], str]
    config: type
    compress: Callable[[nn.Module, Any, Context], Compressed]
    version: str = "1"
    compress_tensor: Callable[[str, Tensor, Any, Context], Code] | None = None
    recode: Callable[[str, Code, Any, Context], Code] | None = None
    codes: tuple[type[Code] | Lazy, ...] = ()
    identity: Mapping[str, Any] | None = None
    description: str = ""
    uses_gpu: bool = False
    quick: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    cost: Callable[[Any], float] | None = None
    target: Callable[[Any, Compressed, nn.Module], Target | None] | None = None
    defaults_source: str = ""
    calibration_inputs: Callable[[nn.Module, Any, Context], Tensor] | None = None
    refine: Callable[[Compressed, nn.Module | None, Any, Context], Compressed] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"compressor {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if isinstance(self.track, str) and self.track not in TRACKS:
            raise ValueError(f"compressor {self.name!r}: track must be one of {TRACKS}, got {self.track!r}")
        if not dataclasses.is_dataclass(self.config):
            raise TypeError(f"compressor {self.name!r}: config must be a dataclass type")
        for code in self.codes:
            if isinstance(code, Lazy):
                if not code.kind:
                    raise TypeError(
                        f"compressor {self.name!r}: codes entry {code!r} needs its kind: "
                        "b2s.lazy('module:Class', kind='<the class's Code.kind>')"
                    )
            elif not code.kind:
                raise TypeError(f"compressor {self.name!r}: {code.__name__}.kind is empty")

    def track_for(self, config: Any) -> str:
        track = self.track(config) if callable(self.track) else self.track
        if track not in TRACKS:
            raise ValueError(f"compressor {self.name!r} returned an unknown track {track!r}")
        return track

    def code_kinds(self) -> tuple[str, ...]:
        """The ``Code.kind`` of each of :attr:`codes`, without importing a lazily named class."""
        return tuple(str(code.kind) for code in self.codes)

    def code_classes(self) -> tuple[type[Code], ...]:
        """The Code classes of :attr:`codes`, lazily named ones imported (and their kinds checked)."""
        return tuple(code.resolve() if isinstance(code, Lazy) else code for code in self.codes)
