"""The compressor: train the student on the teacher's outputs, and store its whole inference state."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import Compressed, Context, inference_state, skeleton_of
from b2s_bench.calibration import synthesize

from .config import DistillConfig, data_track
from .student import build_student, kd_loss

__all__ = ["compress"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor | None]]


def _optimizer(config: DistillConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _synthetic_batches(images: torch.Tensor, config: DistillConfig, ctx: Context) -> Callable[[], Batches]:
    """Each epoch: the synthesized set shuffled, in batches, randomly flipped when ``flip`` (seeded)."""
    gen = ctx.generator(2000)

    def epoch() -> Iterator[tuple[torch.Tensor, None]]:
        order = torch.randperm(images.shape[0], generator=gen)
        for i in range(0, images.shape[0], config.batch_size):
            x = images[order[i : i + config.batch_size]]
            if config.flip and x.dim() == 4:
                flip = torch.rand(x.shape[0], generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield x, None

    return epoch


def _data(
    teacher: nn.Module, config: DistillConfig, ctx: Context, info: dict[str, Any]
) -> tuple[Callable[[], Batches], float, int | None]:
    """(a function giving one epoch of batches, α, batches per epoch if known) for the data setting."""
    if config.data == "real":
        if ctx.training is None:
            raise ValueError("distill with data: real needs the training split (the training track); none was given")
        return ctx.training, config.alpha, None
    with torch.no_grad():
        classes = ctx.num_classes or int(teacher(ctx.example_input(2)).shape[-1])
    made = synthesize(teacher, config.synthesis(), ctx, num_classes=classes)
    info["synthesis"] = made.info()
    return _synthetic_batches(made.images, config, ctx), 1.0, math.ceil(made.images.shape[0] / config.batch_size)


def _epochs(first: Batches, epoch: Callable[[], Batches], epochs: int) -> Iterator[tuple[torch.Tensor, Any]]:
    """The batches of ``epochs`` epochs: ``first`` (already made), then a new ``epoch()`` for each other."""
    for e in range(epochs):
        yield from first if e == 0 else epoch()


def _train(
    student: nn.Module,
    teacher: nn.Module,
    config: DistillConfig,
    ctx: Context,
    epoch: Callable[[], Batches],
    alpha: float,
    per_epoch: int | None,
) -> list[float]:
    """Train the student on the KD loss, one optimizer step per batch; the loss of every step."""
    first = epoch()
    if per_epoch is None and hasattr(first, "__len__"):
        per_epoch = len(first)  # type: ignore[arg-type]
    total = per_epoch * config.epochs if per_epoch is not None else None
    if config.steps:
        total = min(total, config.steps) if total is not None else config.steps

    def step_loss(batch: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        x, y = batch
        x = x.to(ctx.device)
        labels = y.to(ctx.device) if y is not None and alpha < 1 else None
        with torch.no_grad():
            t_logits = teacher(x)
        return kd_loss(student(x), t_logits, labels, config.temperature, alpha)

    opt = _optimizer(config, student.parameters())
    cosine = (lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))) if total else None
    batches = itertools.islice(_epochs(first, epoch, config.epochs), config.steps or None)
    bar = ctx.progress(total or 0, "distill")
    student.train()
    try:
        with torch.enable_grad():
            result = b2s.fitting.train_loop(
                opt, step_loss, batches, scheduler=cosine, progress=bar, log_every=1, postfix=lambda loss: f"loss {loss:.3g}"
            )
    finally:
        bar.close()
    student.eval()
    return list(result.losses)


def _result(
    teacher: nn.Module,
    student: nn.Module,
    config: DistillConfig,
    losses: list[float],
    alpha: float,
    info: dict[str, Any],
    t0: float,
) -> Compressed:
    """The student's whole inference state, stored raw, replacing the teacher's; the facts in ``info``."""
    raw = {k: v.detach().cpu().clone() for k, v in inference_state(student).items()}
    teacher_state = inference_state(teacher)
    head = max(1, len(losses) // 10)
    info.update(
        {
            "architecture_pair": f"{type(teacher).__name__} -> {config.student}",
            "teacher_params": sum(p.numel() for p in teacher.parameters()),
            "student_params": sum(p.numel() for p in student.parameters()),
            "student_state_numel": sum(v.numel() for v in raw.values()),
            "steps": len(losses),
            "epochs": config.epochs,
            "temperature": config.temperature,
            "alpha": alpha,
            "loss_start": sum(losses[:head]) / head if losses else None,
            "loss_end": sum(losses[-head:]) / head if losses else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    return Compressed(
        codes={},
        raw=raw,
        skeleton=skeleton_of(student),
        original_shapes={k: tuple(v.shape) for k, v in teacher_state.items()},
        replaced=list(teacher_state),
        architecture=config.student,
        info=info,
    )


def compress(model: nn.Module, config: DistillConfig, ctx: Context) -> Compressed:
    """Distill ``model`` (the teacher) into a fresh student of ``config.student``."""
    t0 = time.perf_counter()
    teacher = model.eval()
    info: dict[str, Any] = {
        "teacher": type(teacher).__name__,
        "student": config.student,
        "data": config.data,
        "data_track": data_track(config),
    }
    epoch, alpha, per_epoch = _data(teacher, config, ctx, info)
    student = build_student(config, teacher, ctx)
    losses = _train(student, teacher, config, ctx, epoch, alpha, per_epoch)
    return _result(teacher, student, config, losses, alpha, info, t0)
