"""The built-in task: image classification.

``run`` is the plain forward pass over the eval set (:func:`b2s_bench.metrics.run_model`, CPU batches
bounded) with the outputs named as the classification metrics read them: ``logits`` (N×C, fp32) and,
for a labeled set, ``labels`` (N). The dense model's reference keeps both (N×C floats are small).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench.metrics import run_model

if TYPE_CHECKING:  # torch loads only when a model runs (registering imports none)
    import torch
    from torch import nn

    from b2s_bench.sources import LoadedData

__all__ = ["CLASSIFICATION", "classify"]


def classify(model: nn.Module, data: LoadedData, device: torch.device, batch_size: int) -> dict[str, torch.Tensor]:
    """``{"logits": N×C, "labels": N}`` on the CPU (no ``labels`` for an unlabeled set)."""
    logits, labels = run_model(model, data, device, batch_size)
    return {"logits": logits} if labels is None else {"logits": logits, "labels": labels}


CLASSIFICATION = b2s.TaskSpec(
    "classification",
    classify,
    "one class per example: outputs logits (N×C) and labels (N); top-1/top-5, agreement and KL read them",
)


@b2s.hookimpl
def b2s_register_tasks(register: Callable[[b2s.TaskSpec], None]) -> None:
    register(CLASSIFICATION)
