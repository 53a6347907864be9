"""Structured channel (filter) pruning through torch-pruning (pinned), which physically shrinks the model.

DepGraph (Fang et al., CVPR 2023) groups coupled parameters (residual adds, depthwise convs,
squeeze-excite) and removes whole channel groups with the smallest group L2 norm. The model keeps
its dense layout at smaller widths, so there are no masks or indices to store: every tensor of the
shrunk model is stored raw at fp32 and counted, and each shrunk tensor's new shape at 32 bits a
dimension. ``sparsity`` is the fraction of channels removed
(torch-pruning's ``pruning_ratio``), per layer or, with ``scope: global``, across layers. The
classifier's outputs are never pruned.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from b2s_bench import Compressed, Context, UserError, inference_state

from .config import PruneConfig

INSTALL = "structured pruning needs torch-pruning: `pip install torch-pruning==1.6.1` (the [pruning] extra)"


def compress_channels(model: nn.Module, config: PruneConfig, ctx: Context) -> Compressed:
    """Remove ``config.sparsity`` of the channels in place (``model`` is shrunk); the result stores
    the shrunk tensors raw, against the unpruned architecture."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise UserError(INSTALL) from None
    skeleton = copy.deepcopy(model).cpu()  # the unpruned architecture: the artifact rebuilds from it
    original = {k: tuple(v.shape) for k, v in inference_state(model).items()}
    outputs = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == ctx.num_classes]
    heads = outputs[-1:] or [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1:]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ignored = list(heads)
    if config.skip_first and layers:
        ignored.append(layers[0])
    if config.sparsity > 0:
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs=ctx.example_input(1),
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=config.sparsity,
            global_pruning=config.scope == "global",
            ignored_layers=ignored,
        )
        pruner.step()
    state = {k: v.detach().cpu() for k, v in inference_state(model).items()}
    if set(state) != set(original):
        raise RuntimeError("torch-pruning changed the set of tensors; this model is not supported")
    changed = sorted(k for k, v in state.items() if tuple(v.shape) != original[k])
    kept = sum(v.numel() for v in state.values()) / max(sum(_n(s) for s in original.values()), 1)
    info: dict[str, Any] = {"structured": True, "shrunk_tensors": len(changed), "kept_fraction": kept}
    return Compressed({}, state, skeleton, original, replaced=changed, info=info)


def _n(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
