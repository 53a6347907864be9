"""``gptq`` on a model: the calibration inputs run block by block (:func:`b2s_bench.calibration.compress_layerwise`);
each conv/linear weight is quantized by :func:`.solver.gptq_matrix` under its input Hessian (a conv's
through im2col, its weight as (out, in·kh·kw)). A layer without a Hessian (a grouped convolution,
one the calibration inputs do not reach) is rounded to nearest on the same grid (H = I), and
``info`` names it with the reason."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, weight_layers
from b2s_bench.calibration import LayerStats, compress_layerwise

from .codes import grouped_code
from .config import GPTQConfig
from .solver import gptq_matrix

__all__ = ["compress", "calibration_batches", "quantize_weight"]


def calibration_batches(ctx: Context, samples: int, batch_size: int, method: str) -> list[torch.Tensor]:
    """The calibration inputs, split into batches (a clear error when the track gives none)."""
    if ctx.calibration is None:
        raise ValueError(f"{method} needs calibration inputs (the calibration track), and none were given")
    return list(ctx.calibration(samples).split(batch_size))


def quantize_weight(weight: torch.Tensor, hessian: torch.Tensor | None, config: GPTQConfig) -> Code:
    """One weight's GPTQ code; ``hessian`` None: round to nearest on the same grid (H = I)."""
    w = weight.detach().float().reshape(weight.shape[0], -1)
    h = torch.eye(w.shape[1], device=w.device) if hessian is None else hessian.to(w.device)
    r = gptq_matrix(
        w,
        h,
        config.bits,
        config.group_size,
        config.symmetric,
        config.block_size,
        config.percdamp,
        config.act_order,
        config.scale_bits,
    )
    return grouped_code(r.q, r.scale, r.zero, r.group, config.bits, config.symmetric, config.scale_bits, tuple(weight.shape))


def compress(model: nn.Module, config: GPTQConfig, ctx: Context) -> Compressed:
    """Quantize the model's conv and linear weights with GPTQ, block by block on the calibration inputs."""
    targets = list(weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last))
    batches = calibration_batches(ctx, config.calibration_samples, config.batch_size, "gptq")
    rounded: dict[str, str] = {}

    def one(name: str, layer: nn.Module, stats: LayerStats | None) -> Code:
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if stats is None or stats.hessian is None:
            rounded[name] = "no input Hessian"
            return quantize_weight(weight, None, config)
        return quantize_weight(weight, stats.hessian, config)

    codes, report = compress_layerwise(
        model,
        batches,
        one,
        targets,
        statistics=("hessian",),
        blocks=config.blocks,
        device=ctx.device,
        sequential=config.true_sequential,
    )
    info: dict[str, Any] = {
        "weight_bits": config.bits,
        "calibration_samples": sum(int(b.shape[0]) for b in batches),
        "layerwise": report.info(),
        "round_to_nearest": {n: report.skipped.get(n, why) for n, why in rounded.items()},
    }
    return Compressed.from_codes(model, codes, info=info)
