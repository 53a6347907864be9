"""Trained quantization (Han et al. 2016, Section 3.2): the shared values fine-tuned on the training data.

The indices stay as k-means left them; each shared value moves by the sum of the loss gradients
of every weight that shares it (the gather ``codebook[indices]`` back-propagates exactly that sum),
with plain gradient steps ``c ← c − lr · Σ ∂L/∂w`` as the paper writes them. Our choices (the paper
does not fix them): only the shared values train (biases, BatchNorm and raw tensors stay), the
model runs in eval mode (BatchNorm statistics fixed), the loss is the supervised loss of the
output's layout on the training split's labels (distill's ``labels_loss``: cross-entropy, per pixel
for masks, per position for tokens), and a pinned zero centroid (``keep_zeros``) stays at 0.

Two ways in: as the first stage, :func:`~.compressor.compress` fine-tunes the codebooks of the
model's weights; as a later stage (after ``prune``, as in Deep Compression), :func:`refine` fine-tunes
the codebooks of the earlier codes' shared payload (prune's kept values) through the earlier code's
own decoding (prune's positions, kept as they are: a pruned weight is never written, so it stays 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from b2s_bench import Code, Compressed, Context

from ..distill.student import labels_loss
from .codes import ShareCode
from .config import ShareConfig

__all__ = ["finetune_codebooks", "refine"]

#: builds the model's weights (by state_dict key) from each code's shared values ``codebook[indices]``
Assemble = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


def _no_training_data() -> ValueError:
    return ValueError(
        "share with finetune_epochs > 0 needs the training split (the training track), and none was "
        "given; set finetune_epochs: 0 for data-free weight sharing"
    )


def finetune_codebooks(
    model: nn.Module,
    codes: Mapping[str, ShareCode],
    config: ShareConfig,
    ctx: Context,
    assemble: Assemble | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fine-tune the codebooks of ``codes`` on ``ctx.training``: the trained codebooks (by the names of
    ``codes``, rounded to ``codebook_bits``; the codes are not changed) and the facts for the record
    (``first_loss``: the first batch's loss before any step; ``epoch_loss``: the mean loss per epoch
    while training; steps).

    ``assemble`` turns the codes' shared values (``codebook[indices]`` in each code's shape) into the
    model's weights by state_dict key; None: the codes are the weights themselves (keyed alike).
    """
    if ctx.training is None:
        raise _no_training_data()
    device = ctx.device
    model = model.to(device).eval()
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    indices = {k: c.indices.to(device) for k, c in codes.items()}
    books = {k: nn.Parameter(c.codebook.to(device, torch.float32).clone()) for k, c in codes.items()}
    pinned = {k: bool(c.fit and c.fit.get("zero_pinned")) for k, c in codes.items()}
    fixed = {
        k: (c.codebook == 0 if pinned[k] else torch.zeros_like(c.codebook, dtype=torch.bool)).to(device) for k, c in codes.items()
    }
    optimizer = torch.optim.SGD(list(books.values()), lr=config.finetune_lr)
    losses: list[float] = []
    steps, first = 0, None  # first: None when no batch came
    for _ in range(config.finetune_epochs):
        total, batches = 0.0, 0
        for batch, (x, y) in enumerate(ctx.training()):
            if config.finetune_batches is not None and batch >= config.finetune_batches:
                break
            shared = {k: books[k][indices[k]].reshape(codes[k].orig_shape) for k in codes}
            weights = shared if assemble is None else {k: w.to(device) for k, w in assemble(shared).items()}
            out = functional_call(model, weights, (x.to(device),), strict=False)
            loss = labels_loss(out, y.to(device))
            optimizer.zero_grad()
            loss.backward()
            for k, book in books.items():  # the pinned zero keeps pruned weights exactly zero
                if book.grad is None:
                    raise RuntimeError(f"share: the loss does not depend on the codebook of {k}: its weights are not the model's")
                book.grad[fixed[k]] = 0.0
            optimizer.step()
            if steps == 0:
                first = float(loss.detach())  # before any step: the k-means codebooks' loss on that batch
            total, batches, steps = total + float(loss.detach()), batches + 1, steps + 1
        losses.append(total / max(batches, 1))
    for name, p in model.named_parameters():
        p.requires_grad_(trainable[name])
    stored = torch.float16 if config.codebook_bits == 16 else torch.float32
    trained = {k: book.detach().cpu().to(stored).float() for k, book in books.items()}
    facts: dict[str, Any] = {
        "epochs": config.finetune_epochs,
        "steps": steps,
        "lr": config.finetune_lr,
        "first_loss": first,
        "epoch_loss": losses,
    }
    return trained, facts


def _nested_parts(code: Code) -> tuple[Code, dict[str, Code]] | None:
    """The outer code and the inner codes of a code a later stage nested (the core's ``NestedCode``,
    kind "nested": the earlier code, its payload stored by this stage's codes), else None."""
    if code.kind != "nested":
        return None
    outer, inner = getattr(code, "outer", None), getattr(code, "inner", None)
    if not isinstance(outer, Code) or not isinstance(inner, dict):
        raise TypeError(f"a nested code without an outer code and inner codes: {type(code).__name__}")
    return outer, inner


