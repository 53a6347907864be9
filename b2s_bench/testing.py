"""Helpers for plugin authors: tiny models and the compressor contract check.

``check_compressor(spec)`` is what our own contract test runs over every registered compressor;
call it from your plugin's tests too.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .compression.codes import Code, Symbols
from .compression.compressed import Compressed
from .compression.compressor import CompressorSpec, Context, weight_layers
from .compression.contract import packed_count, storage_problems
from .compression.coverage import NotApplicableError, Target, coverage
from .compression.packing import pack_bits, unpack_bits
from .compression.sizes import SizeBreakdown, allowed_bytes, header_bits
from .config import build_config
from .errors import ConfigError

__all__ = ["check_compressor", "ContractReport", "tiny_model", "tiny_context", "TinyCNN", "TinyMLP", "SymbolCode", "HalfCode"]


class TinyCNN(nn.Module):
    """Conv-BN-ReLU x2, pool, linear: every layer type a compressor meets, in 20 k parameters."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TinyMLP(nn.Module):
    def __init__(self, in_features: int = 64, hidden: int = 128, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_model(seed: int = 0) -> TinyCNN:
    """A TinyCNN with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TinyCNN()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None  # tracked by default
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def tiny_context(seed: int = 0, with_data: bool = True) -> Context:
    """A Context for TinyCNN on 1x28x28 inputs, with small random calibration and training data."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(64, 1, 28, 28, generator=gen)
    ys = torch.randint(0, 10, (64,), generator=gen)
    return Context(
        seed=seed,
        input_shape=(1, 28, 28),
        num_classes=10,
        calibration=(lambda n: xs[:n]) if with_data else None,
        training=(lambda: [(xs[i : i + 16], ys[i : i + 16]) for i in range(0, 64, 16)]) if with_data else None,
        build_model=lambda name: TinyCNN(width=8),
    )


@dataclasses.dataclass
class SymbolCode(Code):
    """A per-tensor uniform quantizer whose integer codes are a symbol stream (:meth:`Code.symbols`):
    what :func:`check_compressor` gives a spec with ``recode`` to recode. W = scale · (q − 2**(bits−1))."""

    q: torch.Tensor  # int64, flat, in [0, 2**bits)
    scale: torch.Tensor  # (1,) fp32
    nbits: int
    orig_shape: tuple[int, ...]
    kind = "testing.symbols"

    @classmethod
    def of(cls, w: torch.Tensor, nbits: int = 4) -> SymbolCode:
        half = 2 ** (nbits - 1)
        scale = (w.abs().max() / (half - 1)).clamp(min=1e-12).reshape(1).float()
        q = (torch.round(w.detach().float() / scale).clamp(-half, half - 1) + half).to(torch.int64).reshape(-1)
        return cls(q, scale, nbits, tuple(w.shape))

    def decode(self) -> torch.Tensor:
        return (self.scale * (self.q.float() - 2 ** (self.nbits - 1))).reshape(self.orig_shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=self.q.numel() * self.nbits, scales=32, metadata=header_bits(self.meta()))

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"q": pack_bits(self.q, self.nbits), "scale": self.scale}

    def symbols(self) -> dict[str, Symbols]:
        return {"q": Symbols(self.q, self.nbits, "payload")}

    def meta(self) -> dict[str, Any]:
        return {"nbits": self.nbits, "shape": list(self.orig_shape)}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> SymbolCode:
        shape = tuple(meta["shape"])
        q = unpack_bits(tensors["q"], meta["nbits"], math.prod(shape))
        return cls(q, tensors["scale"].float(), meta["nbits"], shape)


