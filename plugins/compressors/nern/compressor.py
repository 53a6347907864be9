"""The compressor: one predictor fitted to the k×k kernels of every predicted conv at once."""

from __future__ import annotations

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import MIN_COVERAGE, Code, Compressed, Context, NotApplicableError, Target, weight_layers

from . import encoding as enc
from .codes import HEADER_BITS, PREDICTOR_HEADER_BITS, NernCode
from .config import NernConfig
from .predictor import fit_predictor, predictor_params

__all__ = ["predicted_layers", "width_for_ratio", "compress", "target"]


def predicted_layers(model: nn.Module, config: NernConfig) -> dict[str, nn.Module]:
    """The convs NeRN predicts, in model order."""
    k = config.kernel_size
    return {
        key: m
        for key, m in weight_layers(model, types=(nn.Conv2d,)).items()
        if tuple(m.get_parameter("weight").shape[2:]) == (k, k) and (m.groups == 1 or config.include_grouped)
    }


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
    k = config.kernel_size
    kind = f"{k}×{k} kernels of convs" + ("" if config.include_grouped else " with groups = 1")
    if not layers:
        raise NotApplicableError(f"NeRN predicts {kind}; this model has none")
    state = model.state_dict()
    share = sum(state[key].numel() for key in layers) / sum(state[key].numel() for key in weight_layers(model))
    if share < MIN_COVERAGE:  # predicting the rest of the model's weights is not what NeRN does
        raise NotApplicableError(
            f"NeRN predicts {kind}; this model's ({', '.join(layers)}) hold only {100 * share:.2g} % of its conv/linear weights"
        )
    num_layers = len(layers)
    targets, coords, tables = [], [], {}
    for index, key in enumerate(layers):
        w = state[key].detach().float().cpu()
        c_out, c_in = int(w.shape[0]), int(w.shape[1])
        orders = enc.layer_order(w, config.permutation, config.similarity)
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
    cost = (
        tables_bits
        + num_layers * HEADER_BITS
        + PREDICTOR_HEADER_BITS
        + 32 * predictor_params(config.levels, hidden, config.num_blocks, config.kernel_size)
    )
    if config.raw_if_larger and cost >= 32 * weights:  # it would cost more than the kernels: nothing to gain
        raise NotApplicableError(
            f"a width-{hidden} NeRN predictor ({cost:,} bits) costs at least the {weights:,} "
            f"weights it would predict ({32 * weights:,} bits); nothing would be compressed"
        )
    shared, losses, final, exact = fit_predictor(torch.cat(targets), torch.cat(coords), config, ctx, num_layers, hidden)
    codes: dict[str, Code] = {}
    for index, key in enumerate(layers):
        codes[key] = NernCode(
            tuple(state[key].shape), index, config.permutation, tables[key], shared.id, owner=index == 0, predictor=shared
        )
    # the one budget rule (b2s.fitting.end_drop): the RMSE over all kernels still falling by plateau_tol
    # over the last quarter of the steps, or no fit at all (0 steps), is a fit that ran out of budget.
    # Judged on the exact RMSE at steps 0, 0.75·steps and the end (predictor.checkpoints), not on the
    # logged batch losses: with minibatches those swing by several % (magnitude-drawn batches by +25 %
    # on zoo:fmnist-cnn at batch_size 512), more than the tolerance. The cosine schedule (torch's
    # CosineAnnealingLR over the steps) adds the facts rate_share and speed, and judges by speed too: a
    # cosine flattens every curve's end, so a fit still descending at its average speed per unit of
    # learning rate (the zoo UNet's at 600 steps: 1.85x) ran out of budget though its end drop is small.
    convergence = b2s.fitting.end_drop(
        list(exact.values()),
        steps=list(exact),
        tolerance=config.plateau_tol,
        rates=b2s.fitting.cosine_schedule(config.steps),
        speed_tolerance=b2s.fitting.DEFAULT_SPEED_TOLERANCE,
    )
    info = {
        "predicted_layers": list(layers),
        "owner": next(iter(layers)),
        "hidden": hidden,
        "predictor_params": shared.numel,
        "losses": losses,
        "final_rmse": final,
        "convergence": convergence.as_dict(),
    }
    if convergence.unconverged:
        if convergence.drop is None:
            why = f" ({convergence.reason})"
        elif convergence.drop >= convergence.tolerance:
            why = f", the loss still falling by {100 * convergence.drop:.1f} % over the last quarter of the steps"
        else:  # flagged by its speed: the annealed rate, not a plateau, flattened the curve
            why = (
                f", the loss still falling by {100 * convergence.drop:.1f} % over the last quarter of the steps on "
                f"{100 * (convergence.rate_share or 0):.1f} % of the learning rate ({convergence.speed:.2f}x its average "
                "fall per unit of rate)"
            )
        b2s.add_caveat(
            info,
            "unconverged",
            f"1 of 1 NeRN fit(s) ran out of steps ({config.steps}) before a plateau{why}: "
            "the numbers measure the step budget, not the method",
        )
    return Compressed.from_codes(model, codes, info=info)


def target(config: NernConfig, compressed: Compressed, model: nn.Module) -> Target | None:
    """With ``target_ratio``: the predicted layers' ratio it reached (a width-1 predictor can cost more)."""
    if config.target_ratio is None:
        return None
    return Target("predicted-layer ratio", float(config.target_ratio), compressed.size().ratio_layers, 0.05, "x")
