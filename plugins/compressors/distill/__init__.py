"""Knowledge distillation into a smaller student: on real training data, or data-free on synthesized inputs.

Theory form: the decoder is a separate, smaller network f_ψ (the student architecture is the
constraint, dim ψ ≤ budget), fitted to the teacher's function by the KD loss (Hinton et al. 2015)

    L = (1 − α)·CE(y, σ(z_s)) + α·τ²·KL(σ(z_t/τ) ‖ σ(z_s/τ)),   τ = 4, α = 0.9 by default.

``data: real`` trains on the training split (the training track). ``data: synthetic`` is data-free
KD (the synthetic track): inputs are synthesized from the teacher's BatchNorm statistics,
DeepInversion-style (:mod:`b2s_bench.calibration.synthesis`), and the student learns the KD term alone on them.

The student is built by its model source name (``ctx.build_model``) with no pretrained weights
(an ImageNet-pretrained student would leak data into a data-free claim), under ``ctx.seed``.

Bits: the student's whole inference state, stored raw (its parameters and BN buffers at their
dtype), against the teacher's fp32 baseline: the ratio is fixed by the architecture pair.

The package: :mod:`.config`, :mod:`.student` (the student and the KD loss), :mod:`.compressor`
(training, on :func:`b2s_bench.fitting.train_loop`), and here its registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import CompressorSpec

from .config import DistillConfig, data_track

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use (torch)
    from .compressor import compress
    from .student import build_student, kd_loss

__all__ = ["DistillConfig", "SPEC", "kd_loss", "build_student", "compress", "data_track"]

__getattr__, __dir__ = b2s.lazy_exports(
    __name__,
    globals(),
    {
        "compress": ".compressor",
        "build_student": ".student",
        "kd_loss": ".student",
    },
)

SPEC = CompressorSpec(
    name="distill",
    family="distillation",
    track=data_track,
    config=DistillConfig,
    compress=b2s.lazy(".compressor:compress", __name__),
    codes=(),
    identity=None,  # none: the student is another network, trained, never the teacher itself
    version="1",
    defaults_source=(
        "Hinton et al. 2015 KD with τ 4, α 0.9 (common practice: the paper fixes no value); synthesis weights"
        " from DeepInversion's code (Yin et al. CVPR 2020); ours: the student and the optimizer"
    ),
    description="knowledge distillation into a smaller student: Hinton KD on real data, or data-free "
    "(DeepInversion-style inputs from the teacher's BN statistics)",
    uses_gpu=True,
    cost=b2s.lazy(".config:cost", __name__),
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
def b2s_register_compressors(register: Callable[[b2s.CompressorSpec], None]) -> None:
    register(SPEC)
