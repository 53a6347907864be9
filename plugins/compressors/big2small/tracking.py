"""The convergence curve of every layer's fit, and when a layer stops.

Every ``eval_every`` steps (and at the last) each layer's INR is evaluated on its fixed sample of
entries (``sampling.eval_coords``) and the weight PSNR there is recorded next to the mean training
loss since the previous point and the wall time. The PSNR is in the weight domain, as the
``weight_psnr`` metric defines it (10·log10(range² / MSE), range = max − min of the original
tensor, outliers exact), of the parameters as they would be stored (fake-quantized during
quantization-aware fitting), so the curve's last point estimates the final PSNR.

A layer stops (its parameters are kept as they were at that point) when its PSNR reaches
``target_psnr`` (> 0), or when the best PSNR has not improved by ``min_delta_db`` over the last
``patience`` points (> 0); otherwise it runs its step budget (its stop reason is ``budget`` unless a
rule holds at the last point). The fit ends when every layer stopped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

__all__ = ["StopRule", "Tracker", "auto_eval_every", "CURVE_POINTS"]

CURVE_POINTS = 20  # points of a curve when eval_every is 0 (automatic)


def auto_eval_every(steps: int, eval_every: int) -> int:
    return eval_every if eval_every > 0 else max(1, math.ceil(steps / CURVE_POINTS))


@dataclasses.dataclass(frozen=True)
class StopRule:
    eval_every: int  # steps between curve points (> 0)
    target_psnr: float = 0.0  # dB; 0: off
    patience: int = 0  # curve points without improvement; 0: off
    min_delta_db: float = 0.05


class Tracker:
    """Curves and stop decisions of G layers fitted together (steps are counted from ``offset``)."""

    def __init__(self, n: int, steps: int, rule: StopRule, offset: int = 0):
        self.n, self.steps, self.rule, self.offset = n, steps, rule, offset
        self.curves: list[dict[str, list[float]]] = [{"step": [], "train_loss": [], "psnr": [], "seconds": []} for _ in range(n)]
        self.active = torch.ones(n, dtype=torch.bool)
        self.steps_run = [steps] * n
        self.reasons = ["budget"] * n
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self._loss_sum = torch.zeros(n, dtype=torch.float64)
        self._loss_count = 0

    def add_loss(self, losses: torch.Tensor) -> None:
        self._loss_sum += losses.detach().double().cpu()
        self._loss_count += 1

    def due(self, step: int) -> bool:
        return (step + 1) % self.rule.eval_every == 0 or step + 1 == self.steps

    def record(self, step: int, psnr: torch.Tensor, seconds: float, snapshot: Callable[[int], dict[str, torch.Tensor]]) -> None:
        """Add a curve point for every active layer, and stop the layers whose rule fires."""
        mean_loss = (self._loss_sum / max(self._loss_count, 1)).tolist()
        self._loss_sum.zero_()
        self._loss_count = 0
        values = psnr.detach().double().cpu().tolist()
        for i in range(self.n):
            if not self.active[i]:
                continue
            curve = self.curves[i]
            curve["step"].append(self.offset + step + 1)
            curve["train_loss"].append(mean_loss[i])
            curve["psnr"].append(values[i])
            curve["seconds"].append(seconds)
            reason = self._reason(curve["psnr"])
            if reason:  # at the last point too: a fit that reached its rule there did not stop on budget
                self.reasons[i] = reason
            if reason and step + 1 < self.steps:
                self.active[i] = False
                self.steps_run[i] = step + 1
                self.snapshots[i] = snapshot(i)

    def _reason(self, psnrs: list[float]) -> str | None:
        r = self.rule
        if r.target_psnr > 0 and psnrs[-1] >= r.target_psnr:
            return "target_psnr"
        if r.patience > 0 and len(psnrs) > r.patience:
            before = max(psnrs[: -r.patience])
            if max(psnrs[-r.patience :]) < before + r.min_delta_db:
                return "plateau"
        return None

    @property
    def done(self) -> bool:
        return not bool(self.active.any())
