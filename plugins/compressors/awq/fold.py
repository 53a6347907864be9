"""Where a per-input-channel scale can be folded: the operation that produces a layer's input.

AWQ and SmoothQuant scale a layer's weight by s along its input channels and its input by 1/s. The
1/s costs nothing when the operation before the layer can absorb it: a norm's weight and bias (LayerNorm,
RMSNorm, any per-channel affine layer), or the output rows of the previous linear layer when what
lies between is channel-wise and positively homogeneous (attention's weighted sum for v → o, SwiGLU's
product for up → down, a ReLU). :func:`find_folds` finds the candidates in one hooked forward pass (a
norm whose output tensor *is* the layers' input; the nearest earlier linear layer whose width matches)
and keeps a candidate only if folding random scales in [0.5, 2] leaves the model's output unchanged on a
calibration batch (relative 1e-4), so a fold is never wrong for the model at hand. Layers that read the
same norm output share one scale (q, k, v; gate, up). The rest keep their scale in their code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Fold", "find_folds", "scale_inputs", "divide_rows", "prev_keys", "input_channels", "weight_of"]


def weight_of(layer: nn.Module) -> torch.Tensor:
    """A conv/linear layer's weight (a tensor, for the type checker)."""
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight


@dataclasses.dataclass(frozen=True)
class Fold:
    """A group of layers that share one input scale, and where its inverse goes.

    Attributes:
        members: the layers (module names) scaled along their input channels.
        prev: the module whose output channels absorb 1/s (None: each member stores its scale).
        kind: "norm", "linear" or "stored".
    """

    members: tuple[str, ...]
    prev: str | None = None
    kind: str = "stored"


def scale_inputs(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """A weight times s along its input channels (dim 1)."""
    return w * s.reshape(1, -1, *([1] * (w.dim() - 2))).to(w)


def divide_rows(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """A tensor divided by s along dim 0 (a norm's weight or bias, a linear layer's output rows)."""
    return t / s.reshape(-1, *([1] * (t.dim() - 1))).to(t)


def prev_keys(model: nn.Module, prev: str) -> list[str]:
    """The state keys of ``prev`` that absorb 1/s: its weight and, if it has one, its bias."""
    module = model.get_submodule(prev)
    return [f"{prev}.{p}" for p in ("weight", "bias") if isinstance(getattr(module, p, None), torch.Tensor)]


def input_channels(layer: nn.Module) -> int | None:
    """The input channels a per-channel scale of ``layer`` has (None: a grouped convolution, left alone)."""
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups != 1:
        return None
    return int(weight_of(layer).shape[1])


def _affine(module: nn.Module) -> bool:
    """A leaf with a 1-D weight that is not a conv/linear layer: a norm or another per-channel affine map."""
    weight = getattr(module, "weight", None)
    return (
        not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))
        and next(module.children(), None) is None
        and isinstance(weight, nn.Parameter)
        and weight.dim() == 1
    )


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return _first_tensor(out.logits)
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    raise TypeError(f"cannot read the model's output ({type(out).__name__}) to check a fold")


@torch.no_grad()
def _fold_holds(model: nn.Module, fold: Fold, batch: torch.Tensor, reference: torch.Tensor, gen: torch.Generator) -> bool:
    """Whether folding random scales along ``fold`` leaves the model's output unchanged."""
    assert fold.prev is not None
    first = model.get_submodule(fold.members[0])
    channels = input_channels(first)
    assert channels is not None
    s = torch.empty(channels).uniform_(0.5, 2.0, generator=gen)
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    params = {k: tensors[k] for k in [*(f"{m}.weight" for m in fold.members), *prev_keys(model, fold.prev)]}
    saved = {k: p.detach().clone() for k, p in params.items()}
    try:
        for m in fold.members:
            params[f"{m}.weight"].copy_(scale_inputs(saved[f"{m}.weight"], s))
        for k in prev_keys(model, fold.prev):
            params[k].copy_(divide_rows(saved[k], s))
        out = _first_tensor(model(batch)).float()
    finally:
        for k, p in params.items():
            p.copy_(saved[k])
    tolerance = 1e-4 * float(reference.abs().max()) + 1e-6
    return bool(out.shape == reference.shape and float((out - reference).abs().max()) <= tolerance)


@torch.no_grad()
def find_folds(
    model: nn.Module, names: Sequence[str], batch: torch.Tensor, gen: torch.Generator, enabled: bool = True
) -> tuple[list[Fold], dict[str, str]]:
    """The scale groups of ``names`` (layers in model order), and why each stored scale was not folded.

    ``batch`` (on the model's device) is run once to find the candidates and once per candidate to check it.
    """
    if not enabled:
        return [Fold((n,)) for n in names], dict.fromkeys(names, "fold: false")
    outputs: dict[int, str] = {}
    inputs: dict[str, int] = {}
    alive: list[torch.Tensor] = []  # keeps every hooked tensor alive, so no id is reused during the pass

    def on_output(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, torch.Tensor):
                alive.append(out)
                outputs.setdefault(id(out), name)

        return hook

    def on_input(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor) and name not in inputs:
                alive.append(args[0])
                inputs[name] = id(args[0])

        return hook

    handles = [m.register_forward_hook(on_output(n)) for n, m in model.named_modules() if _affine(m)]
    handles += [model.get_submodule(n).register_forward_pre_hook(on_input(n)) for n in names]
    try:
        reference = _first_tensor(model(batch)).float()
    finally:
        for h in handles:
            h.remove()
    widths = {n: input_channels(model.get_submodule(n)) for n in names}
    why: dict[str, str] = {}
    by_input: dict[int, list[str]] = {}
    for n in names:
        if n in inputs:
            by_input.setdefault(inputs[n], []).append(n)
    candidates: list[Fold] = []
    grouped: set[str] = set()
    for key, members in by_input.items():
        prev = outputs.get(key)
        if prev is None:
            continue
        weight = model.get_submodule(prev).weight
        if isinstance(weight, torch.Tensor) and all(widths[m] == weight.numel() for m in members):
            candidates.append(Fold(tuple(members), prev, "norm"))
            grouped.update(members)
    used: set[str] = set()
    for i, n in enumerate(names):
        layer = model.get_submodule(n)
        if n in grouped or not isinstance(layer, nn.Linear):
            continue
        earlier = [p for p in names[:i] if isinstance(model.get_submodule(p), nn.Linear)]
        if earlier and model.get_submodule(earlier[-1]).out_features == layer.in_features and earlier[-1] not in used:
            candidates.append(Fold((n,), earlier[-1], "linear"))
            used.add(earlier[-1])
    folds: list[Fold] = []
    for fold in candidates:
        if _fold_holds(model, fold, batch, reference, gen):
            folds.append(fold)
        else:
            why.update(dict.fromkeys(fold.members, f"folding into {fold.prev} changes the model's output"))
    folded = {m for f in folds for m in f.members}
    for n in names:
        if n in folded:
            continue
        if widths[n] is None:
            why[n] = "a grouped convolution: no per-channel scale"
        else:
            why.setdefault(n, "no norm or linear layer right before it")
        folds.append(Fold((n,)))
    order = {n: i for i, n in enumerate(names)}
    return sorted(folds, key=lambda f: order[f.members[0]]), why