@dataclasses.dataclass
class HalfCode(Code):
    """Every other weight kept (the even flat positions), the others zero, the kept values an fp32 payload:
    what :func:`check_compressor` gives a spec with ``refine`` as the earlier stage of a pipeline (a stand-in
    for pruning: a refinement must leave the odd positions at 0)."""

    values: torch.Tensor  # fp32, the even flat positions' weights
    orig_shape: tuple[int, ...]
    kind = "testing.half"

    @classmethod
    def of(cls, w: torch.Tensor) -> HalfCode:
        return cls(w.detach().float().reshape(-1)[0::2].clone(), tuple(w.shape))

    def decode(self) -> torch.Tensor:
        out = torch.zeros(math.prod(self.orig_shape), dtype=torch.float32)
        out[0::2] = self.values.float()
        return out.reshape(self.orig_shape)

    def bits(self) -> SizeBreakdown:
        return SizeBreakdown(payload=32 * self.values.numel(), metadata=header_bits(self.meta()))

    def regularizer(self) -> torch.Tensor:
        return torch.zeros(())

    def payload(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"values": self.values.float().contiguous()}

    def meta(self) -> dict[str, Any]:
        return {"shape": list(self.orig_shape)}

    @classmethod
    def restore(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> HalfCode:
        return cls(tensors["values"].float(), tuple(meta["shape"]))


@dataclasses.dataclass
class ContractReport:
    """What :func:`check_compressor` measured on TinyCNN once the contract held."""

    name: str
    identity_max_error: float | None
    bits: int
    disk_bytes: int
    coverage: float | None = None  # the share of TinyCNN's conv/linear weights the result changes


def safetensors_data_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file: its size less the 8-byte length and the JSON header."""
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return path.stat().st_size - 8 - header


def _states_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    worst = 0.0
    for k in a:
        worst = max(worst, float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0)
    return worst


def check_compressor(spec: CompressorSpec, settings: Mapping[str, Any] | None = None, seed: int = 0) -> ContractReport:
    """Run the contract every compressor must meet, on TinyCNN. Raises AssertionError on a breach.

    ``settings`` are added to the spec's ``quick`` settings.

    - bad settings give ConfigError naming the key;
    - the identity settings (if the family has them) reproduce the dense model;
    - a compressed model evaluates to finite outputs;
    - exact bits: each code's serialized tensors fit in its counted bits (the allowance of
      :data:`b2s_bench.compression.sizes.ARTIFACT_ALLOWANCE_BYTES` is byte padding only), and the artifact's
      tensor bytes, read back from the file, fit in the model's total;
    - each code's counted ``metadata`` is ``b2s.header_bits(meta())`` (the header rule);
    - save and load round-trips the decoded state exactly, and the artifact loaded onto a freshly built
      TinyCNN (not the compressed model's skeleton, which may carry hooks the compressor installed)
      computes the compressed model's outputs: whatever changes how a layer runs (activation
      quantizers) must be in the artifact (skipped for another architecture, a distilled student, which
      its model source rebuilds);
    - each code's regularizer is a finite scalar and its network form (if any) decodes to its shape;
    - the result's coverage (:mod:`b2s_bench.compression.coverage`) is measured, and ``target`` (if set) returns a
      :class:`~b2s_bench.compression.coverage.Target` or None.

    A spec with ``recode`` (a later stage that stores earlier codes differently) is also checked
    through it: TinyCNN's weights as :class:`SymbolCode` s (a 4-bit quantizer that declares its
    symbol stream) are recoded, must decode to the same weights, and go through the same checks
    (the artifact loaded with the spec's code types and ``SymbolCode``). Its ``compress`` may then
    raise ``NotApplicableError`` (nothing to recode as a first stage). A spec with ``refine`` and
    ``compress_tensor`` is also run as the later stage of a pipeline after :class:`HalfCode` s (every
    other weight dropped), refinement included: its layout is kept (the pipeline checks it), the
    dropped weights stay 0, and the result goes through the same checks.
    """
    try:
        build_config(spec.config, {"no_such_setting_xyz": 1}, owner=spec.name)
    except ConfigError as e:
        assert "no_such_setting_xyz" in str(e), f"{spec.name}: unknown-setting error does not name the key: {e}"
    else:
        raise AssertionError(f"{spec.name}: an unknown setting was accepted")

    model = tiny_model(seed)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        dense_out = model(x)
    return _check(spec, settings, seed, x, dense_out)


def _check(
    spec: CompressorSpec, settings: Mapping[str, Any] | None, seed: int, x: torch.Tensor, dense_out: torch.Tensor
) -> ContractReport:
    model = tiny_model(seed)
    identity_error = None
    config: Any
    if spec.identity is not None:
        config = build_config(spec.config, {**spec.quick, **spec.identity}, owner=spec.name)
        comp = spec.compress(tiny_model(seed), config, tiny_context(seed))
        with torch.no_grad():
            identity_error = float((comp.module()(x) - dense_out).abs().max())
        assert identity_error <= 1e-5, f"{spec.name}: identity settings {dict(spec.identity)} change outputs by {identity_error}"

    config = build_config(spec.config, {**spec.quick, **(settings or {})}, owner=spec.name)
    report = None
    try:
        comp = spec.compress(tiny_model(seed), config, tiny_context(seed))
    except NotApplicableError:
        if spec.recode is None:
            raise
    else:
        report = _check_compressed(
            spec, config, comp, model, x, dense_out, identity_error, {c.kind: c for c in spec.code_classes()}, seed
        )
    if spec.recode is not None:  # a later stage: recode the codes of a symbol-declaring quantizer
        state = tiny_model(seed).state_dict()
        codes: dict[str, Code] = {k: SymbolCode.of(state[k]) for k in weight_layers(tiny_model(seed))}
        before = Compressed.from_codes(tiny_model(seed), codes)
        ctx = tiny_context(seed)
        comp = before.with_codes({k: spec.recode(k, c, config, ctx) for k, c in codes.items()})
        err = _states_equal(before.state_dict(), comp.state_dict())
        assert err == 0.0, f"{spec.name}: recode changes the decoded weights by {err}"
        kinds: dict[str, type[Code]] = {**{c.kind: c for c in spec.code_classes()}, SymbolCode.kind: SymbolCode}
        report = _check_compressed(spec, config, comp, model, x, dense_out, identity_error, kinds, seed)
    if spec.refine is not None and spec.compress_tensor is not None:  # a later stage that refines the whole model
        report = _check_refine(spec, config, model, x, dense_out, identity_error, seed)
    assert report is not None
    return report


def _check_refine(
    spec: CompressorSpec,
    config: Any,
    model: nn.Module,
    x: torch.Tensor,
    dense_out: torch.Tensor,
    identity_error: float | None,
    seed: int,
) -> ContractReport:
    """The spec as the later stage of a pipeline after :class:`HalfCode` s (through the pipeline's own
    ``apply_stage``, which calls ``refine`` and refuses a changed layout): the result goes through the
    same checks, and the positions the earlier stage dropped stay exactly 0."""
    from .execution.cell import apply_stage  # the pipeline itself (imported here: execution builds on this room)

    state = tiny_model(seed).state_dict()
    codes: dict[str, Code] = {k: HalfCode.of(state[k]) for k in weight_layers(tiny_model(seed))}
    before = Compressed.from_codes(tiny_model(seed), codes)
    comp = apply_stage(before, spec, config, tiny_context(seed), tiny_model(seed))
    decoded = comp.state_dict()
    for key in codes:
        dropped = decoded[key].reshape(-1)[1::2]
        assert bool((dropped == 0).all()), (
            f"{spec.name}: a refined pipeline stage wrote weights the earlier stage dropped in {key}"
        )
    kinds: dict[str, type[Code]] = {**{c.kind: c for c in spec.code_classes()}, HalfCode.kind: HalfCode}
    return _check_compressed(spec, config, comp, model, x, dense_out, identity_error, kinds, seed)


def _check_compressed(
    spec: CompressorSpec,
    config: Any,
    comp: Compressed,
    model: nn.Module,
    x: torch.Tensor,
    dense_out: torch.Tensor,
    identity_error: float | None,
    code_types: Mapping[str, type[Code]],
    seed: int,
) -> ContractReport:
    assert isinstance(comp, Compressed), f"{spec.name}: compress must return Compressed"
    with torch.no_grad():
        out = comp.module()(x)
    assert out.shape == dense_out.shape and torch.isfinite(out).all(), f"{spec.name}: compressed model output is broken"

    size = comp.size()
    share = coverage(comp, model)["share"]  # what every record gets (b2s_bench.compression.coverage)
    if spec.target is not None:
        target = spec.target(config, comp, model)
        assert target is None or isinstance(target, Target), (
            f"{spec.name}: target() must return a b2s_bench.Target or None, got {type(target).__name__}"
        )
    problems = storage_problems(comp.codes)
    assert not problems, f"{spec.name}: size accounting: " + "; ".join(problems[:3])
    assert size.total_bits > 0 and size.baseline_bits == 32 * sum(
        v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    )
    for key, code in comp.codes.items():
        r = code.regularizer()
        assert isinstance(r, torch.Tensor) and r.numel() == 1 and math.isfinite(float(r)), f"{spec.name}: bad R(φ) for {key}"
        assert tuple(code.decode().shape) == tuple(code.shape), f"{spec.name}: {key} decodes to the wrong shape"
        net = code.as_network("random", torch.Generator().manual_seed(seed))
        if net is not None:
            assert tuple(net().shape) == tuple(code.shape), f"{spec.name}: network form of {key} has the wrong shape"

    with tempfile.TemporaryDirectory() as tmp:
        disk = comp.save(f"{tmp}/artifact")
        # the evidence is the artifact's tensor bytes, read from the file, not the code's own formula
        data = safetensors_data_bytes(Path(tmp) / "artifact" / "tensors.safetensors")
        packed = packed_count(comp.raw) + sum(packed_count(c.tensors()) for c in comp.codes.values())
        assert data <= allowed_bytes(size.total_bits, packed), (
            f"{spec.name}: the artifact stores {data} bytes of tensors but the model counts {size.total_bits} bits "
            f"({math.ceil(size.total_bits / 8)} bytes); every stored bit must be counted"
        )
        assert data * 8 >= size.total_bits * 0.99 - 8 * 64 * (len(comp.codes) + 1), (
            f"{spec.name}: artifact has far fewer bytes ({data}) than the counted bits ({size.total_bits / 8:.0f} B)"
        )
        loaded = Compressed.load(f"{tmp}/artifact", comp.skeleton, code_types)
        err = _states_equal(comp.state_dict(), loaded.state_dict())
        assert err == 0.0, f"{spec.name}: save/load changes the decoded weights by {err}"
        assert loaded.size().total_bits == size.total_bits
        if comp.architecture is None:
            fresh = Compressed.load(f"{tmp}/artifact", copy.deepcopy(model), code_types)
            with torch.no_grad():
                rebuilt = fresh.module()(x)
            gap = float((rebuilt - out).abs().max())
            assert gap <= 1e-5 * max(float(out.abs().max()), 1e-6), (
                f"{spec.name}: the artifact loaded onto a freshly built model computes other outputs (by {gap}) than "
                "the compressed model: store whatever changes how a layer runs (activation quantizers: "
                "Compressed(activations=...) or token_activations=...) in the Compressed, not as hooks on its skeleton"
            )
    return ContractReport(spec.name, identity_error, size.total_bits, disk, share)
