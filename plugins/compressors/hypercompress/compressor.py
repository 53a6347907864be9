"""The compressor: every parameter with at least ``min_numel`` entries encoded on its own, fully
vectorized (:mod:`.codebook`); the others, and BatchNorm running statistics, stay raw."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context

from .codebook import encode_pairs, winding_index
from .codes import LatticeCode, RawCode, WindingCode
from .config import HyperCompressConfig

__all__ = ["encode_tensor", "targets", "compress", "compress_tensor"]


def encode_tensor(w: torch.Tensor, config: HyperCompressConfig) -> tuple[Code, dict[str, Any]]:
    """One tensor's code and its facts for the record (MAE over the tensor, bits per weight, ...)."""
    w = w.detach().float().cpu()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("hypercompress cannot encode a tensor with non-finite values")
    shape = tuple(w.shape)
    if config.variant == "released":
        side = config.side(w)
        flat = w.reshape(-1)
        idx, classes, center, farthest, pad, facts = encode_pairs(flat, config.n, side, config.class_max, config.loss_threshold)
        code: Code = LatticeCode(idx, config.n, side, classes, center, farthest, pad, shape)
        facts = {"classes": classes, "outer_pairs": facts["outer_pairs"], "rect_l": side}
    else:
        flat = w.reshape(-1).double()
        lo32, hi32 = flat.min().float(), flat.max().float()
        lo, hi = float(lo32), float(hi32)
        u = (flat - lo) / (hi - lo) if hi > lo else torch.zeros_like(flat)
        pad = (-flat.numel()) % config.k
        u = torch.cat([u, u.new_zeros(pad)]).reshape(-1, config.k)
        idx = winding_index(config.k, config.n_c, config.delta).nearest(u)
        code = WindingCode(idx, config.k, config.n_c, config.delta, lo, hi, pad, shape)
        facts = {}
    err = (code.decode() - w).abs()
    facts["mae"] = float(err.mean())
    facts["rel_error"] = float(err.norm() / w.norm().clamp(min=1e-30))
    facts["bits_per_weight"] = code.bits().total / max(w.numel(), 1)
    return code, facts


def targets(model: nn.Module, min_numel: int) -> tuple[list[str], list[str]]:
    """(parameters to encode, parameters too small to encode); buffers are never encoded."""
    names = [k for k, _ in model.named_parameters()]
    state = model.state_dict()
    big = [k for k in names if k in state and state[k].numel() >= min_numel and state[k].is_floating_point()]
    return big, [k for k in names if k not in big]


def compress(model: nn.Module, config: HyperCompressConfig, ctx: Context) -> Compressed:
    """Encode the model's parameters; with ``set_loss_limit``, layers over the limit stay fp32."""
    keys, small = targets(model, config.min_numel)
    state = model.state_dict()
    codes: dict[str, Code] = {}
    layers: dict[str, dict[str, Any]] = {}
    fallback: list[str] = []
    bar = ctx.progress(len(keys), f"hypercompress ({config.variant})")
    for key in keys:  # one tensor at a time; each tensor is encoded fully vectorized
        code, facts = encode_tensor(state[key], config)
        if config.set_loss_limit and facts["mae"] > config.loss_limit:
            fallback.append(key)
            facts["raw_fallback"] = True
        else:
            codes[key] = code
        layers[key] = facts
        bar.update()
    bar.close()
    coded = [layers[k] for k in codes]
    info = {
        "variant": config.variant,
        "layers": layers,
        "raw_fallback": fallback,
        "raw_small": small,
        "mae_mean": sum(f["mae"] for f in coded) / len(coded) if coded else 0.0,
        "bits_per_weight_coded": (sum(c.bits().total for c in codes.values()) / max(sum(state[k].numel() for k in codes), 1)),
    }
    if config.variant == "released":
        info["classes"] = {k: layers[k]["classes"] for k in codes}
    return Compressed.from_codes(model, codes, info=info)


def compress_tensor(name: str, tensor: torch.Tensor, config: HyperCompressConfig, ctx: Context) -> Code:
    """A later pipeline stage: encode one payload tensor (fp32 when too small or over the loss limit)."""
    if tensor.numel() < config.min_numel:
        return RawCode(tensor.detach().float().cpu().clone())
    code, facts = encode_tensor(tensor, config)
    if config.set_loss_limit and facts["mae"] > config.loss_limit:
        return RawCode(tensor.detach().float().cpu().clone())
    return code
