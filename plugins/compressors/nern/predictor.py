"""NeRN's predictor: the shared MLP, its decoding context, and fitting it to the kernels.

See the package docstring for how the shared predictor is stored and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Context

from . import encoding as enc

__all__ = [
    "HEADER_FIELDS",
    "LOG_POINTS",
    "Predictor",
    "SharedPredictor",
    "predictor_params",
    "checkpoints",
    "fit_predictor",
    "register_loaded",
    "find_loaded",
]

HEADER_FIELDS = ("hidden", "num_blocks", "levels", "base", "kernel_size", "num_layers", "scale")
_EMBEDDING_CACHE = 1 << 25  # precompute the features of all kernels below this many floats
LOG_POINTS = 50  # the fit logs its loss every steps // LOG_POINTS steps (and at its last step)


class Predictor(nn.Module):
    """NeRN's k×k predictor: Linear(6J, h), (num_blocks − 2) × Linear(h, h), Linear(h, k²); ReLU between."""

    def __init__(self, in_features: int, hidden: int, num_blocks: int, out_features: int):
        super().__init__()
        sizes = [in_features] + [hidden] * (num_blocks - 1) + [out_features]
        # skip_init: no draw from the global RNG; init_() draws from the caller's generator
        self.layers = nn.ModuleList(nn.utils.skip_init(nn.Linear, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    def linears(self) -> list[nn.Linear]:
        """The layers as nn.Linear (all of them are: nn.ModuleList types its items nn.Module)."""
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def init_(self, generator: torch.Generator) -> Predictor:
        """PyTorch's default Linear init, U(±1/√fan_in) for weights and biases, from ``generator``."""
        for layer in self.linears():
            bound = layer.in_features**-0.5
            for p in (layer.weight, layer.bias):
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x

    def flat(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, layer in enumerate(self.linears()):
            out[f"inr.w{i}"], out[f"inr.b{i}"] = layer.weight, layer.bias
        return out


@dataclasses.dataclass(eq=False)
class SharedPredictor:
    """The trained predictor with what is needed to decode: the encoding and the layer count."""

    net: Predictor
    hidden: int
    num_blocks: int
    levels: int
    base: float
    kernel_size: int
    num_layers: int
    scale: float  # output scale (the RMS of the predicted weights, an fp32 value): W = scale · net(γ(c))

    def __post_init__(self) -> None:
        self.net = self.net.cpu().eval().requires_grad_(False)
        h = hashlib.sha256(repr(self.header()).encode())
        for t in self.net.flat().values():
            h.update(t.detach().float().contiguous().numpy().tobytes())
        self.id = h.hexdigest()[:24]

    def header(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in HEADER_FIELDS}

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self.net.flat().values())

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(features) * self.scale

    def fresh_net(self, generator: torch.Generator | None = None) -> Predictor:
        net = Predictor(6 * self.levels, self.hidden, self.num_blocks, self.kernel_size**2)
        return net.init_(generator or torch.Generator().manual_seed(0))


# the predictors of owner codes restored in this process, by hash: how the other codes find theirs
_LOADED: weakref.WeakValueDictionary[str, SharedPredictor] = weakref.WeakValueDictionary()


def register_loaded(shared: SharedPredictor) -> None:
    _LOADED[shared.id] = shared


def find_loaded(predictor_id: str) -> SharedPredictor | None:
    return _LOADED.get(predictor_id)


def predictor_params(levels: int, hidden: int, num_blocks: int, kernel_size: int) -> int:
    """Parameters of the predictor: Linear(6J, h), (num_blocks − 2) × Linear(h, h), Linear(h, k²)."""
    sizes = [6 * levels] + [hidden] * (num_blocks - 1) + [kernel_size**2]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def checkpoints(steps: int) -> list[int]:
    """The steps at which the fit's RMSE over all kernels is measured for :func:`b2s.fitting.end_drop`:
    0, ⌊0.75·steps⌋ (where its last-quarter window starts) and ``steps`` (after the last update);
    none for 0 steps (no fit: the rule calls it unconverged)."""
    return sorted({0, int(0.75 * steps), steps}) if steps else []


def _sampler(
    n: int, targets: torch.Tensor, config: Any, gen: torch.Generator, device: torch.device
) -> Callable[[], torch.Tensor | None]:
    """Draws each step's kernel indices (None: all of them, when they fit in one batch)."""
    norms = targets.norm(dim=1).double().cpu()
    cdf = torch.cumsum(norms, 0) / norms.sum().clamp(min=1e-30)

    def batch() -> torch.Tensor | None:
        if n <= config.batch_size:
            return None
        if config.magnitude_batching and float(torch.rand((), generator=gen)) < config.magnitude_batching:
            # NeRN's magnitude-oriented batching: kernels drawn in proportion to their norm
            idx = torch.searchsorted(cdf, torch.rand(config.batch_size, generator=gen, dtype=torch.float64))
            return idx.clamp(max=n - 1).to(device)
        return torch.randint(n, (config.batch_size,), generator=gen).to(device)

    return batch


@torch.no_grad()
def _rmse(net: Predictor, inputs: Callable[[int, int], torch.Tensor], targets: torch.Tensor) -> float:
    """The RMSE of the predictor over all kernels, in chunks (``inputs(start, stop)``: their features)."""
    n, sq = targets.shape[0], 0.0
    for start in range(0, n, 1 << 16):
        stop = min(start + (1 << 16), n)
        sq += float(((net(inputs(start, stop)) - targets[start:stop]) ** 2).sum())
    return (sq / max(n * targets.shape[1], 1)) ** 0.5


def fit_predictor(
    targets: torch.Tensor, coords: torch.Tensor, config: Any, ctx: Context, num_layers: int, hidden: int
) -> tuple[SharedPredictor, list[float], float, dict[int, float]]:
    """Fit the predictor to (N, k²) kernels at (N, 3) coordinates.

    ``config`` is a NernConfig: the encoding (levels, base), depth, kernel size and the optimization
    settings (steps, batch_size, lr, optimizer, weight_decay, magnitude_batching).

    Returns the predictor, the logged losses (each the RMSE of that step's batch: with more kernels
    than ``batch_size`` one batch's, noisy, and 20 % of them magnitude-drawn), the final RMSE over all
    kernels, and the RMSE over all kernels at the steps the convergence rule needs
    (:func:`checkpoints`: before the first update, before update ⌊0.75·steps⌋, after the last),
    exact whatever the batching, for two passes more over the kernels.
    """
    device = torch.device(ctx.device)
    gen = ctx.generator()
    net = Predictor(6 * config.levels, hidden, config.num_blocks, config.kernel_size**2).init_(gen)
    net = net.to(device)
    n = targets.shape[0]
    # targets in units of their RMS, so one learning rate suits any model (the scale is stored)
    scale = float(targets.double().pow(2).mean().sqrt().clamp(min=1e-12).float())
    targets, coords = (targets / scale).to(device), coords.to(device)
    cached = n <= config.batch_size or n * 6 * config.levels <= _EMBEDDING_CACHE
    features = enc.encode(coords, config.levels, config.base) if cached else None

    def inputs(start: int, stop: int) -> torch.Tensor:
        return features[start:stop] if features is not None else enc.encode(coords[start:stop], config.levels, config.base)

    batch = _sampler(n, targets, config, gen, device)
    probes = checkpoints(config.steps)
    exact = {0: scale * _rmse(net, inputs, targets)} if config.steps else {}

    def probe(step: int) -> None:  # after update ``step``: the RMSE before update step + 1
        if step + 1 in probes and step + 1 < config.steps:
            exact[step + 1] = scale * _rmse(net, inputs, targets)

    def step_loss(step: int) -> torch.Tensor:
        idx = batch()
        if idx is None:
            x, y = features, targets
        else:
            x = features[idx] if features is not None else enc.encode(coords[idx], config.levels, config.base)
            y = targets[idx]
        return torch.sqrt(torch.mean((net(x) - y) ** 2))  # NeRN's reconstruction loss (RMSE)

    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    fused = True if device.type in ("cpu", "cuda") else None  # 3x faster steps on a small MLP; None: torch's default
    opt = opt_cls(net.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    progress = ctx.progress(config.steps, "nern")
    try:
        result = b2s.fitting.train_loop(
            opt,
            step_loss,
            config.steps,
            progress=progress,
            log_every=max(config.steps // LOG_POINTS, 1),
            scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(config.steps, 1)),
            postfix=lambda loss: f"rmse {loss * scale:.3g}",
            after_step=probe,
        )
    finally:
        progress.close()
    shared = SharedPredictor(net, hidden, config.num_blocks, config.levels, config.base, config.kernel_size, num_layers, scale)
    final = scale * _rmse(net, inputs, targets)
    if config.steps:
        exact[config.steps] = final
    return shared, [loss * scale for loss in result.losses], final, exact
