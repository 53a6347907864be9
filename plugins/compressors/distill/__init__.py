"""Knowledge distillation into a smaller student: on real training data, or data-free on synthesized inputs.

Theory form: the decoder is a separate, smaller network f_ψ (the student architecture is the
constraint, dim ψ ≤ budget), fitted to the teacher's function by the KD loss (Hinton et al. 2015)

    L = (1 − α)·CE(y, σ(z_s)) + α·τ²·KL(σ(z_t/τ) ‖ σ(z_s/τ)),   τ = 4, α = 0.9 by default.

``data: real`` trains on the training split (the training track). ``data: synthetic`` is data-free
KD (the synthetic track): inputs are synthesized from the teacher's BatchNorm statistics,
DeepInversion-style (``synthesis.py``), and the student learns the KD term alone on them.

The student is built by its model source name (``ctx.build_model``) with no pretrained weights
(an ImageNet-pretrained student would leak data into a data-free claim), under ``ctx.seed``.

Bits: the student's whole inference state, stored raw (its parameters and BN buffers at their
dtype), against the teacher's fp32 baseline: the ratio is fixed by the architecture pair.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

import b2s_bench as b2s
from b2s_bench import Compressed, CompressorSpec, Context, check, inference_state, skeleton_of

from ...data.synthesis import SynthesisConfig, synthesize

__all__ = ["DistillConfig", "SPEC", "kd_loss", "build_student", "compress"]


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Settings of ``distill``.

    Attributes:
        student: model source name of the student architecture ("timm:mobilenetv3_small_050", "tiny:cnn").
        data: "real" (KD on the training split) or "synthetic" (data-free KD on synthesized inputs).
        epochs: passes over the training data (real) or over the synthesized set (synthetic).
        steps: stop after this many optimizer steps (0: no limit).
        lr / optimizer / weight_decay / momentum: the student's optimizer (cosine learning rate
            when the number of steps is known).
        temperature / alpha: τ and α of the KD loss (α is 1 on synthetic data: no labels).
        batch_size: student batch size on synthetic data (real data comes in the dataset's batches).
        synthetic_samples / synthetic_batch_size / synthetic_iterations / synthetic_lr: how many
            inputs are synthesized, how many together, and the optimisation of each batch.
        bn_weight / first_bn_multiplier / ce_weight / tv_weight / l2_weight / jitter / flip: the
            weights of the synthesis terms (DeepInversion's defaults); see ``synthesis.py``.
    """

    student: str = "timm:mobilenetv3_small_050"
    data: Literal["real", "synthetic"] = "real"
    epochs: int = 1
    steps: int = 0
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    temperature: float = 4.0
    alpha: float = 0.9
    batch_size: int = 64
    synthetic_samples: int = 256
    synthetic_batch_size: int = 64
    synthetic_iterations: int = 2000
    synthetic_lr: float = 0.2
    bn_weight: float = 0.05
    first_bn_multiplier: float = 10.0
    ce_weight: float = 1.0
    tv_weight: float = 1e-4
    l2_weight: float = 1e-5
    jitter: float = 30 / 224
    flip: bool = True

    def __post_init__(self) -> None:
        check(
            ":" in self.student,
            f"student must be a model source name like 'tiny:cnn', got {self.student!r}",
            "student",
        )
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}", "epochs")
        check(self.steps >= 0, f"steps must be >= 0, got {self.steps}", "steps")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}", "momentum")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}", "temperature")
        check(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}", "alpha")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        check(
            self.synthetic_samples >= 2,
            f"synthetic_samples must be >= 2, got {self.synthetic_samples}",
            "synthetic_samples",
        )
        self.synthesis()  # validates the synthesis settings, naming the key

    def synthesis(self) -> SynthesisConfig:
        try:
            return SynthesisConfig(
                samples=self.synthetic_samples,
                batch_size=self.synthetic_batch_size,
                iterations=self.synthetic_iterations,
                lr=self.synthetic_lr,
                bn_weight=self.bn_weight,
                first_bn_multiplier=self.first_bn_multiplier,
                ce_weight=self.ce_weight,
                tv_weight=self.tv_weight,
                l2_weight=self.l2_weight,
                jitter=self.jitter,
                flip=self.flip,
            )
        except b2s.ConfigError as e:
            own = {
                "samples": "synthetic_samples",
                "batch_size": "synthetic_batch_size",
                "iterations": "synthetic_iterations",
                "lr": "synthetic_lr",
            }.get(e.key or "", e.key)
            raise b2s.ConfigError(
                str(e).replace(f"{e.key} ", f"{own} ", 1) if e.key else str(e), own
            ) from None


