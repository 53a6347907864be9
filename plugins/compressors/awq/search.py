"""AWQ's two searches: the per-channel scale exponent α (the paper's Sec. 3.2) and the clipping range
(the authors' ``auto_clip``).

Scale search: s = mean|x|^α per input channel (clamped at 1e-4 and divided by √(max s · min s), as the
authors' code, which leaves the product unchanged), α on the points i / alpha_grid, i = 0 .. alpha_grid − 1; for each α
every layer of the group is quantized as Q(W·diag(s))·diag(s)⁻¹ and the α with the least summed mean
squared output error of the group's layers on the kept calibration inputs wins (ties: the smaller α,
so α = 0, round-to-nearest, wins unless another α is strictly better).

Clipping search: on the scaled weight and the scaled input, each (output channel, group) keeps the
range ±max|w|·(1 − i / clip_grid), i < clip_max_shrink·clip_grid, whose quantized weights give the least
mean squared partial output (the group's inputs times its weights) on ``clip_tokens`` inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from ..quantize.codes import UniformCode
from ..quantize.config import QuantizeConfig
from ..quantize.rounding import grouped, quantize_groups, quantize_tensor
from .config import AWQConfig
from .fold import scale_inputs, weight_of

__all__ = ["grid_config", "activation_scale", "rtn", "search_scale", "search_clip"]


def grid_config(config: AWQConfig) -> QuantizeConfig:
    """quantize's settings for AWQ's grid: per group along the input dimension, round-to-nearest."""
    return QuantizeConfig(
        bits=config.bits,
        granularity="group",
        group_size=config.group_size,
        symmetric=config.symmetric,
        scale_bits=config.scale_bits,
    )


def rtn(w: torch.Tensor, config: AWQConfig) -> UniformCode:
    """Round-to-nearest on AWQ's grid (quantize's quantizer)."""
    code = quantize_tensor(w, grid_config(config))
    assert isinstance(code, UniformCode)
    return code


def activation_scale(mean_abs: torch.Tensor, alpha: float, scale_bits: int) -> torch.Tensor:
    """s = mean|x|^α, clamped at 1e-4, normalised by √(max·min), at its stored precision."""
    s = mean_abs.float().pow(alpha).clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    return s.half().float() if scale_bits == 16 else s


def _output(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return functional_call(layer, {"weight": weight.to(x.device)}, (x,))


@torch.no_grad()
def search_scale(
    layers: Mapping[str, nn.Module], mean_abs: torch.Tensor, x: torch.Tensor, config: AWQConfig
) -> tuple[float, torch.Tensor, dict[float, float]]:
    """(α, s, loss of each α tried) for a group of layers that read the input ``x``."""
    dense = {n: _output(m, weight_of(m).detach().float(), x) for n, m in layers.items()}
    alphas = [config.alpha] if config.alpha is not None else [i / config.alpha_grid for i in range(config.alpha_grid)]
    losses: dict[float, float] = {}
    best: tuple[float, float, torch.Tensor] | None = None
    for alpha in alphas:
        s = activation_scale(mean_abs, alpha, config.scale_bits)
        loss = 0.0
        for n, m in layers.items():
            w = weight_of(m).detach().float().cpu()
            q = rtn(scale_inputs(w, s), config).decode()
            loss += float((_output(m, scale_inputs(q, 1.0 / s), x) - dense[n]).pow(2).mean())
        losses[alpha] = loss
        if best is None or loss < best[0]:
            best = (loss, alpha, s)
    assert best is not None
    return best[1], best[2], losses


@torch.no_grad()
def search_clip(w: torch.Tensor, x: torch.Tensor, config: AWQConfig, batch: int = 64) -> torch.Tensor:
    """The clipped weight: each (row, group) of a linear weight ``w`` (out, in) clamped to its best range
    for the input rows ``x`` (tokens, in)."""
    g, pad = grouped(w, "group", config.group_size)
    rows, gs = w.shape[0], config.group_size
    groups = g.shape[0] // rows
    xs = torch.cat([x.float(), x.new_zeros(x.shape[0], pad)], dim=1) if pad else x.float()
    xg = xs.reshape(xs.shape[0], groups, gs)  # (tokens, groups, gs)
    wg = g.reshape(rows, groups, gs)
    top = wg.abs().amax(dim=2, keepdim=True)
    best_top = top.clone()
    steps = int(config.clip_max_shrink * config.clip_grid)
    for start in range(0, rows, batch):
        part = wg[start : start + batch]
        dense = torch.einsum("tgk,ogk->otg", xg, part)
        best_err = torch.full((part.shape[0], groups), float("inf"))
        for i in range(max(1, steps)):
            limit = top[start : start + batch] * (1 - i / config.clip_grid)
            clipped = torch.maximum(torch.minimum(part, limit), -limit)
            q, scale, zero = quantize_groups(clipped.reshape(-1, gs), config.bits, config.symmetric)
            if config.scale_bits == 16:
                scale = scale.half().float()
            rebuilt = (scale[:, None] * (q - zero[:, None])).reshape(part.shape)
            err = (torch.einsum("tgk,ogk->otg", xg, rebuilt) - dense).pow(2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_top[start : start + batch] = torch.where(better[..., None], limit, best_top[start : start + batch])
    clipped = torch.maximum(torch.minimum(wg, best_top), -best_top).reshape(rows, -1)
    return clipped[:, : w.shape[1]] if pad else clipped
