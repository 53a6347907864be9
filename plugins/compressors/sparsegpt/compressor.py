"""``sparsegpt`` on a model: the calibration inputs run block by block
(:func:`b2s_bench.calibration.compress_layerwise`); each conv/linear weight, as (out, in·kh·kw), is
pruned by :func:`.solver.sparsegpt_matrix` under its input Hessian (a conv's through im2col). A layer
without a Hessian (a grouped convolution, one the inputs do not reach) is pruned by the same rule
with H = I, i.e. by magnitude per block with no update, and ``info`` names it with the reason."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, Target, weight_layers
from b2s_bench.calibration import LayerStats, compress_layerwise

from ..gptq.compressor import calibration_batches
from .codes import pruned_code
from .config import SparseGPTConfig
from .solver import sparsegpt_matrix

__all__ = ["compress", "prune_weight", "target", "sparsity_target"]


def prune_weight(weight: torch.Tensor, hessian: torch.Tensor | None, config: SparseGPTConfig) -> Code:
    """One weight's SparseGPT code; ``hessian`` None: H = I."""
    w = weight.detach().float().reshape(weight.shape[0], -1)
    h = torch.eye(w.shape[1], device=w.device) if hessian is None else hessian.to(w.device)
    pruned, keep = sparsegpt_matrix(w, h, config.sparsity, config.pattern, config.block_size, config.percdamp)
    return pruned_code(pruned.reshape(weight.shape), keep.reshape(weight.shape), config.pattern)


def compress(model: nn.Module, config: SparseGPTConfig, ctx: Context) -> Compressed:
    """Prune the model's conv and linear weights with SparseGPT, block by block on the calibration inputs."""
    targets = list(weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last))
    batches = calibration_batches(ctx, config.calibration_samples, config.batch_size, "sparsegpt")
    plain: dict[str, str] = {}

    def one(name: str, layer: nn.Module, stats: LayerStats | None) -> Code:
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        if stats is None or stats.hessian is None:
            plain[name] = "no input Hessian"
        return prune_weight(weight, None if stats is None else stats.hessian, config)

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
        "structure": config.structure,
        "calibration_samples": sum(int(b.shape[0]) for b in batches),
        "layerwise": report.info(),
        "without_hessian": {n: report.skipped.get(n, why) for n, why in plain.items()},
    }
    return Compressed.from_codes(model, codes, info=info)


def sparsity_target(asked: float, compressed: Compressed) -> Target:
    """The share of zeros among the pruned layers' weights against the asked sparsity."""
    decoded = compressed.state_dict()
    total = sum(decoded[k].numel() for k in compressed.codes)
    zeros = sum(int((decoded[k] == 0).sum()) for k in compressed.codes)
    return Target("sparsity", asked, zeros / total if total else 0.0, 0.05, "%")


def target(config: SparseGPTConfig, compressed: Compressed, model: nn.Module) -> Target:
    pattern = config.pattern
    return sparsity_target(config.sparsity if pattern is None else 1 - pattern[0] / pattern[1], compressed)
