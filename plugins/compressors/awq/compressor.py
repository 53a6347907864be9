"""``awq`` on a model: capture the layers' inputs, find where scales fold, search each group's α, fold
or store the scales, clip, and round to nearest on the grid."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, inference_state, skeleton_of, weight_layers

from .codes import AWQCode
from .config import AWQConfig
from .fold import divide_rows, find_folds, input_channels, prev_keys, scale_inputs
from .search import rtn, search_clip, search_scale
from .stats import LayerInputs, capture_inputs

__all__ = ["compress", "calibration_batches", "working_state", "compressed_from"]


def working_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's inference state on the CPU, floats as fp32: what scales are folded into."""
    state = {k: v.detach().cpu() for k, v in inference_state(model).items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def compressed_from(
    model: nn.Module, codes: dict[str, Code], state: dict[str, torch.Tensor], info: dict[str, Any], **activations: Any
) -> Compressed:
    """``codes``, and the rest of ``state`` stored raw at the model's own dtypes (a folded norm included)."""
    dtypes = {k: v.dtype for k, v in inference_state(model).items()}
    raw = {k: v.to(dtypes[k]) for k, v in state.items() if k not in codes}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return Compressed(codes, raw, skeleton_of(model), shapes, info=info, **activations)


def calibration_batches(ctx: Context, samples: int, batch_size: int, who: str) -> list[torch.Tensor]:
    """The calibration inputs, in batches; a clear error without them."""
    if ctx.calibration is None:
        raise ValueError(f"{who} needs calibration inputs (the calibration track), and none were given")
    return list(ctx.calibration(samples).split(batch_size))


def _search_inputs(inputs: LayerInputs, device: torch.device) -> torch.Tensor:
    return inputs.sample.to(device)


def _clip_inputs(inputs: LayerInputs, s: torch.Tensor, tokens: int) -> torch.Tensor:
    return inputs.sample[:tokens].float() / s


@torch.no_grad()
def compress(model: nn.Module, config: AWQConfig, ctx: Context) -> Compressed:
    """AWQ: activation-aware scales per input channel, searched on calibration inputs, then INT-b groups."""
    model = model.eval()
    keys = list(weight_layers(model))
    names = [k.rpartition(".")[0] for k in keys]
    batches = calibration_batches(ctx, config.calibration_samples, config.batch_size, "awq")
    stats = capture_inputs(model, names, batches, ctx.device, config.search_tokens, ctx.generator(31))
    folds, why = find_folds(model, names, batches[0][:4].to(ctx.device), ctx.generator(37), config.fold)
    state = working_state(model)
    scales: dict[str, torch.Tensor] = {}
    stored: set[str] = set()
    groups: list[dict[str, Any]] = []
    for fold in folds:
        first = fold.members[0]
        if first not in stats or input_channels(model.get_submodule(first)) is None:
            continue  # never reached by the data, or a grouped convolution: round-to-nearest
        layers = {m: model.get_submodule(m) for m in fold.members}
        alpha, s, _ = search_scale(layers, stats[first].mean_abs, _search_inputs(stats[first], ctx.device), config)
        groups.append({"layers": list(fold.members), "alpha": alpha, "folded_into": fold.prev if alpha else None})
        if alpha == 0:  # s = 1: round-to-nearest, nothing to fold or store
            continue
        for m in fold.members:
            scales[m] = s
            state[f"{m}.weight"] = scale_inputs(state[f"{m}.weight"], s)
        if fold.prev is not None:
            for key in prev_keys(model, fold.prev):
                state[key] = divide_rows(state[key], s)
        else:
            stored.update(fold.members)
    codes: dict[str, Code] = {}
    clipped = []
    for key, name in zip(keys, names, strict=True):
        w = state[key]
        layer = model.get_submodule(name)
        channel = scales.get(name)
        if config.auto_clip and isinstance(layer, nn.Linear) and name in stats and not _skips_clip(name, config):
            x = _clip_inputs(stats[name], channel if channel is not None else torch.ones(w.shape[1]), config.clip_tokens)
            w = search_clip(w, x, config)
            clipped.append(name)
        code = rtn(w, config)
        if name in stored and channel is not None:
            fields = {f.name: getattr(code, f.name) for f in dataclasses.fields(code)}
            code = AWQCode(**fields, channel_scale=channel.clone())
        codes[key] = code
    info: dict[str, Any] = {
        "weight_bits": config.bits,
        "group_size": config.group_size,
        "calibration_samples": sum(int(b.shape[0]) for b in batches),
        "groups": groups,
        "folded_layers": sum(len(g["layers"]) for g in groups if g["folded_into"]),
        "stored_scales": sorted(stored),
        "not_folded": why,
        "clipped_layers": len(clipped),
        "unscaled": sorted(set(names) - set(scales)),  # α = 0, grouped convolutions, layers the data never reached
    }
    return compressed_from(model, codes, state, info)


def _skips_clip(name: str, config: AWQConfig) -> bool:
    return any(part in name for part in config.clip_skip)
