"""Fitting the INRs: all layers together as one batched computation, or one after another.

Layers whose INRs have the same architecture and the same crop shape form a *group*: their
parameters are stacked with a leading layer dimension and evaluated with ``torch.baddbmm``. A training
step evaluates every group (a loop over the few architectures, never over layers), sums the per-layer
losses and takes one AdamW step that updates every layer. Since the loss is a sum of per-layer
terms and AdamW acts elementwise, this is the same optimization as fitting each layer alone; the
naive mode (``batched=False``) does exactly that, one layer after another, with the same
initialisations, crops, steps and loss, so the two differ only by floating-point rounding.

Each layer's random crops come from its own pre-drawn uniforms (seeded per layer), so they are the
same in both modes and on retries. A layer whose loss or parameters become non-finite is reported
as failed (the other layers of its group are unaffected: nothing couples them).

Parameters, optimizer state and the loss are fp32. ``precision: bf16`` evaluates the INRs under
autocast (bf16 matrix products); the sines of ω₀-scaled arguments then lose low-order bits, so it
is off by default, and ``benchmarks/bench_big2small.py --precision bf16`` measures both its speed
and its error against fp32.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict

import torch
from torch import nn

from b2s_bench import Progress

from . import loss as _loss
from .inr import Geometry, INRArch, features, inr_apply

__all__ = ["LayerTask", "FitSettings", "LayerResult", "fit_layers", "crop_shape", "count_groups"]

PROGRESS_EVERY = 50  # steps between progress-bar updates


@dataclasses.dataclass
class LayerTask:
    """One layer to fit: its standardised (clipped) target matrix and everything fixed before the fit."""

    key: str
    target: torch.Tensor  # (rows, cols) fp32
    arch: INRArch
    geometry: Geometry  # G = 1
    init: dict[str, torch.Tensor]  # fp32, CPU
    randoms: torch.Tensor  # (total steps, patches, 2) uniforms in [0, 1): where the crops start


@dataclasses.dataclass(frozen=True)
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
    step_offset: int = 0  # index of the first step's uniforms in LayerTask.randoms
    precision: str = "fp32"  # "bf16": the INRs run under autocast


@dataclasses.dataclass
class LayerResult:
    params: dict[str, torch.Tensor]  # fp32, CPU
    losses: torch.Tensor  # (steps,) training loss of every step
    ok: bool  # all losses and parameters finite
    seconds: float  # wall time of the fit that produced it (shared by a batched fit)


def crop_shape(rows: int, cols: int, block: int, settings: FitSettings) -> tuple[int, int, int]:
    """(P, Qb, B): a crop of P rows x Qb blocks of a rows x cols matrix cut into blocks of ``block``
    columns, and how many crops a step takes (one when the crop is the whole matrix)."""
    blocks = -(-cols // block)
    p = min(settings.patch_rows or rows, rows)
    qb = min(-(-settings.patch_cols // block) if settings.patch_cols else blocks, blocks)
    b = 1 if (p, qb) == (rows, blocks) else settings.patches
    return p, qb, b


class _Group:
    """Layers fitted on the same crop shape (and coordinate axes), on ``device``.

    Crop positions, targets, Fourier features and the loss are computed for all of its layers at
    once; the INRs run per *architecture* (``arch_slices``: consecutive layers with the same
    architecture, whose parameters are stacked in ``params``).
    """

    def __init__(self, tasks: list[LayerTask], settings: FitSettings, device: torch.device):
        self.settings = settings
        first = tasks[0].target.shape
        self.block = tasks[0].arch.block
        self.P, self.Qb, self.B = crop_shape(first[0], first[1], self.block, settings)
        self.archs: list[INRArch] = []
        self.arch_slices: list[slice] = []
        for i, t in enumerate(tasks):
            if self.archs and t.arch == self.archs[-1]:
                self.arch_slices[-1] = slice(self.arch_slices[-1].start, i + 1)
            else:
                self.archs.append(t.arch)
                self.arch_slices.append(slice(i, i + 1))
        self.params = [{k: nn.Parameter(torch.stack([t.init[k] for t in tasks[sl]]).to(device))
                        for k in tasks[sl][0].init} for sl in self.arch_slices]
        self.geo = Geometry.stack([t.geometry for t in tasks]).to(device)
        # zero columns up to whole blocks
        padded = [nn.functional.pad(t.target, (0, (-t.target.shape[1]) % self.block)) for t in tasks]
        self.flat = torch.cat([t.reshape(-1) for t in padded]).to(device)
        self.base = torch.tensor([0, *[t.numel() for t in padded[:-1]]], device=device).cumsum(0)
        self.rows, self.blocks = self.geo.rows, self.geo.blocks
        self.stride = self.blocks * self.block  # padded columns
        first_step, total = settings.step_offset, settings.steps
        randoms = [t.randoms[first_step:first_step + total, :self.B] for t in tasks]
        self.randoms = torch.stack(randoms, dim=1).to(device)
        self.ar_p = torch.arange(self.P, device=device)
        self.ar_qb = torch.arange(self.Qb, device=device)
        self.ar_q = torch.arange(self.Qb * self.block, device=device)

    def parameters(self) -> list[nn.Parameter]:
        return [p for group in self.params for p in group.values()]

    def losses(self, step: int) -> torch.Tensor:
        """(G,) loss of every layer of the group at this step's crops."""
        g, b, p, qb, bl = len(self.rows), self.B, self.P, self.Qb, self.block
        u = self.randoms[step]  # (G, B, 2)
        r0 = torch.minimum((u[..., 0] * (self.rows - p + 1)[:, None]).long(), (self.rows - p)[:, None])
        c0 = torch.minimum((u[..., 1] * (self.blocks - qb + 1)[:, None]).long(), (self.blocks - qb)[:, None])
        row = r0[..., None, None] + self.ar_p[:, None]  # (G, B, P, 1)
        blk = c0[..., None, None] + self.ar_qb[None, :]  # (G, B, 1, Qb)
        col = c0[..., None, None] * bl + self.ar_q[None, :]  # (G, B, 1, Qb·block)
        target = self.flat[self.base[:, None, None, None] + row * self.stride[:, None, None, None] + col]
        rows, blks = row.expand(g, b, p, qb).reshape(g, -1), blk.expand(g, b, p, qb).reshape(g, -1)
        feats = features(rows, blks, self.geo)
        quant = self.settings.quant_bits
        mixed = self.settings.precision == "bf16"
        with torch.autocast(self.flat.device.type, dtype=torch.bfloat16, enabled=mixed):
            preds = [inr_apply(params, feats[sl], arch, quant)
                     for arch, sl, params in zip(self.archs, self.arch_slices, self.params, strict=True)]
        pred = (preds[0] if len(preds) == 1 else torch.cat(preds)).float().reshape(g, b, p, qb * bl)
        s = self.settings
        return _loss.layer_losses(pred, target, s.lambda_grad, s.lambda_freq, s.focal_alpha, s.gdl)

    def finite(self) -> torch.Tensor:
        oks = []
        for group in self.params:
            ok = torch.ones(next(iter(group.values())).shape[0], dtype=torch.bool, device=self.flat.device)
            for p in group.values():
                ok &= torch.isfinite(p.detach()).flatten(1).all(dim=1)
            oks.append(ok)
        return torch.cat(oks)

    def layer_params(self) -> list[dict[str, torch.Tensor]]:
        out = []
        for group in self.params:
            stacked = {k: p.detach().cpu() for k, p in group.items()}
            n = next(iter(stacked.values())).shape[0]
            out.extend({k: v[j].clone() for k, v in stacked.items()} for j in range(n))
        return out


