"""One optimizer loop, shared by everything that trains: zoo models, distilled students, inputs
synthesized from BatchNorm statistics, NeRN's predictor (and plugins that need the same).

The loop owns the order of one step (zero the gradients, compute the loss, backpropagate, step the
optimizer, then the scheduler, then a hook) and the bookkeeping around it (logged losses, a check
for a diverged loss, the progress bar). What a step computes, and where its batches come from, stay
with the caller: the loop draws nothing at random itself, so a seeded caller stays bit-for-bit
reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

from ..compression.compressor import Progress

__all__ = ["TrainResult", "train_loop", "cosine_schedule"]

Batch = TypeVar("Batch")
#: a learning-rate scheduler stepped once per step, or a factor of the base rate per step (LambdaLR)
Schedule = torch.optim.lr_scheduler.LRScheduler | Callable[[int], float]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train_loop` did.

    Attributes:
        steps: optimizer steps taken.
        losses: the loss at steps 0, ``log_every``, 2·``log_every``, ... and at the last step.
    """

    steps: int
    losses: tuple[float, ...]


def cosine_schedule(steps: int, warmup: int = 0) -> Callable[[int], float]:
    """A learning-rate factor per step: linear warm-up, then a cosine decay to 0 at ``steps``.

    Past ``steps`` the factor stays 0. The decay is 0.5·(1 + cos(π·min(s, n) / n)) with s the step
    after warm-up and n = max(steps − warmup, 1), computed in that order (π·s first, then / n).
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        span = max(steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))

    return factor


def _checked(loss: float, step: int) -> float:
    if not math.isfinite(loss):
        raise FloatingPointError(f"the training loss became {loss} at step {step}")
    return loss


def train_loop(
    optimizer: torch.optim.Optimizer,
    step_loss: Callable[[Batch], torch.Tensor],
    batches: Iterable[Batch] | int,
    *,
    scheduler: Schedule | None = None,
    after_step: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    log_every: int = 100,
    postfix: Callable[[float], str] | None = None,
) -> TrainResult:
    """Take one optimizer step per batch: ``step_loss(batch)`` computes the loss to minimize.

    Each step zeroes the gradients, computes the loss, backpropagates, steps the optimizer, then the
    scheduler (per step, not per epoch), then ``after_step(step)`` (e.g. a projection), then the
    progress bar. The caller sets the module's train/eval mode and grad mode.

    Args:
        step_loss: the loss of one batch (it may draw the batch itself; see ``batches``).
        batches: what each step gets: a data loader, a generator over epochs (capped with
            ``itertools.islice``), or an int n for the steps 0..n−1.
        scheduler: an LR scheduler, or a function step -> factor of the base learning rate (made a
            ``LambdaLR``, e.g. :func:`cosine_schedule`).
        after_step: called with the step index after the optimizer and scheduler steps.
        progress: advanced by one each step (not closed: a caller may share it between loops).
        log_every: log the loss every this many steps and at the last one; a logged loss is read
            back from the device, so on a GPU a larger value saves synchronizations.
        postfix: the progress bar's text for a logged loss, e.g. ``lambda loss: f"loss {loss:.3g}"``.

    Raises:
        FloatingPointError: a logged loss (or the last one) is not finite: training stops rather
            than carry NaN weights into a result.
    """
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scheduler)
    losses: list[float] = []
    unlogged: torch.Tensor | None = None  # the last step's loss until it is logged
    step = -1
    source: Iterable[Any] = range(batches) if isinstance(batches, int) else batches
    for step, batch in enumerate(source):
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(batch)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(step)
        unlogged = loss.detach()
        if step % log_every == 0:
            losses.append(_checked(float(unlogged), step))
            unlogged = None
            if progress is not None and postfix is not None:
                progress.set_postfix_str(postfix(losses[-1]))
        if progress is not None:
            progress.update(1)
    if unlogged is not None:
        losses.append(_checked(float(unlogged), step))
    return TrainResult(step + 1, tuple(losses))
