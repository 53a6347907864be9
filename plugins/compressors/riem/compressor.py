"""The ``riem`` compressor: each chosen weight fitted data-free as RieM states and metric network.

Steps: pick the layers (``layers``, ``skip_first`` / ``skip_last``) and choose each one's state
dimension d (``dim``, or the largest d within fp32 bits / ``target_ratio``), keeping raw what would
not be smaller (``plan``); fit each layer (on a GPU, every group of layers with the same matrix shape
and d together, in one batched network) with :func:`b2s.fitting.fit_network` (the MSE to the weights in units of their
RMS, Adam, cosine schedule; after ``restarts`` short random starts), quantize the states, optionally
refit the metric network to the quantized states (``fit_group``); build the codes and the record's
facts, with a caveat when a fit was still improving as its steps ran out.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Code, Compressed, Context, NotApplicableError, Target, weight_layers

from .codes import RiemCode, code_bits
from .config import RiemConfig
from .metric import RiemNetwork, centre_, dequantize_states, init_params, quantize_states

__all__ = ["riem_layers", "matrix_shape", "choose_dim", "plan", "fit_group", "GroupFit", "compress", "target", "cost"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
INIT_OFFSET = 50_000  # generator offset (added to ctx.seed, plus the group's index) for the random starts


def riem_layers(model: nn.Module, config: RiemConfig) -> dict[str, nn.Module]:
    """The layers whose weights RieM represents, in model order."""
    types: tuple[type[nn.Module], ...] = {"all": (*_CONV, nn.Linear), "conv": _CONV, "linear": (nn.Linear,)}[config.layers]
    return weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last, types=types)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The weight as a matrix: out × in·k·k (rows: output neurons, columns: input neurons)."""
    return int(shape[0]), math.prod(int(s) for s in shape[1:])


def choose_dim(shape: tuple[int, ...], config: RiemConfig) -> int | None:
    """``dim``, or the largest d whose code costs at most 32·numel / target_ratio bits (None: not d = 1)."""
    if config.dim is not None:
        return config.dim
    budget = 32 * math.prod(shape) / float(config.target_ratio or 1.0)

    def fits(d: int) -> bool:
        return code_bits(shape, d, config.hidden, config.heads, config.bits).total <= budget

    if not fits(1):
        return None
    hi = 2
    while fits(hi):
        hi *= 2
    lo = hi // 2  # fits(lo), not fits(hi); the cost grows with d: bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def plan(state: dict[str, torch.Tensor], keys: list[str], config: RiemConfig) -> tuple[dict[str, int], dict[str, str]]:
    """Each layer's d, or the reason it stays raw."""
    dims: dict[str, int] = {}
    raw: dict[str, str] = {}
    for key in keys:
        shape = tuple(state[key].shape)
        d = choose_dim(shape, config)
        if d is None:
            budget = 32 * math.prod(shape) / float(config.target_ratio or 1)
            raw[key] = f"even d = 1 costs more than 32·numel / target_ratio = {budget:.0f} bits"
            continue
        bits = code_bits(shape, d, config.hidden, config.heads, config.bits).total
        if config.raw_if_larger and bits >= 32 * math.prod(shape):
            raw[key] = f"a d = {d} code costs {bits:,} bits, at least the tensor's {32 * math.prod(shape):,}"
            continue
        dims[key] = d
    return dims, raw


@dataclasses.dataclass
class GroupFit:
    """The fit of one batch of layers: their final parameters and the facts for the record."""

    params: dict[str, torch.Tensor]  # batched (B, ...), on the CPU; states as grid codes when quantized
    grids: torch.Tensor | None  # (B, 4, d) when quantized
    fit_rel_error: list[float]  # per layer, the full-precision fit's ||W' − W|| / ||W|| (before quantization)
    losses: list[float]  # the group's MSE (in units of the weights' RMS) as fit_network logged it
    convergence: b2s.fitting.EndDrop  # the end drop of ``losses`` over their last quarter, by plateau_tol

    @property
    def unconverged(self) -> bool:
        return self.convergence.unconverged

    @property
    def end_drop(self) -> float | None:
        """The relative fall of the loss over the last quarter of the steps (None: too few steps)."""
        return self.convergence.drop


