"""Structured channel pruning through torch-pruning (pinned), which physically shrinks the model.

DepGraph (Fang et al., CVPR 2023) groups coupled parameters (residual adds, depthwise convs,
squeeze-excite) and removes whole channel groups with the smallest group L2 norm. The model keeps
its dense layout at smaller widths, so there are no masks or indices to store: every tensor of the
shrunk model is stored raw at fp32 and counted, and each shrunk tensor's new shape at 32 bits a
dimension. ``sparsity`` is the share of the conv/linear weights to remove: torch-pruning's
``pruning_ratio`` (the share of channels) starts at ``sparsity`` and, with ``reach_sparsity``, is
raised where the weights removed fall short of it (layers that must stay, a transformer's residual
width) and lowered where they overshoot it by more than ``REACH_OVERSHOOT`` (a plain CNN: a share r of
the channels removes about 1 − (1 − r)² of the weights, as each layer loses inputs and outputs; the zoo
UNet asked 25 % lost 43 % at r = 0.25). The try kept is the one removing the least share at or above
``sparsity``, or, when none reaches it, the most. Per layer or, with ``scope: global``, across layers.
The classifier's outputs are never pruned.

Transformers (a module with a ``qkv`` linear layer and an integer ``num_heads``, as timm's ViT,
DeiT and Swin attention): the qkv layers and their head counts go to torch-pruning
(``num_heads``), which removes the same dimensions from every head (``prune_head_dims``; whole
heads are not removed, so a rebuilt model keeps its head count and per-head tables such as
Swin's relative position bias stay valid). With ``residual: auto`` the width of the residual
stream (the channels coupled to a LayerNorm) is kept on such models: torch-pruning cannot follow
Swin's patch-merging reshape, and pruning the stream is torch-pruning's optional "bottleneck"
choice for ViT; the heads' dimensions and the MLPs' hidden units are pruned. A model the pruned
graph no longer runs is refused (``NotApplicableError``) with torch-pruning's error.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from b2s_bench import Compressed, Context, NotApplicableError, UserError, inference_state, weight_layers

from .config import PruneConfig

INSTALL = "structured pruning needs torch-pruning: `pip install torch-pruning==1.6.1` (the [pruning] extra)"

#: how many times the channel ratio is changed (raised or lowered) to reach ``sparsity`` in weights removed
RAISE_TRIES = 6
#: the highest channel ratio tried
MAX_RATIO = 0.95
#: a try removing at most this much more than ``sparsity`` (relative: 0.1 is 25 % -> up to 27.5 %) is kept
#: as it is; beyond it the channel ratio is lowered
REACH_OVERSHOOT = 0.1


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{qkv layer: head count}`` of the model's multi-head attention modules (a module with a
    ``qkv`` linear layer and an integer ``num_heads``: timm's ViT, DeiT and Swin)."""
    heads: dict[nn.Module, int] = {}
    for module in model.modules():
        qkv, num_heads = getattr(module, "qkv", None), getattr(module, "num_heads", None)
        if isinstance(qkv, nn.Linear) and isinstance(num_heads, int) and not isinstance(num_heads, bool):
            heads[qkv] = num_heads
    return heads


