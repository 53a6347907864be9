"""The compressor: one predictor fitted to the k×k kernels of every predicted conv at once."""

from __future__ import annotations

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, weight_layers

from . import encoding as enc
from .codes import HEADER_BITS, PREDICTOR_HEADER_BITS, NernCode
from .config import NernConfig
from .predictor import fit_predictor, predictor_params

__all__ = ["predicted_layers", "width_for_ratio", "compress"]


def predicted_layers(model: nn.Module, config: NernConfig) -> dict[str, nn.Module]:
    """The convs NeRN predicts, in model order."""
    k = config.kernel_size
    return {key: m for key, m in weight_layers(model, types=(nn.Conv2d,)).items()
            if tuple(m.weight.shape[2:]) == (k, k) and (m.groups == 1 or config.include_grouped)}


def width_for_ratio(weights: int, table_bits: int, num_codes: int, config: NernConfig) -> int:
    """The largest hidden width whose codes cost at most 32·weights / target_ratio bits (at least 1)."""
    budget = 32 * weights / float(config.target_ratio or 1.0)
    fixed = table_bits + num_codes * HEADER_BITS + PREDICTOR_HEADER_BITS

    def fits(hidden: int) -> bool:
        params = predictor_params(config.levels, hidden, config.num_blocks, config.kernel_size)
        return fixed + 32 * params <= budget

    if not fits(1):
        return 1
    hi = 2
    while fits(hi):
        hi *= 2
    lo = hi // 2  # fits(lo), not fits(hi); the cost grows with the width: bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def compress(model: nn.Module, config: NernConfig, ctx: Context) -> Compressed:
    layers = predicted_layers(model, config)
    if not layers:
        ctx.log(f"nern: no conv with a {config.kernel_size}x{config.kernel_size} kernel to predict")
        return Compressed.from_codes(model, {}, info={"predicted_layers": []})
    state = model.state_dict()
    num_layers = len(layers)
    targets, coords, tables = [], [], {}
    for index, key in enumerate(layers):
        w = state[key].detach().float().cpu()
        c_out, c_in = int(w.shape[0]), int(w.shape[1])
        orders = enc.layer_order(w, config.permutation)
        kernels = w.reshape(c_out * c_in, -1)
        src = enc.source_index(orders, c_out, c_in)
        targets.append(kernels if src is None else kernels[src])  # grid position t holds kernel src[t]
        coords.append(enc.grid_coords(index, num_layers, c_out, c_in))
        tables[key] = orders
    hidden = config.hidden
    weights = sum(state[k].numel() for k in layers)
    tables_bits = sum(enc.permutation_bits(config.permutation, *state[k].shape[:2]) for k in layers)
    if hidden is None:
        hidden = width_for_ratio(weights, tables_bits, num_layers, config)
    cost = (tables_bits + num_layers * HEADER_BITS + PREDICTOR_HEADER_BITS
            + 32 * predictor_params(config.levels, hidden, config.num_blocks, config.kernel_size))
    if config.raw_if_larger and cost >= 32 * weights:  # it would cost more than the kernels: keep them raw
        ctx.log(f"nern: a width-{hidden} predictor ({cost:,} bits) costs more than the {weights:,} weights it "
                "would predict; they are stored raw")
        return Compressed.from_codes(model, {}, info={"predicted_layers": [], "hidden": hidden,
                                                      "raw_reason": f"predictor {cost} bits >= raw {32 * weights} bits"})
    shared, losses, final = fit_predictor(torch.cat(targets), torch.cat(coords), config, ctx, num_layers,
                                          hidden)
    codes: dict[str, Code] = {}
    for index, key in enumerate(layers):
        codes[key] = NernCode(tuple(state[key].shape), index, config.permutation, tables[key], shared.id,
                              owner=index == 0, predictor=shared)
    info = {"predicted_layers": list(layers), "owner": next(iter(layers)), "hidden": hidden,
            "predictor_params": shared.numel, "losses": losses, "final_rmse": final}
    return Compressed.from_codes(model, codes, info=info)