def data_track(config: DistillConfig) -> str:
    return "training" if config.data == "real" else "synthetic"


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """(1 − α)·CE(y, σ(z_s)) + α·τ²·KL(σ(z_t/τ) ‖ σ(z_s/τ)); the KD term alone without labels."""
    t = temperature
    kl = (
        F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )
    if labels is None:
        return kl
    return (1 - alpha) * F.cross_entropy(student_logits, labels) + alpha * kl


def build_student(config: DistillConfig, teacher: nn.Module, ctx: Context) -> nn.Module:
    """The student architecture, freshly initialised under ``ctx.seed``, with the teacher's outputs."""
    if ctx.build_model is None:
        raise ValueError("distill needs ctx.build_model to build the student")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        student = ctx.build_model(config.student)
        for m in student.modules():  # a fresh student has no statistics of its own yet
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.reset_running_stats()
        student = student.to(ctx.device)
        if ctx.input_shape is not None:
            x = ctx.example_input(2)
            with torch.no_grad():
                n_t, n_s = teacher.eval()(x).shape[-1], student.eval()(x).shape[-1]
            if n_t != n_s:
                if not hasattr(student, "reset_classifier"):
                    raise ValueError(f"the student {config.student} has {n_s} outputs, the teacher {n_t}")
                student.reset_classifier(n_t)
                student = student.to(ctx.device)
    return student


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


def _synthetic_batches(
    images: torch.Tensor, config: DistillConfig, ctx: Context
) -> Iterable[tuple[torch.Tensor, None]]:
    """Each epoch: the synthesized set shuffled, in batches, randomly flipped when ``flip`` (seeded)."""
    gen = ctx.generator(2000)

    def epoch() -> Iterable[tuple[torch.Tensor, None]]:
        order = torch.randperm(images.shape[0], generator=gen)
        for i in range(0, images.shape[0], config.batch_size):
            x = images[order[i : i + config.batch_size]]
            if config.flip and x.dim() == 4:
                flip = torch.rand(x.shape[0], generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield x, None

    return epoch


def compress(model: nn.Module, config: DistillConfig, ctx: Context) -> Compressed:
    t0 = time.perf_counter()
    teacher = model.eval()
    info: dict[str, Any] = {
        "teacher": type(teacher).__name__,
        "student": config.student,
        "data": config.data,
        "data_track": data_track(config),
    }
    if config.data == "real":
        if ctx.training is None:
            raise ValueError(
                "distill with data: real needs the training split (the training track); none was given"
            )
        epoch = ctx.training
        alpha = config.alpha
        per_epoch = None
    else:
        with torch.no_grad():
            classes = ctx.num_classes or int(teacher(ctx.example_input(2)).shape[-1])
        made = synthesize(teacher, config.synthesis(), ctx, num_classes=classes)
        info["synthesis"] = made.info()
        epoch = _synthetic_batches(made.images, config, ctx)
        alpha = 1.0
        per_epoch: int | None = math.ceil(made.images.shape[0] / config.batch_size)
    student = build_student(config, teacher, ctx)

    first = epoch()
    if per_epoch is None and hasattr(first, "__len__"):
        per_epoch = len(first)  # type: ignore[arg-type]
    total = per_epoch * config.epochs if per_epoch is not None else None
    if config.steps:
        total = min(total, config.steps) if total is not None else config.steps
    opt = _optimizer(config, student.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))) if total else (lambda i: 1.0)
    )
    losses: list[float] = []
    bar = ctx.progress(total or 0, "distill")
    student.train()
    try:
        with torch.enable_grad():
            for e in range(config.epochs):
                for x, y in first if e == 0 else epoch():
                    x = x.to(ctx.device)
                    labels = y.to(ctx.device) if y is not None and alpha < 1 else None
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = kd_loss(student(x), t_logits, labels, config.temperature, alpha)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    bar.update(1)
                    bar.set_postfix_str(f"loss {losses[-1]:.3g}")
                    if config.steps and len(losses) >= config.steps:
                        break
                if config.steps and len(losses) >= config.steps:
                    break
    finally:
        bar.close()
    student.eval()

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


SPEC = CompressorSpec(
    name="distill",
    family="distillation",
    track=data_track,
    config=DistillConfig,
    compress=compress,
    codes=(),
    identity=None,  # none: the student is another network, trained, never the teacher itself
    version="1",
    description="knowledge distillation into a smaller student: Hinton KD on real data, or data-free "
    "(DeepInversion-style inputs from the teacher's BN statistics)",
    uses_gpu=True,
    quick={
        "student": "tiny:cnn",
        "epochs": 1,
        "steps": 4,
        "batch_size": 8,
        "synthetic_samples": 8,
        "synthetic_batch_size": 8,
        "synthetic_iterations": 5,
    },
)


@b2s.hookimpl
def b2s_register_compressors(register: Any) -> None:
    register(SPEC)
