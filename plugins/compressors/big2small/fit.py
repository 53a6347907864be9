"""Fitting the INRs: all layers together as one batched computation, or one after another.

Layers whose INRs have the same coordinate axes and the same crop shape form a *group*: their
parameters are stacked with a leading layer dimension (one stack per architecture) and evaluated
with ``torch.baddbmm``. A training step evaluates every group (a loop over the few crop shapes and
architectures, never over layers), sums the per-layer losses and takes one AdamW step that updates
every layer. Since the loss is a sum of per-layer terms and AdamW acts elementwise, this is the same
optimization as fitting each layer alone; the naive mode (``batched=False``) does exactly that, one
layer after another, with the same initialisations, crops, steps and loss, so the two differ only
by floating-point rounding.

Each step's crops come from ``sampling.py`` (drawn per layer before the fit). When a group's crops
hold more than ``chunk`` INR evaluations, they are evaluated ``chunk`` at a time and their gradients
accumulated before the one optimizer step (the same step, in bounded memory: full tensors of large
layers on a GPU). The learning rate warms up linearly over ``warmup`` steps, then follows a cosine
to 0 at the step budget. ``tracking.py`` records each layer's convergence curve and stops layers
early (target PSNR, plateau); a layer whose loss or parameters become non-finite is reported as
failed (the other layers of its group are unaffected: nothing couples them).

Parameters, optimizer state and the loss are fp32. ``precision: bf16`` evaluates the INRs under
autocast (bf16 matrix products); the sines of ω₀-scaled arguments then lose low-order bits, so it
is off by default (``benchmarks/bench_big2small.py --mixed`` measures it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import nn

from b2s_bench import Progress

from . import loss as _loss
from .inr import Geometry, INRArch, features, inr_apply
from .sampling import crop_shape
from .tracking import StopRule, Tracker

__all__ = ["LayerTask", "FitSettings", "LayerResult", "fit_layers", "count_groups", "lr_at"]

PROGRESS_EVERY = 50  # steps between progress-bar updates


@dataclasses.dataclass
class LayerTask:
    """One layer to fit: its standardised (clipped, maybe permuted) target and what is fixed before."""

    key: str
    target: torch.Tensor  # (rows, cols) fp32
    arch: INRArch
    geometry: Geometry  # G = 1
    init: dict[str, torch.Tensor]  # fp32, CPU
    starts: torch.Tensor  # (S, B, 2) int64 crop starts (row, block) per step; S = 1: every step alike
    exact: torch.Tensor  # (rows, cols) bool: entries stored exactly (outliers), error-free
    eval_coords: torch.Tensor  # (n,) flat block coordinates of the curve's sample
    std: float  # the standardisation's σ: weight-domain error = σ² x standardised error
    peak: float  # max − min of the original tensor (the PSNR's peak)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitSettings:
    steps: int
    lr: float
    weight_decay: float
    patch_rows: int
    patch_cols: int
    patches: int
    lambda_grad: float
    lambda_freq: float
    focal_alpha: float
    gdl: str = "signed"
    quant_bits: int | None = None  # quantization-aware (straight-through) when set
    step_offset: int = 0  # index of the first step's crops in LayerTask.starts
    precision: str = "fp32"  # "bf16": the INRs run under autocast
    warmup: int = 0
    chunk: int = 0  # most INR evaluations per group forward (0: no limit)
    stop: StopRule = StopRule(eval_every=1_000_000)


@dataclasses.dataclass
class LayerResult:
    params: dict[str, torch.Tensor]  # fp32, CPU
    losses: torch.Tensor  # (steps run,) training loss of every step
    ok: bool  # all losses and parameters finite
    seconds: float  # wall time of the fit that produced it (shared by a batched fit)
    curve: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    steps_run: int = 0
    stop_reason: str = "budget"


def lr_at(step: int, settings: FitSettings) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine annealing to 0 at ``steps``."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    span = max(settings.steps - settings.warmup, 1)
    return settings.lr * 0.5 * (1.0 + math.cos(math.pi * (step - settings.warmup) / span))


class _Group:
    """Layers fitted on the same crop shape (and coordinate axes), on ``device``.

    Crop positions, targets, Fourier features and the loss are computed for all of its layers at
    once; the INRs run per *architecture* (``arch_slices``: consecutive layers with the same
    architecture, whose parameters are stacked in ``params``).
    """

    def __init__(self, tasks: list[LayerTask], settings: FitSettings, device: torch.device):
        self.settings = settings
        rows0, cols0 = tasks[0].target.shape
        self.block = tasks[0].arch.block
        self.P, self.Qb, self.B = crop_shape(rows0, cols0, self.block, settings.patch_rows, settings.patch_cols, settings.patches)
        self.archs: list[INRArch] = []
        self.arch_slices: list[slice] = []
        for i, t in enumerate(tasks):
            if self.archs and t.arch == self.archs[-1]:
                self.arch_slices[-1] = slice(self.arch_slices[-1].start, i + 1)
            else:
                self.archs.append(t.arch)
                self.arch_slices.append(slice(i, i + 1))
        self.params = [
            {k: nn.Parameter(torch.stack([t.init[k] for t in tasks[sl]]).to(device)) for k in tasks[sl][0].init}
            for sl in self.arch_slices
        ]
        self.geo = Geometry.stack([t.geometry for t in tasks]).to(device)
        # zero columns up to whole blocks
        padded = [nn.functional.pad(t.target, (0, (-t.target.shape[1]) % self.block)) for t in tasks]
        self.flat = torch.cat([t.reshape(-1) for t in padded]).to(device)
        self.base = torch.tensor([0, *[t.numel() for t in padded[:-1]]], device=device).cumsum(0)
        self.rows, self.blocks = self.geo.rows, self.geo.blocks
        self.stride = self.blocks * self.block  # padded columns
        self.starts = torch.stack([t.starts for t in tasks], dim=1).to(device)  # (S, G, B, 2)
        self.ar_p = torch.arange(self.P, device=device)
        self.ar_qb = torch.arange(self.Qb, device=device)
        self.ar_q = torch.arange(self.Qb * self.block, device=device)
        self._init_eval(tasks, device)

    def _init_eval(self, tasks: list[LayerTask], device: torch.device) -> None:
        """The curve's fixed sample: features, targets and which entries count (not padding)."""
        n = min(len(t.eval_coords) for t in tasks)
        coords = torch.stack([t.eval_coords[:n] for t in tasks]).to(device)  # (G, n)
        self.eval_feats = features(coords // self.blocks[:, None], coords % self.blocks[:, None], self.geo)
        col = (coords % self.blocks[:, None])[..., None] * self.block + torch.arange(self.block, device=device)
        idx = self.base[:, None, None] + (coords // self.blocks[:, None])[..., None] * self.stride[:, None, None] + col
        exact = torch.cat(
            [nn.functional.pad(t.exact, (0, int(self.stride[i]) - t.exact.shape[1])).reshape(-1) for i, t in enumerate(tasks)]
        ).to(device)
        inside = col < self.geo.cols[:, None, None]
        self.eval_target = self.flat[idx]
        self.eval_weight = (inside & ~exact[idx]).float()
        self.eval_count = inside.flatten(1).sum(1).clamp(min=1).float()
        self.eval_scale = torch.tensor([t.std**2 for t in tasks], device=device)
        self.eval_peak2 = torch.tensor([t.peak**2 for t in tasks], device=device)

    def parameters(self) -> list[nn.Parameter]:
        return [p for group in self.params for p in group.values()]

    def _apply(self, feats: torch.Tensor) -> torch.Tensor:
        quant, mixed = self.settings.quant_bits, self.settings.precision == "bf16"
        with torch.autocast(self.flat.device.type, dtype=torch.bfloat16, enabled=mixed):
            preds = [
                inr_apply(params, feats[sl], arch, quant)
                for arch, sl, params in zip(self.archs, self.arch_slices, self.params, strict=True)
            ]
        return (preds[0] if len(preds) == 1 else torch.cat(preds)).float()

    def chunks(self) -> list[slice]:
        """Slices of the B crops evaluated together (all of them unless ``chunk`` bounds it)."""
        per_crop = len(self.rows) * self.P * self.Qb
        size = self.B if not self.settings.chunk else max(1, min(self.B, self.settings.chunk // per_crop))
        return [slice(i, min(i + size, self.B)) for i in range(0, self.B, size)]

    def crop_losses(self, step: int, crops: slice) -> torch.Tensor:
        """(G, b) loss of every layer's crops ``crops`` of this step."""
        g, p, qb, bl = len(self.rows), self.P, self.Qb, self.block
        st = self.starts[step % self.starts.shape[0], :, crops]  # (G, b, 2)
        b = st.shape[1]
        row = st[..., 0, None, None] + self.ar_p[:, None]  # (G, b, P, 1)
        blk = st[..., 1, None, None] + self.ar_qb[None, :]  # (G, b, 1, Qb)
        col = st[..., 1, None, None] * bl + self.ar_q[None, :]  # (G, b, 1, Qb·block)
        target = self.flat[self.base[:, None, None, None] + row * self.stride[:, None, None, None] + col]
        rows, blks = row.expand(g, b, p, qb).reshape(g, -1), blk.expand(g, b, p, qb).reshape(g, -1)
        pred = self._apply(features(rows, blks, self.geo)).reshape(g, b, p, qb * bl)
        s = self.settings
        return _loss.crop_losses(pred, target, s.lambda_grad, s.lambda_freq, s.focal_alpha, s.gdl)

    @torch.no_grad()
    def eval_psnr(self) -> torch.Tensor:
        """(G,) weight-domain PSNR on the fixed sample, with the parameters as they would be stored."""
        pred = self._apply(self.eval_feats)
        sq = ((pred - self.eval_target).pow(2) * self.eval_weight).flatten(1).sum(1) / self.eval_count
        mse = sq * self.eval_scale
        return 10 * torch.log10(self.eval_peak2 / mse.clamp(min=1e-30))

    def finite(self) -> torch.Tensor:
        oks = []
        for group in self.params:
            ok = torch.ones(next(iter(group.values())).shape[0], dtype=torch.bool, device=self.flat.device)
            for p in group.values():
                ok &= torch.isfinite(p.detach()).flatten(1).all(dim=1)
            oks.append(ok)
        return torch.cat(oks)

    def layer_param(self, j: int) -> dict[str, torch.Tensor]:
        for sl, group in zip(self.arch_slices, self.params, strict=True):
            if sl.start <= j < sl.stop:
                return {k: p.detach()[j - sl.start].cpu().clone() for k, p in group.items()}
        raise IndexError(j)

    def layer_params(self) -> list[dict[str, torch.Tensor]]:
        return [self.layer_param(j) for j in range(len(self.rows))]


def _crop_key(task: LayerTask, settings: FitSettings) -> tuple:
    rows, cols = task.target.shape
    shape = crop_shape(rows, cols, task.arch.block, settings.patch_rows, settings.patch_cols, settings.patches)
    return (task.arch.coord_dims, task.arch.feature_dim, task.arch.block, task.geometry.layout, *shape, task.starts.shape[0])


def count_groups(tasks: list[LayerTask], settings: FitSettings) -> int:
    """How many stacked INR groups (crop shape x architecture) a batched fit of ``tasks`` uses."""
    return len({(_crop_key(t, settings), t.arch) for t in tasks})


def _groups(tasks: list[LayerTask], settings: FitSettings, device: torch.device) -> tuple[list[_Group], list[int]]:
    """The groups, and ``order``: the task index of each column (layers of a group are contiguous)."""
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        by_key[_crop_key(t, settings)].append(i)
    order = []
    for idx in by_key.values():  # layers of one architecture next to each other
        archs = list(dict.fromkeys(tasks[i].arch for i in idx))
        idx.sort(key=lambda i: archs.index(tasks[i].arch))
        order.extend(idx)
    return [_Group([tasks[i] for i in idx], settings, device) for idx in by_key.values()], order


def _step(groups: list[_Group], step: int, active: torch.Tensor) -> torch.Tensor:
    """Forward and backward of one step (in chunks); the (columns,) loss of every layer."""
    losses = []
    start = 0
    for g in groups:
        n = len(g.rows)
        weight = active[start : start + n].to(g.flat.device).float()
        layer = torch.zeros(n, device=g.flat.device)
        for crops in g.chunks():
            crop = g.crop_losses(step, crops)  # (n, b)
            part = crop.sum(1) / g.B
            (part * weight).sum().backward()  # stopped layers get no gradient
            layer += part.detach()
        losses.append(layer)
        start += n
    return torch.cat(losses)


def _no_sync() -> None:
    """The CPU's stand-in for torch.cuda.synchronize: CPU work is done when the call returns."""


def _fit_together(
    tasks: list[LayerTask], settings: FitSettings, device: torch.device, progress: Progress | None = None
) -> list[LayerResult]:
    groups, order = _groups(tasks, settings, device)
    params = [p for g in groups for p in g.parameters()]
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)
    steps = settings.steps
    history = torch.zeros(steps, len(tasks), device=device)
    tracker = Tracker(len(tasks), steps, settings.stop, settings.step_offset)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else _no_sync
    sync()
    t0 = time.perf_counter()
    step = -1
    for step in range(steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, settings)
        opt.zero_grad(set_to_none=True)
        history[step] = _step(groups, settings.step_offset + step, tracker.active)
        opt.step()
        tracker.add_loss(history[step])
        if tracker.due(step):
            psnr = torch.cat([g.eval_psnr() for g in groups])
            sync()
            tracker.record(step, psnr, time.perf_counter() - t0, lambda j: _param_of(groups, j))
        if progress is not None and (step + 1) % PROGRESS_EVERY == 0:
            progress.update(PROGRESS_EVERY)
        if tracker.done:
            break
    if progress is not None and (step + 1) % PROGRESS_EVERY:
        progress.update((step + 1) % PROGRESS_EVERY)
    sync()
    return _results(groups, order, tracker, history[: step + 1].cpu(), time.perf_counter() - t0)


def _param_of(groups: list[_Group], column: int) -> dict[str, torch.Tensor]:
    for g in groups:
        if column < len(g.rows):
            return g.layer_param(column)
        column -= len(g.rows)
    raise IndexError(column)


def _results(
    groups: list[_Group], order: list[int], tracker: Tracker, history: torch.Tensor, seconds: float
) -> list[LayerResult]:
    finite = torch.cat([g.finite() for g in groups]).cpu()
    params = [p for g in groups for p in g.layer_params()]
    results: list[LayerResult | None] = [None] * len(order)
    for col, i in enumerate(order):
        run = tracker.steps_run[col]
        losses = history[:run, col].clone()
        stopped = col in tracker.snapshots
        ok = bool(torch.isfinite(losses).all()) and (stopped or bool(finite[col]))
        results[i] = LayerResult(
            tracker.snapshots.get(col, params[col]), losses, ok, seconds, tracker.curves[col], run, tracker.reasons[col]
        )
    return [r for r in results if r is not None]


def fit_layers(
    tasks: list[LayerTask], settings: FitSettings, device: torch.device, batched: bool = True, progress: Progress | None = None
) -> list[LayerResult]:
    """Fit every task's INR; batched (one computation for all) or the naive per-layer loop.

    ``progress`` (optional) is advanced by the steps taken (per layer in the naive loop).
    """
    if not tasks:
        return []
    if batched:
        return _fit_together(tasks, settings, device, progress)
    return [_fit_together([t], settings, device, progress)[0] for t in tasks]
