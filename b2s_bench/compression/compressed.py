"""A compressed model: codes for the replaced tensors plus the untouched ones, stored raw.

It evaluates as an ``nn.Module`` (built from a skeleton and the decoded state), counts its exact
stored bits against the fp32 baseline, and saves as a real artifact: one safetensors file plus a JSON manifest, written atomically
(:meth:`Compressed.save`, :meth:`Compressed.load`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from ..store.records import WRITE_ERRNOS, cannot_write, temp_tag, umask
from .codes import Code, NestedCode
from .sizes import FP32, SizeBreakdown, SizeReport, dtype_bits, header_bits, inference_state

__all__ = [
    "Compressed",
    "conform_shapes",
    "skeleton_of",
    "save_compressed",
    "read_artifact",
    "FORMAT",
    "restore_code",
    "code_entry",
    "artifact_bytes",
    "fake_quantize_per_token",
]


def conform_shapes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Resize parameters and buffers of ``model`` to the shapes in ``state`` (structured pruning).

    Layer attributes (channels, features, groups) follow, so a physically shrunk model can be
    rebuilt from the original architecture and a state dict alone; so do a multi-head attention
    module's ``head_dim`` and ``attn_dim`` (a module with a ``qkv`` linear layer and an integer
    ``num_heads``, as timm's), its head count kept.
    """
    own: dict[str, torch.Tensor] = dict(model.named_parameters())
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
            key = f"{mod_name}.{pname}" if mod_name else pname  # "" is the model (ViT's cls_token)
            if key in state:
                setattr(mod, pname, nn.Parameter(torch.empty_like(state[key]), requires_grad=p.requires_grad))
        for bname, b in list(mod.named_buffers(recurse=False)):
            key = f"{mod_name}.{bname}" if mod_name else bname
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
            if ref is not None:
                mod.num_features = ref.shape[0]
        elif isinstance(mod, nn.LayerNorm) and w is not None:
            mod.normalized_shape = tuple(w.shape)
    for mod in model.modules():  # multi-head attention (timm's convention): its widths follow its qkv layer
        qkv, heads = getattr(mod, "qkv", None), getattr(mod, "num_heads", None)
        if isinstance(qkv, nn.Linear) and isinstance(heads, int) and heads > 0:
            width = qkv.out_features // 3  # pruning removes head dimensions, never heads
            attention: Any = mod  # plain int attributes of a third-party module
            if isinstance(getattr(attention, "head_dim", None), int):
                attention.head_dim = width // heads
            if isinstance(getattr(attention, "attn_dim", None), int):
                attention.attn_dim = width


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
        info: compressor facts for the record (per-layer ranks, chosen budgets, ...). A compressor whose
            decoded weights are an equivalent reparametrization of the dense ones (scales folded from
            one layer into another) says why under ``info["reparametrized"]``
            (:data:`b2s_bench.metrics.REPARAMETRIZED`): weight metrics and limits are then not applicable.
        activations: simulated activation quantization: layer name -> (low, high) range of its
            input, fake-quantized to ``activation_bits`` at evaluation. Activation bits do not
            change the weight storage; each range is counted as 2 x 32 bits of metadata.
        activation_layer_bits: layers whose input has other bits than ``activation_bits`` (the last
            layer's 8 bits under SQuant's rule); each counted as 8 bits of metadata.
        token_activations: dynamic activation quantization: layer name -> bits of a per-token
            quantizer on its input (symmetric, each token's step max|x_token| / (2^(b-1) - 1) computed at
            run time: :func:`fake_quantize_per_token`; a token is the channel vector of one position: the
            last dimension of a linear layer's input, dimension 1 of a convolution's). Nothing is
            calibrated, so no range is stored; which layers and their bits are: counted as a header,
            ``header_bits(token_activations)`` (one 32-bit field a layer). A layer's input is quantized
            by a static range or per token, never both. Saved in the artifact and rebuilt by
            :meth:`module` like the static ranges, so a reloaded model is the evaluated one.
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
        activation_layer_bits: Mapping[str, int] | None = None,
        token_activations: Mapping[str, int] | None = None,
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
        self.activation_layer_bits = {k: int(b) for k, b in (activation_layer_bits or {}).items()}
        unknown = set(self.activation_layer_bits) - set(self.activations)
        if unknown:
            raise ValueError(f"activation bits for layers without a range: {sorted(unknown)[:5]}")
        self.token_activations = {k: int(b) for k, b in (token_activations or {}).items()}
        bad = {k: b for k, b in self.token_activations.items() if not 2 <= b <= 16}
        if bad:
            raise ValueError(f"token_activations: bits must be integers in 2..16, got {dict(sorted(bad.items())[:5])}")
        twice = set(self.token_activations) & set(self.activations)
        if twice:
            raise ValueError(
                f"layers with both a static activation range and a per-token quantizer (their input would be "
                f"quantized twice): {sorted(twice)[:5]}; keep one of the two"
            )
        self._decoded: dict[str, torch.Tensor] | None = None
        if self.activations and not activation_bits:
            raise ValueError("activation ranges need activation_bits")

    @classmethod
    def from_codes(cls, model: nn.Module, codes: Mapping[str, Code], info: Mapping[str, Any] | None = None) -> Compressed:
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
        return Compressed(
            codes,
            self.raw,
            self.skeleton,
            self.original_shapes,
            self.replaced,
            self.architecture,
            self.info,
            self.activations,
            self.activation_bits,
            self.activation_layer_bits,
            self.token_activations,
        )

    def with_activations(
        self, ranges: Mapping[str, tuple[float, float]], bits: int, layer_bits: Mapping[str, int] | None = None
    ) -> Compressed:
        """The same codes with these activation ranges (``layer_bits``: layers at other bits than ``bits``)."""
        out = Compressed(
            self.codes,
            self.raw,
            self.skeleton,
            self.original_shapes,
            self.replaced,
            self.architecture,
            self.info,
            ranges,
            bits,
            layer_bits,
            self.token_activations,
        )
        if self._decoded is not None:
            out._decoded = self._decoded  # the same codes: no second decode
        return out

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
                runner does, once per cell, to save a copy); later calls still work, and every
                model built carries exactly one set of activation quantizers.

        The activation quantizers (static ranges, per-token ones) are forward pre-hooks on the named
        layers, installed after any deployed replacement (which takes the layer's input as it is).
        """
        model = copy.deepcopy(self.skeleton) if fresh or deployed else self.skeleton
        _remove_activation_quantizers(model)  # a skeleton built into before carries the earlier set
        state = self.state_dict()
        conform_shapes(model, state)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise RuntimeError(f"compressed state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if deployed:
            for key, code in self.codes.items():
                layer_name = key.rpartition(".")[0]
                layer = model.get_submodule(layer_name)
                new = code.deployed(layer)
                if new is not None:
                    parent_name, _, child = layer_name.rpartition(".")
                    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        for layer_name, (lo, hi) in self.activations.items():
            bits = self.activation_layer_bits.get(layer_name, self.activation_bits or 8)
            model.get_submodule(layer_name).register_forward_pre_hook(_ActivationQuantizer(lo, hi, bits))
        for layer_name, bits in self.token_activations.items():
            layer = self.skeleton.get_submodule(layer_name)  # the original layer type sets the channel dimension
            dim = 1 if isinstance(layer, nn.modules.conv._ConvNd) else -1
            model.get_submodule(layer_name).register_forward_pre_hook(_TokenQuantizer(bits, dim))
        return model.eval()

    def size(self) -> SizeReport:
        """Exact stored bits, the fp32 baseline, and what the compressed layers alone cost."""
        code_bits = SizeBreakdown.sum(c.bits() for c in self.codes.values())
        raw_bits = {k: v.numel() * dtype_bits(v.dtype) for k, v in self.raw.items()}
        # a raw tensor stored at a new shape of the original architecture (structured pruning) needs its
        # dimensions, 32 bits each; another architecture (a distilled student) defines its own shapes
        shape_bits = {
            k: 32 * v.dim()
            for k, v in self.raw.items()
            if self.architecture is None and k in self.original_shapes and tuple(v.shape) != self.original_shapes[k]
        }
        total = code_bits + SizeBreakdown(
            raw=sum(raw_bits.values()),
            metadata=64 * len(self.activations)
            + 8 * len(self.activation_layer_bits)
            + (header_bits(self.token_activations) if self.token_activations else 0)
            + sum(shape_bits.values()),
        )
        baseline = FP32 * sum(_numel(s) for s in self.original_shapes.values())
        layers_baseline = FP32 * sum(_numel(self.original_shapes[k]) for k in self.replaced if k in self.original_shapes)
        layers = (
            code_bits.total
            + sum(shape_bits.values())
            + sum(b for k, b in raw_bits.items() if k in self.replaced or k not in self.original_shapes)
        )
        return SizeReport(total, baseline, layers_baseline, layers)

    def save(self, path: str) -> int:
        """Write the artifact (safetensors + JSON manifest) to the folder ``path``; return its bytes."""
        return save_compressed(self, path)

    @classmethod
    def load(cls, path: str, skeleton: nn.Module, code_types: Mapping[str, type[Code]]) -> Compressed:
        """Read an artifact written by :meth:`save`. ``code_types`` maps ``Code.kind`` to its class."""
        codes, raw, manifest = read_artifact(path, code_types)
        return cls(
            codes,
            raw,
            skeleton,
            {k: tuple(s) for k, s in manifest["original_shapes"].items()},
            replaced=manifest["replaced"],
            architecture=manifest.get("architecture"),
            activations={k: tuple(v) for k, v in manifest.get("activations", {}).items()},
            activation_bits=manifest.get("activation_bits"),
            activation_layer_bits=manifest.get("activation_layer_bits", {}),
            token_activations=manifest.get("token_activations", {}),
        )


class _ActivationQuantizer:
    """Forward pre-hook: fake-quantize a layer's input to ``bits`` over [low, high] (affine)."""

    def __init__(self, low: float, high: float, bits: int):
        self.low, self.high, self.bits = low, high, bits
        self.scale = max(high - low, 1e-12) / (2**bits - 1)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        q = torch.clamp(torch.round((x - self.low) / self.scale), 0, 2**self.bits - 1)
        return (q * self.scale + self.low, *args[1:])


def fake_quantize_per_token(x: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """Symmetric dynamic quantization of each token of ``x`` (its slice along ``dim``, the channels) to
    ``bits``: step max|x_token| / (2^(b-1) - 1), at least 1e-5 (as SmoothQuant's per-token quantizer),
    values clamped to [-2^(b-1), 2^(b-1) - 1] steps. The core's per-token activation quantizer."""
    top = 2 ** (bits - 1) - 1
    step = (x.abs().amax(dim=dim, keepdim=True) / top).clamp(min=1e-5)
    return torch.clamp(torch.round(x / step), -top - 1, top) * step


class _TokenQuantizer:
    """Forward pre-hook: :func:`fake_quantize_per_token` on a layer's input."""

    def __init__(self, bits: int, dim: int):
        self.bits, self.dim = bits, dim

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (fake_quantize_per_token(args[0], self.bits, self.dim), *args[1:])


def _remove_activation_quantizers(model: nn.Module) -> None:
    for module in model.modules():
        for handle_id, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, (_ActivationQuantizer, _TokenQuantizer)):
                del module._forward_pre_hooks[handle_id]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def skeleton_of(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the CPU, to rebuild from (its tensor values are not used)."""
    return copy.deepcopy(model).cpu()


# The artifact on disk

FORMAT = "b2s-bench/artifact/1"
TENSORS = "tensors.safetensors"
MANIFEST = "manifest.json"


def code_entry(
    code: Code,
    prefix: str,
    tensors: dict[str, torch.Tensor],
    tensors_of: Callable[[Code], Mapping[str, torch.Tensor]] | None = None,
) -> dict[str, Any]:
    """Manifest entry of a code; its tensors are added to ``tensors`` under ``prefix``. ``tensors_of``:
    a code's ``tensors()`` where the caller already has them (the runner's checks share one call)."""
    if isinstance(code, NestedCode):
        outer = code_entry(code.outer, f"{prefix}/outer", tensors, tensors_of)
        for name in code.inner:  # stored by the inner codes, not as fp32
            del tensors[f"{prefix}/outer/{name}"]
        outer["tensors"] = [t for t in outer["tensors"] if t not in code.inner]
        inner = {n: code_entry(c, f"{prefix}/inner/{n}", tensors, tensors_of) for n, c in code.inner.items()}
        return {"kind": NestedCode.kind, "outer": outer, "inner": inner}
    own = code.tensors() if tensors_of is None else tensors_of(code)
    for name, t in own.items():
        tensors[f"{prefix}/{name}"] = t.detach().cpu().contiguous()
    return {"kind": code.kind, "meta": code.meta(), "tensors": sorted(own)}


def restore_code(
    entry: Mapping[str, Any], prefix: str, tensors: Mapping[str, torch.Tensor], code_types: Mapping[str, type[Code]]
) -> Code:
    kind = entry["kind"]
    if kind == NestedCode.kind:
        inner = {n: restore_code(e, f"{prefix}/inner/{n}", tensors, code_types) for n, e in entry["inner"].items()}
        outer_entry = entry["outer"]
        outer_tensors = {f"{prefix}/outer/{t}": tensors[f"{prefix}/outer/{t}"] for t in outer_entry["tensors"]}
        outer_tensors.update({f"{prefix}/outer/{n}": c.decode() for n, c in inner.items()})
        names = sorted(set(outer_entry["tensors"]) | set(inner))
        outer = restore_code({**outer_entry, "tensors": names}, f"{prefix}/outer", outer_tensors, code_types)
        return NestedCode(outer, inner)
    if kind not in code_types:
        raise KeyError(
            f"artifact uses code kind {kind!r}, which no installed compressor provides "
            f"(known: {sorted(code_types)}); install the plugin that wrote it"
        )
    own = {name: tensors[f"{prefix}/{name}"] for name in entry["tensors"]}
    cls = code_types[kind]
    if cls.wraps_codes:

        def restore_any(inner_kind: str, meta: Mapping[str, Any], inner: Mapping[str, torch.Tensor]) -> Code:
            if inner_kind not in code_types:
                raise KeyError(f"artifact uses code kind {inner_kind!r}, which no installed compressor provides")
            return code_types[inner_kind].restore(meta, inner)

        return cls.restore_wrapped(entry["meta"], own, restore_any)
    return cls.restore(entry["meta"], own)


def save_compressed(compressed: Compressed, path: str | os.PathLike[str]) -> int:
    """Write ``compressed`` to the folder ``path`` (replaced atomically); return the bytes on disk."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    codes = {key: code_entry(code, f"code/{key}", tensors) for key, code in compressed.codes.items()}
    for key, t in compressed.raw.items():
        tensors[f"raw/{key}"] = t.detach().cpu().contiguous()
    size = compressed.size()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "codes": codes,
        "raw": sorted(compressed.raw),
        "original_shapes": {k: list(s) for k, s in compressed.original_shapes.items()},
        "replaced": sorted(compressed.replaced),
        "architecture": compressed.architecture,
        "activations": {k: list(v) for k, v in compressed.activations.items()},
        "activation_bits": compressed.activation_bits,
        "size": size.as_dict(),
    }
    if compressed.activation_layer_bits:  # absent when empty: artifacts without it read the same
        manifest["activation_layer_bits"] = compressed.activation_layer_bits
    if compressed.token_activations:  # likewise
        manifest["token_activations"] = compressed.token_activations
    # bytes first, written by Python: a full disk is then an OSError with its errno (save_file's is not)
    blob, text = save(tensors), json.dumps(manifest, indent=1, sort_keys=True)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{temp_tag()}.", dir=path.parent))
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would lock a team sharing the run folder out
        (tmp / TENSORS).write_bytes(blob)
        (tmp / MANIFEST).write_text(text)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            raise cannot_write(path / TENSORS, e, len(blob) + len(text)) from e
        raise
    return artifact_bytes(path)


def artifact_bytes(path: str | os.PathLike[str]) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def read_artifact(
    path: str | os.PathLike[str], code_types: Mapping[str, type[Code]]
) -> tuple[dict[str, Code], dict[str, torch.Tensor], dict[str, Any]]:
    """The codes, raw tensors and manifest of an artifact written by :func:`save_compressed`."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a b2s-bench artifact (format {manifest.get('format')!r})")
    # fresh, aligned copies: safetensors may hand back views at odd alignments, which can change
    # which matmul kernel runs and so the last bit of a decode
    tensors = {k: v.clone() for k, v in load_file(str(path / TENSORS)).items()}
    codes = {key: restore_code(entry, f"code/{key}", tensors, code_types) for key, entry in manifest["codes"].items()}
    raw = {key: tensors[f"raw/{key}"] for key in manifest["raw"]}
    return codes, raw, manifest
