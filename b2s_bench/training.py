"""One seeded optimizer loop, shared by everything that trains: zoo models, distilled students and
inputs synthesized from BatchNorm statistics (and plugins that need the same)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from .interface import Progress

__all__ = ["TrainResult", "train_loop", "cosine_schedule"]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    steps: int
    losses: tuple[float, ...]  # the loss every ``log_every`` steps, and at the last step


def cosine_schedule(steps: int, warmup: int = 0) -> Callable[[int], float]:
    """A learning-rate factor per step: linear warm-up, then a cosine decay to 0 (for LambdaLR)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return factor


def train_loop(
    optimizer: torch.optim.Optimizer,
    step_loss: Callable[[int], torch.Tensor],
    steps: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: Progress | None = None,
    log_every: int = 100,
    after_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Run ``steps`` optimizer steps of ``step_loss(step)`` (which draws its own batch).

    Each step: zero the gradients, compute the loss, backpropagate, step the optimizer, then the
    scheduler (per step, not per epoch), then ``after_step(step)`` (e.g. a projection), then the
    progress bar. A non-finite loss stops training with a ``FloatingPointError`` naming the step,
    rather than carrying NaN weights into a result.
    """
    losses = []
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(step)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"the training loss became {float(loss)} at step {step} of {steps}")
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(step)
        if progress is not None:
            progress.update(1)
        if step % log_every == 0 or step == steps - 1:
            losses.append(float(loss.detach()))
    return TrainResult(steps, tuple(losses))
