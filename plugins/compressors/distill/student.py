"""The student and its loss: a fresh student architecture, and Hinton's KD loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from b2s_bench import Context

from .config import DistillConfig

__all__ = ["kd_loss", "labels_loss", "build_student"]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """(1 − α)·CE(y, σ(z_s)) + α·τ²·KL(σ(z_t/τ) ‖ σ(z_s/τ)); the KD term alone without labels.

    Sequence outputs (a language model's N×T×V logits, N×T next tokens) count every position as an
    example: both terms are means over the N·T positions. Per-pixel logits (N x C x H x W,
    segmentation) are distilled pixel by pixel, the KL averaged over pixels (the pixel-wise KD of
    dense prediction): over the C classes for C > 1, and between the Bernoulli distributions σ(z/τ)
    for C = 1 (binary masks, whose labels term is binary cross-entropy). Mask pixels labelled 255
    (ignore) count in no labels term.
    """
    t = temperature
    if student_logits.dim() == 4:
        return _dense_kd_loss(student_logits, teacher_logits, labels, t, alpha)
    if student_logits.dim() > 2:
        student_logits = student_logits.reshape(-1, student_logits.shape[-1])
        teacher_logits = teacher_logits.reshape(-1, teacher_logits.shape[-1])
        labels = None if labels is None else labels.reshape(-1)
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
    return (1 - alpha) * labels_loss(student_logits, labels) + alpha * kl


IGNORE = 255  # the mask value of pixels no loss counts


def labels_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The supervised loss of a model's outputs against the labels, for any task's layout: cross-entropy
    over classes for N x C logits; over the N·T positions for N x T x V (a language model's next tokens);
    pixel by pixel for N x C x H x W masks (binary cross-entropy of the foreground for C = 1); mask
    pixels labelled 255 (ignore) count nowhere."""
    if logits.dim() == 4:
        if logits.shape[1] == 1:
            keep = (labels != IGNORE).unsqueeze(1)
            target = torch.where(keep, labels.unsqueeze(1), torch.zeros_like(labels.unsqueeze(1))).to(logits.dtype)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            return (bce * keep).sum() / keep.sum().clamp_min(1)
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)
    if logits.dim() > 2:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return F.cross_entropy(logits, labels)


def _dense_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None, t: float, alpha: float
) -> torch.Tensor:
    """:func:`kd_loss` for N x C x H x W logits, pixel by pixel."""
    if student_logits.shape[1] == 1:  # binary: KL(Bernoulli(σ(z_t/τ)) ‖ Bernoulli(σ(z_s/τ))) per pixel
        s, q = student_logits / t, torch.sigmoid(teacher_logits / t)
        # KL = q log q + (1-q) log(1-q) - [q log σ(s) + (1-q) log σ(-s)]; the BCE of s against q minus q's entropy
        entropy = F.binary_cross_entropy(q, q, reduction="none")
        kl = (F.binary_cross_entropy_with_logits(s, q, reduction="none") - entropy).mean() * t * t
        return kl if labels is None else (1 - alpha) * labels_loss(student_logits, labels) + alpha * kl
    log_s = F.log_softmax(student_logits / t, dim=1)
    log_t = F.log_softmax(teacher_logits / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1).mean() * t * t
    return kl if labels is None else (1 - alpha) * labels_loss(student_logits, labels) + alpha * kl


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
                reset_classifier = getattr(student, "reset_classifier", None)  # timm models have it
                if reset_classifier is None:
                    raise ValueError(f"the student {config.student} has {n_s} outputs, the teacher {n_t}")
                reset_classifier(n_t)
                student = student.to(ctx.device)
    return student
