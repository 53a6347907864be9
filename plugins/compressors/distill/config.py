"""The settings of ``distill`` and the data track they need."""

from __future__ import annotations

import dataclasses
from typing import Literal

import b2s_bench as b2s
from b2s_bench import check
from b2s_bench.calibration import SynthesisConfig

__all__ = ["DistillConfig", "data_track"]


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
            weights of the synthesis terms (DeepInversion's defaults); see :mod:`b2s_bench.calibration.synthesis`.
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
            raise b2s.ConfigError(str(e).replace(f"{e.key} ", f"{own} ", 1) if e.key else str(e), own) from None


def data_track(config: DistillConfig) -> str:
    return "training" if config.data == "real" else "synthetic"


def cost(config: DistillConfig) -> float:
    """A cell's expected time in rounding passes (only the order a run starts its cells depends on it).

    An epoch trains on a training split, several times the evaluation split and with a backward pass,
    so one epoch is put above an INR fit's default (the ``inr`` family's 100): measured on the
    embedded suite's CNN, 1 epoch took 23 s against Big2Small's 15 s and NeRN's 4.5 s. Synthesis adds
    one pass per iteration and synthesized batch, counted at 1/20 (a small batch)."""
    epochs = 120.0 * max(config.epochs, 1)
    if config.steps:
        epochs = min(epochs, config.steps / 4)  # a capped fit: a few hundred steps are seconds
    synthesis = 0.0
    if config.data == "synthetic":
        batches = -(-config.synthetic_samples // config.synthetic_batch_size)
        synthesis = config.synthetic_iterations * batches / 20
    return 1.0 + epochs + synthesis