def _crop_key(task: LayerTask, settings: FitSettings) -> tuple:
    return (task.arch.coord_dims, task.arch.feature_dim, task.arch.block, task.geometry.layout,
            *crop_shape(task.target.shape[0], task.target.shape[1], task.arch.block, settings))


def count_groups(tasks: list[LayerTask], settings: FitSettings) -> int:
    """How many stacked INR groups (crop shape x architecture) a batched fit of ``tasks`` uses."""
    return len({(_crop_key(t, settings), t.arch) for t in tasks})


def _fit_together(tasks: list[LayerTask], settings: FitSettings, device: torch.device,
                  progress: Progress | None = None) -> list[LayerResult]:
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        by_key[_crop_key(t, settings)].append(i)
    order = []
    for idx in by_key.values():  # layers of one architecture next to each other
        archs = list(dict.fromkeys(tasks[i].arch for i in idx))
        idx.sort(key=lambda i: archs.index(tasks[i].arch))
        order.extend(idx)
    groups = [_Group([tasks[i] for i in idx], settings, device) for idx in by_key.values()]
    columns = []
    start = 0
    for idx in by_key.values():
        columns.append(slice(start, start + len(idx)))
        start += len(idx)
    params = [p for g in groups for p in g.parameters()]
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=fused)
    steps = settings.steps
    history = torch.zeros(steps, len(tasks), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for step in range(steps):
        lr = settings.lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))  # cosine annealing to 0
        for pg in opt.param_groups:
            pg["lr"] = lr
        total = None
        for g, cols in zip(groups, columns, strict=True):
            layer_loss = g.losses(step)
            history[step, cols] = layer_loss.detach()
            total = layer_loss.sum() if total is None else total + layer_loss.sum()
        opt.zero_grad(set_to_none=True)
        assert total is not None
        total.backward()
        opt.step()
        if progress is not None and (step + 1) % PROGRESS_EVERY == 0:
            progress.update(PROGRESS_EVERY)
    if progress is not None and steps % PROGRESS_EVERY:
        progress.update(steps % PROGRESS_EVERY)
    sync()
    seconds = time.perf_counter() - t0
    finite = (torch.cat([g.finite() for g in groups]) & torch.isfinite(history).all(dim=0)).cpu()
    history = history.cpu()
    params_in_order = [p for g in groups for p in g.layer_params()]
    results: list[LayerResult | None] = [None] * len(tasks)
    for col, i in enumerate(order):
        results[i] = LayerResult(params_in_order[col], history[:, col].clone(), bool(finite[col]), seconds)
    return [r for r in results if r is not None]


def fit_layers(tasks: list[LayerTask], settings: FitSettings, device: torch.device, batched: bool = True,
               progress: Progress | None = None) -> list[LayerResult]:
    """Fit every task's INR; batched (one computation for all) or the naive per-layer loop.

    ``progress`` (optional) is advanced by the steps taken (per layer in the naive loop).
    """
    if not tasks:
        return []
    if batched:
        return _fit_together(tasks, settings, device, progress)
    return [_fit_together([t], settings, device, progress)[0] for t in tasks]