def compress_channels(model: nn.Module, config: PruneConfig, ctx: Context) -> Compressed:
    """Remove channels until ``config.sparsity`` of the conv/linear weights are gone (a pruned copy;
    ``model`` is left as it was). The result stores the shrunk tensors raw, against the unpruned
    architecture."""
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        raise UserError(INSTALL) from None
    skeleton = copy.deepcopy(model).cpu()  # the unpruned architecture: the artifact rebuilds from it
    original = {k: tuple(v.shape) for k, v in inference_state(model).items()}
    before = sum(m.get_parameter("weight").numel() for m in weight_layers(model).values())
    asked = config.sparsity
    pruned, ratio, best = model, asked, None
    tries, trying = 0, asked
    low, high = 0.0, None  # channel ratios known to remove less than / at least ``asked``
    while asked > 0:
        attempt = copy.deepcopy(model)  # each try starts from the unpruned model
        with _quiet_unwrapped():
            _prune(attempt, config, ctx, trying)
        removed = 1.0 - sum(m.get_parameter("weight").numel() for m in weight_layers(attempt).values()) / max(before, 1)
        tries += 1
        # not just the last try: a higher ratio can remove less (torch-pruning keeps a group it would empty)
        if best is None or _closer(removed, best, asked):
            pruned, ratio, best = attempt, trying, removed
        reached = removed >= asked
        if not config.reach_sparsity or asked <= removed <= asked * (1 + REACH_OVERSHOOT) or tries > RAISE_TRIES:
            break
        if not reached and trying >= MAX_RATIO:
            break
        low, high = (low, trying if high is None else min(high, trying)) if reached else (max(low, trying), high)
        guess = trying * asked / max(removed, 0.01 * asked)  # removed grows about in proportion to the ratio
        if high is not None and not low < guess < high:
            guess = (low + high) / 2  # outside the bracket: bisect it
        trying = min(MAX_RATIO, guess)
    state = {k: v.detach().cpu() for k, v in inference_state(pruned).items()}
    if set(state) != set(original):
        raise RuntimeError("torch-pruning changed the set of tensors; this model is not supported")
    changed = sorted(k for k, v in state.items() if tuple(v.shape) != original[k])
    kept = sum(v.numel() for v in state.values()) / max(sum(_n(s) for s in original.values()), 1)
    info: dict[str, Any] = {"structured": True, "shrunk_tensors": len(changed), "kept_fraction": kept, "channel_ratio": ratio}
    if attention_heads(skeleton):
        info["attention"] = "head dimensions" + (", residual width kept" if _keep_residual(config, skeleton) else "")
    return Compressed({}, state, skeleton, original, replaced=changed, info=info)


def _closer(removed: float, best: float, asked: float) -> bool:
    """Whether a try removing ``removed`` beats the best so far: reaching ``asked`` beats falling short;
    among tries that reach it the least removed, among those that fall short the most."""
    if (removed >= asked) != (best >= asked):
        return removed >= asked
    return removed < best if removed >= asked else removed > best


def _keep_residual(config: PruneConfig, model: nn.Module) -> bool:
    return config.residual == "keep" or (config.residual == "auto" and bool(attention_heads(model)))


def _prune(model: nn.Module, config: PruneConfig, ctx: Context, ratio: float) -> None:
    """Prune ``model`` in place at torch-pruning's channel ratio ``ratio``; refuse a model whose pruned
    graph no longer runs."""
    import torch_pruning as tp

    example = ctx.example_input(1)
    outputs = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == ctx.num_classes]
    heads = outputs[-1:] or [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1:]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ignored: list[nn.Module] = list(heads)
    if config.skip_first and layers:
        ignored.append(layers[0])
    num_heads = attention_heads(model)
    if _keep_residual(config, model):
        ignored += _residual_writers(model, example)
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        global_pruning=config.scope == "global",
        ignored_layers=ignored,
        num_heads=num_heads,
        prune_head_dims=True,
        prune_num_heads=False,
    )
    pruner.step()
    for module in model.modules():  # the attention modules' own bookkeeping follows their qkv width
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear) and qkv in num_heads:
            attention: Any = module  # plain int attributes of a third-party module
            attention.num_heads = int(pruner.num_heads[qkv])
            if isinstance(getattr(attention, "head_dim", None), int):
                attention.head_dim = qkv.out_features // (3 * attention.num_heads)
            if isinstance(getattr(attention, "attn_dim", None), int):
                attention.attn_dim = qkv.out_features // 3
    try:
        with torch.no_grad():
            model(example)
    except RuntimeError as e:
        raise NotApplicableError(
            f"torch-pruning's pruned graph of this model no longer runs ({str(e)[:160]}); "
            "with a transformer, use residual: keep (or auto), or method: magnitude"
        ) from None


def _residual_writers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The conv/linear layers whose output channels are coupled to a LayerNorm: those that write
    the residual stream of a transformer (its width is then kept)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    writers: list[nn.Module] = []
    for group in graph.get_all_groups():
        modules = [dep.target.module for dep, _ in group]
        if any(isinstance(m, nn.LayerNorm) for m in modules):
            writers += [
                dep.target.module
                for dep, _ in group
                if isinstance(dep.target.module, (nn.Linear, nn.Conv2d)) and graph.is_out_channel_pruning_fn(dep.handler)
            ]
    return list(dict.fromkeys(writers))


@contextlib.contextmanager
def _quiet_unwrapped() -> Iterator[None]:
    """torch-pruning warns that it prunes the last dimension of parameters outside layers (ViT's
    ``cls_token`` and ``pos_embed``): that dimension is the embedding, which is what it should prune."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected", category=UserWarning)
        yield


def _n(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