def _builder(key: str, outer: Code, inner: Mapping[str, Code]) -> Callable[[Mapping[str, torch.Tensor]], torch.Tensor]:
    """How the weight ``key`` is made from its shared payload, differentiably: through the earlier
    code's own ``replace_payload(...).decode()``, or, where that decoding places one payload tensor's
    elements at fixed positions (prune: each kept value at its position, fillers nowhere), through
    that placement, found once by decoding a probe (1, 2, ..., n) and checked on the code's own
    values, so that a step does not rebuild the positions (prune's relative indices) every time."""
    fixed = {n: c.decode() for n, c in inner.items() if not isinstance(c, ShareCode)}  # fp32 kept: decoded once
    names = [n for n, c in inner.items() if isinstance(c, ShareCode)]
    placed = _placement(outer, names[0], inner[names[0]].decode()) if len(names) == 1 and not fixed else None

    def build(values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if placed is not None:
            positions, sources = placed
            flat = values[f"{key}/{names[0]}"].reshape(-1)
            empty = torch.zeros(outer.shape, dtype=flat.dtype, device=flat.device).reshape(-1)
            return empty.scatter(0, positions.to(flat.device), flat[sources.to(flat.device)]).reshape(outer.shape)
        payload = {n: values[f"{key}/{n}"].cpu() for n in names}
        weight = outer.replace_payload({**fixed, **payload}).decode()
        if not weight.requires_grad:
            raise ValueError(
                f"share: {key}'s earlier code ({type(outer).__name__}) decodes its payload without gradients, "
                "so its shared values cannot be fine-tuned here; set finetune_epochs: 0 for this pipeline"
            )
        return weight

    return build


def _placement(outer: Code, name: str, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(positions, sources)`` when ``outer`` decodes its payload tensor ``name`` by writing element
    ``sources[i]`` at the flat position ``positions[i]`` and zeros elsewhere (checked on a probe and on
    ``current``, the payload's present values); None for any other decoding (then it runs every step)."""
    n = current.numel()
    if n == 0 or n >= 2**24:  # the probe's integers must be exact in float32
        return None
    with torch.no_grad():
        probe = torch.arange(1, n + 1, dtype=torch.float32).reshape(current.shape)
        decoded = outer.replace_payload({name: probe}).decode().reshape(-1)
        positions = torch.nonzero(decoded).reshape(-1)
        ids = decoded[positions]
        sources = ids.round().to(torch.int64) - 1
        if not torch.equal(ids, sources.float() + 1) or int(sources.min()) < 0 or int(sources.max()) >= n:
            return None
        if torch.unique(sources).numel() != sources.numel():
            return None
        expected = torch.zeros(decoded.numel()).scatter(0, positions, current.reshape(-1).float()[sources])
        if not torch.equal(outer.replace_payload({name: current}).decode().reshape(-1).float(), expected):
            return None
    return positions, sources


def refine(compressed: Compressed, model: nn.Module | None, config: ShareConfig, ctx: Context) -> Compressed:
    """Deep Compression's trained quantization as a later pipeline stage (``CompressorSpec.refine``).

    ``compressed`` holds the earlier stage's codes with their payload shared by this stage
    (:func:`~.compressor.compress_tensor`, k-means per tensor). With ``finetune_epochs > 0`` the shared
    values of every :class:`ShareCode` among them are trained on the training split's loss through
    the earlier code's decoding (:func:`_builder`: prune places its kept values at their positions),
    the indices and the earlier code's positions as they are. The rest of the model is ``compressed``'s own (its raw tensors), so
    ``model`` (the dense one) is not used. Returns ``compressed`` itself for ``finetune_epochs: 0``.
    """
    del model  # the shared values are trained in the compressed model, not the dense one
    if config.finetune_epochs == 0:
        return compressed
    if ctx.training is None:
        raise _no_training_data()
    shared: dict[str, ShareCode] = {}  # "key/payload name" -> the code of that payload tensor
    parts: dict[str, tuple[Code, dict[str, Code]]] = {}
    for key, code in compressed.codes.items():
        found = _nested_parts(code)
        if found is None:
            continue
        inner = found[1]
        names = [n for n, c in inner.items() if isinstance(c, ShareCode)]
        if names:
            parts[key] = found
            shared.update({f"{key}/{n}": inner[n] for n in names})  # type: ignore[misc]
    if not shared:
        ctx.log("share: no tensor was shared (all kept at fp32), so nothing to fine-tune")
        return compressed
    builders = {key: _builder(key, outer, inner) for key, (outer, inner) in parts.items()}

    def assemble(values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: build(values) for key, build in builders.items()}

    network = compressed.module()  # the model as the earlier stages and the k-means left it
    trained, facts = finetune_codebooks(network, shared, config, ctx, assemble)
    codes = dict(compressed.codes)
    for key, (_, inner) in parts.items():
        new_inner = {
            n: dataclasses.replace(c, codebook=trained[f"{key}/{n}"]) if isinstance(c, ShareCode) else c for n, c in inner.items()
        }
        codes[key] = dataclasses.replace(compressed.codes[key], inner=new_inner)  # type: ignore[type-var]
    refined = compressed.with_codes(codes)
    refined.info = {"finetune": {**facts, "tensors": len(shared)}, "data_track": "training"}
    return refined
