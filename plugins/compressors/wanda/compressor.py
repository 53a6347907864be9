"""``wanda`` (Sun et al., ICLR 2024, "A Simple and Effective Pruning Approach for Large Language
Models"): each weight's score is |W_ij| · ||X_j||₂, the norm of its input column over all calibration
rows (tokens, or im2col positions of a conv); the lowest scores are pruned, compared within each output
row (or N:M group); the kept weights are not updated. Block by block on the calibration inputs
(:func:`b2s_bench.calibration.compress_layerwise`), so later blocks see the pruned earlier ones. A
layer without input norms (a grouped convolution, one the inputs do not reach) is pruned with
||X_j|| = 1 (magnitude per row), and ``info`` names it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, Target, weight_layers
from b2s_bench.calibration import LayerStats, compress_layerwise

from ..gptq.compressor import calibration_batches
from ..sparsegpt.compressor import sparsity_target
from ..sparsegpt.solver import nm_keep
from .codes import pruned_code
from .config import WandaConfig

__all__ = ["compress", "wanda_keep", "prune_weight", "target"]


def wanda_keep(
    w: torch.Tensor,
    col_norm: torch.Tensor | None,
    sparsity: float = 0.5,
    pattern: tuple[int, int] | None = None,
    comparison: str = "row",
) -> torch.Tensor:
    """The keep-mask of ``w`` (rows, cols) under Wanda's scores |W_ij|·||X_j||₂ (``col_norm`` None: 1)."""
    score = w.detach().abs().float()
    if col_norm is not None:
        score = score * col_norm.float().to(score.device)[None, :]
    if pattern is not None:
        return nm_keep(score, *pattern)
    keep = torch.ones_like(score, dtype=torch.bool)
    if comparison == "row":
        k = round(sparsity * score.shape[1])
        if k:
            keep.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, False)
    else:
        k = round(sparsity * score.numel())
        if k:
            keep.view(-1)[torch.topk(score.reshape(-1), k, largest=False).indices] = False
    return keep


def prune_weight(weight: torch.Tensor, col_norm: torch.Tensor | None, config: WandaConfig) -> Code:
    w = weight.detach().float().reshape(weight.shape[0], -1)
    keep = wanda_keep(w, col_norm, config.sparsity, config.pattern, config.comparison)
    return pruned_code(weight.detach(), keep.reshape(weight.shape), config.pattern)


def compress(model: nn.Module, config: WandaConfig, ctx: Context) -> Compressed:
    """Prune the model's conv and linear weights with Wanda, block by block on the calibration inputs."""
    targets = list(weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last))
    batches = calibration_batches(ctx, config.calibration_samples, config.batch_size, "wanda")
    plain: dict[str, str] = {}

    def one(name: str, layer: nn.Module, stats: LayerStats | None) -> Code:
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        norm = None if stats is None else stats.col_norm
        if norm is None:
            plain[name] = "no input norms"
        return prune_weight(weight, norm, config)

    codes, report = compress_layerwise(
        model,
        batches,
        one,
        targets,
        statistics=("col_norm",),
        blocks=config.blocks,
        device=ctx.device,
        sequential=config.true_sequential,
    )
    info: dict[str, Any] = {
        "structure": config.structure,
        "calibration_samples": sum(int(b.shape[0]) for b in batches),
        "layerwise": report.info(),
        "magnitude_only": {n: report.skipped.get(n, why) for n, why in plain.items()},
    }
    return Compressed.from_codes(model, codes, info=info)


def target(config: WandaConfig, compressed: Compressed, model: nn.Module) -> Target:
    pattern = config.pattern
    return sparsity_target(config.sparsity if pattern is None else 1 - pattern[0] / pattern[1], compressed)