def _per_layer_rel_error(net: RiemNetwork, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        diff = (net() - target).pow(2).sum(dim=(1, 2))
        return (diff / target.pow(2).sum(dim=(1, 2)).clamp(min=1e-30)).sqrt().cpu()


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) mask shaped to broadcast over a batched parameter (B, ...)."""
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


def fit_group(weights_: torch.Tensor, dim: int, config: RiemConfig, generator: torch.Generator, device: torch.device) -> GroupFit:
    """Fit RieM to a batch of matrices (B, R, C) of one shape, all with state dimension ``dim``."""
    b, r, c = weights_.shape
    # standardised per layer (the fit's lr is then in units of the weights' spread); W = μ + s·W' is
    # folded into v and c at the end, so it costs nothing
    mean = weights_.double().mean(dim=(1, 2))
    scale = weights_.double().std(dim=(1, 2), correction=0).clamp(min=1e-12).float()  # (B,)
    target = ((weights_.double() - mean[:, None, None]).float() / scale[:, None, None]).to(device)
    log_every = max(config.steps // 20, 1)

    def start() -> RiemNetwork:
        net = RiemNetwork(init_params(b, r, c, dim, config.hidden, config.heads, generator, config.init)).to(device)
        if config.init == "centred":
            centre_(net)
        return net

    if config.restarts > 1:  # the authors' pick of the best random start, per layer
        best: dict[str, torch.Tensor] = {}
        best_err = torch.full((b,), math.inf)
        for _ in range(config.restarts):
            net = start()
            b2s.fitting.fit_network(net, target, steps=config.restart_steps, lr=config.lr, log_every=max(config.restart_steps, 1))
            err = _per_layer_rel_error(net, target)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            for name, value in net.tensors().items():
                value = value.detach().cpu()
                best[name] = value.clone() if name not in best else torch.where(_expand(better, value), value, best[name])
        net = RiemNetwork(best).to(device)
    else:
        net = start()
    result = b2s.fitting.fit_network(net, target, steps=config.steps, lr=config.lr, log_every=log_every)
    # relative to the weights themselves: ||W' − T||/||T|| on the centred weights, times ||W − μ|| / ||W||
    centred = (weights_.double() - mean[:, None, None]).pow(2).sum(dim=(1, 2)).sqrt()
    # one layer: fit_network's own final error is this layer's (saves a pass over the R × C × h × M block)
    std_err = torch.tensor([result.rel_error]) if b == 1 else _per_layer_rel_error(net, target)
    fit_err = std_err * (centred / weights_.double().pow(2).sum(dim=(1, 2)).sqrt().clamp(min=1e-30)).float()
    losses = list(result.losses)
    # the one budget rule (b2s.fitting.end_drop): still falling by plateau_tol over the last quarter
    # of the logged points (evenly spaced every steps // 20), or no curve at all (0 steps)
    convergence = b2s.fitting.end_drop(losses, tolerance=config.plateau_tol)
    fitted = {name: value.detach().cpu().clone() for name, value in net.tensors().items()}

    grids = None
    if config.bits < 32:
        rq, rlo, rstep = quantize_states(fitted["rows"], config.bits)
        cq, clo, cstep = quantize_states(fitted["cols"], config.bits)
        grids = torch.stack([rlo, rstep, clo, cstep], dim=1)  # (B, 4, d)
        if config.refit_steps:
            fixed = {**fitted, "rows": dequantize_states(rq, rlo, rstep), "cols": dequantize_states(cq, clo, cstep)}
            refit = RiemNetwork(fixed, fixed_states=True).to(device)
            b2s.fitting.fit_network(refit, target, steps=config.refit_steps, lr=config.lr, log_every=max(config.refit_steps, 1))
            fitted.update({k: v.detach().cpu().clone() for k, v in refit.tensors().items() if k not in ("rows", "cols")})
        fitted["rows"], fitted["cols"] = rq, cq
    fitted["out"] = fitted["out"] * scale[:, None]  # W = μ + s·W': folded into v and c
    fitted["out_bias"] = fitted["out_bias"] * scale + mean.float()
    return GroupFit(fitted, grids, [float(e) for e in fit_err], losses, convergence)


def _groups(dims: dict[str, int], state: dict[str, torch.Tensor], config: RiemConfig, device: torch.device) -> list[list[str]]:
    """Layers of one matrix shape and d, in model order, split so each batch stays below max_batch_floats
    (one layer a batch unless ``batch_layers`` says to batch: by default on a GPU only)."""
    if config.batch_layers == "no" or (config.batch_layers == "auto" and device.type != "cuda"):
        return [[key] for key in dims]
    by_kind: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    for key, d in dims.items():
        by_kind[(*matrix_shape(tuple(state[key].shape)), d)].append(key)
    groups = []
    for (r, c, _), keys in by_kind.items():
        per_layer = r * c * config.hidden * config.heads
        size = max(1, config.max_batch_floats // max(per_layer, 1))
        groups += [keys[i : i + size] for i in range(0, len(keys), size)]
    return groups


def compress(model: nn.Module, config: RiemConfig, ctx: Context) -> Compressed:
    layers = riem_layers(model, config)
    if not layers:
        raise NotApplicableError(f"RieM represents conv and linear weights (layers={config.layers!r}); this model has none")
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    dims, raw = plan(state, list(layers), config)
    if not dims:
        raise NotApplicableError(
            "no layer's RieM code would be smaller than the layer: " + "; ".join(f"{k}: {v}" for k, v in list(raw.items())[:3])
        )
    device = torch.device(ctx.device)
    codes: dict[str, Code] = {}
    facts: dict[str, dict[str, Any]] = {}
    unconverged: list[str] = []
    drops: list[float] = []
    groups = _groups(dims, state, config, device)
    progress = ctx.progress(len(groups), "riem")
    try:
        for index, keys in enumerate(groups):
            r, c = matrix_shape(tuple(state[keys[0]].shape))
            batch = torch.stack([state[k].reshape(r, c) for k in keys])
            fit = fit_group(batch, dims[keys[0]], config, ctx.generator(INIT_OFFSET + index), device)
            if fit.unconverged:
                unconverged += keys
                if fit.end_drop is not None:
                    drops.append(fit.end_drop)
            for i, key in enumerate(keys):
                p = {name: value[i] for name, value in fit.params.items()}
                grids = fit.grids[i] if fit.grids is not None else torch.zeros(0, dims[key])
                code = RiemCode(
                    tuple(state[key].shape),
                    config.bits,
                    p["rows"],
                    p["cols"],
                    grids,
                    p["mix"],
                    p["mix_bias"],
                    p["out"],
                    p["out_bias"].reshape(1),
                )
                codes[key] = code
                facts[key] = {
                    "dim": dims[key],
                    "batch": len(keys),
                    "fit_rel_error": fit.fit_rel_error[i],
                    "rel_error": b2s.fitting.relative_error(code.decode(), state[key]),
                    "final_loss": fit.losses[-1] if fit.losses else None,
                    "unconverged": fit.unconverged,
                    "end_drop": fit.end_drop,
                }
            progress.update(1)
    finally:
        progress.close()
    info: dict[str, Any] = {"layers": facts, "raw_layers": raw, "groups": len(groups), "unconverged": unconverged}
    if unconverged:
        worst = f", the loss still falling by up to {100 * max(drops):.1f} % over the last quarter of the steps" if drops else ""
        b2s.add_caveat(
            info,
            "unconverged",
            f"{len(unconverged)} of {len(codes)} RieM fit(s) ran out of steps ({config.steps}) before a plateau{worst}: "
            "the numbers measure the step budget, not the method",
        )
    return Compressed.from_codes(model, codes, info=info)


def target(config: RiemConfig, compressed: Compressed, model: nn.Module) -> Target | None:
    """With ``target_ratio``: the represented layers' ratio it reached."""
    if config.target_ratio is None:
        return None
    return Target("represented-layer ratio", float(config.target_ratio), compressed.size().ratio_layers, 0.05, "x")


def cost(config: RiemConfig) -> float:
    """A cell's expected time in rounding passes: about one per 20 full-batch steps (a rough guide)."""
    restarts = config.restarts * config.restart_steps if config.restarts > 1 else 0  # one start: no restart fits
    return 1.0 + (config.steps + restarts + config.refit_steps) / 20
