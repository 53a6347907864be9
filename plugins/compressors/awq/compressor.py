"""``awq`` on a model, block by block (:func:`b2s_bench.calibration.calibrate_blocks`): find where scales
fold (one forward of the dense model), then for each block search each group's α on the block's
inputs, fold or keep the scales, clip, and move on with the scaled and clipped fp block (as the
authors' code: later blocks see the earlier ones scaled and clipped, not yet quantized); at the end,
round every weight to nearest on the grid. The caller's model is restored afterwards."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, inference_state, skeleton_of, weight_layers
from b2s_bench.calibration import BlockStep, calibrate_blocks
from b2s_bench.metrics import REPARAMETRIZED

from .codes import AWQCode
from .config import AWQConfig
from .fold import Fold, divide_rows, find_folds, input_channels, prev_keys, scale_inputs, weight_of
from .search import rtn, search_clip, search_scale
from .stats import keep_samples

__all__ = ["compress", "calibration_setup", "working_state", "compressed_from"]


def calibration_setup(
    model: nn.Module, ctx: Context, samples: int, batch_size: int, who: str
) -> tuple[list[str], list[str], list[torch.Tensor]]:
    """The weight keys, their layers' names and the calibration inputs in batches (a clear error without
    them); the model is put in eval mode."""
    if ctx.calibration is None:
        raise ValueError(f"{who} needs calibration inputs (the calibration track), and none were given")
    model.eval()
    keys = list(weight_layers(model))
    return keys, [k.rpartition(".")[0] for k in keys], list(ctx.calibration(samples).split(batch_size))


def working_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's inference state on the CPU, floats as fp32: what scales are folded into."""
    state = {k: v.detach().cpu().clone() for k, v in inference_state(model).items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def compressed_from(
    model: nn.Module, codes: dict[str, Code], state: dict[str, torch.Tensor], info: dict[str, Any], **activations: Any
) -> Compressed:
    """``codes``, and the rest of ``state`` stored raw at the model's own dtypes (a folded norm included)."""
    dtypes = {k: v.dtype for k, v in inference_state(model).items()}
    raw = {k: v.to(dtypes[k]) for k, v in state.items() if k not in codes}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return Compressed(codes, raw, skeleton_of(model), shapes, info=info, **activations)


def _inside(name: str, block: str) -> bool:
    return not block or name == block or name.startswith(block + ".")


class _Pass:
    """The state of one AWQ pass: the scales found, the weights to quantize, the originals to restore."""

    def __init__(self, model: nn.Module, config: AWQConfig, ctx: Context, folds: list[Fold]):
        self.model, self.config, self.ctx = model, config, ctx
        self.group_of = {f.members[0]: f for f in folds}
        self.live = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        self.originals: dict[str, torch.Tensor] = {}
        self.scales: dict[str, torch.Tensor] = {}
        self.stored: set[str] = set()
        self.to_quantize: dict[str, torch.Tensor] = {}  # a stored-scale layer's clip(W·diag(s)), exactly
        self.groups: list[dict[str, Any]] = []
        self.clipped: list[str] = []
        self.gen = ctx.generator(31)

    def _set(self, key: str, value: torch.Tensor) -> None:
        tensor = self.live[key]
        self.originals.setdefault(key, tensor.detach().clone())
        tensor.copy_(value.to(tensor))

    def _weight(self, name: str) -> torch.Tensor:
        return weight_of(self.model.get_submodule(name)).detach().float().cpu()

    def restore(self) -> None:
        for key, tensor in self.originals.items():
            self.live[key].copy_(tensor)

    def __call__(self, step: BlockStep) -> None:
        c = self.config
        samples = keep_samples(step.layers, step.forward, len(step.inputs), c.search_tokens, self.gen)
        for name in step.layers:
            fold = self.group_of.get(name)
            stats = step.stats.get(name)
            if fold is None or stats is None or stats.mean_abs is None or name not in samples:
                continue
            if input_channels(step.layers[name]) is None:
                continue  # a grouped convolution: round-to-nearest
            layers = {m: self.model.get_submodule(m) for m in fold.members}
            x = samples[name].to(self.ctx.device)
            alpha, s, _ = search_scale(layers, stats.mean_abs.float().cpu(), x, c)
            # the authors fold within a block; a chained block's inputs are fixed, so 1/s may only go to an
            # operation inside it (or anywhere when the block's inputs are captured from the whole model)
            folds = fold.prev is not None and (not step.block.chained or _inside(fold.prev, step.block.name))
            self.groups.append(
                {"layers": list(fold.members), "alpha": alpha, "folded_into": fold.prev if alpha and folds else None}
            )
            if alpha == 0:  # s = 1: round-to-nearest, nothing to fold or store
                continue
            for m in fold.members:
                self.scales[m] = s
                if folds:
                    self._set(f"{m}.weight", scale_inputs(self._weight(m), s))
            if folds:
                assert fold.prev is not None
                for key in prev_keys(self.model, fold.prev):
                    self._set(key, divide_rows(self.live[key].detach().float().cpu(), s))
            else:
                self.stored.update(fold.members)
        if c.auto_clip:
            for name, layer in step.layers.items():
                if isinstance(layer, nn.Linear) and name in samples and not any(p in name for p in c.clip_skip):
                    self._clip(name, samples[name][: c.clip_tokens])

    def _clip(self, name: str, x: torch.Tensor) -> None:
        """Clip the scaled weight on the scaled input; the live layer keeps its fp function."""
        s = self.scales.get(name)
        w = self._weight(name)
        if s is not None and name in self.stored:  # the live weight is W: clip W·diag(s), keep it / s
            clipped = search_clip(scale_inputs(w, s), x / s, self.config)
            self.to_quantize[name] = clipped
            self._set(f"{name}.weight", scale_inputs(clipped, 1.0 / s))
        else:  # folded (the live weight is already W·diag(s), its input x/s) or unscaled
            self._set(f"{name}.weight", search_clip(w, x / s if s is not None else x, self.config))
        self.clipped.append(name)

    def code(self, name: str) -> Code:
        s = self.scales.get(name)
        if name not in self.stored or s is None:
            return rtn(self._weight(name), self.config)
        scaled = self.to_quantize.get(name)
        code = rtn(scaled if scaled is not None else scale_inputs(self._weight(name), s), self.config)
        fields = {f.name: getattr(code, f.name) for f in dataclasses.fields(code)}
        return AWQCode(**fields, channel_scale=s.clone())


@torch.no_grad()
def compress(model: nn.Module, config: AWQConfig, ctx: Context) -> Compressed:
    """AWQ: activation-aware scales per input channel, searched on calibration inputs, then INT-b groups."""
    keys, names, batches = calibration_setup(model, ctx, config.calibration_samples, config.batch_size, "awq")
    folds, why = find_folds(model, names, batches[0][:4].to(ctx.device), ctx.generator(37), config.fold)
    run = _Pass(model, config, ctx, folds)
    try:
        report = calibrate_blocks(model, batches, run, statistics=("mean_abs",), device=ctx.device)
        codes = {key: run.code(name) for key, name in zip(keys, names, strict=True)}
        info: dict[str, Any] = {
            "weight_bits": config.bits,
            "group_size": config.group_size,
            "calibration_samples": sum(int(b.shape[0]) for b in batches),
            "layerwise": report.info(),
            "groups": run.groups,
            "folded_layers": sum(len(g["layers"]) for g in run.groups if g["folded_into"]),
            "stored_scales": sorted(run.stored),
            "not_folded": why,
            "clipped_layers": len(run.clipped),
            "unscaled": sorted(set(names) - set(run.scales)),  # α = 0, grouped convolutions, layers not reached
        }
        if info["folded_layers"]:
            info[REPARAMETRIZED] = f"AWQ folded per-channel scales into {info['folded_layers']} layer(s)' predecessors"
        return compressed_from(model, dict(codes), working_state(model), info)
    finally:
        run.restore()
