"""Tasks: what a dataset asks a model to do (classify images, label pixels, predict tokens), as plugins
register them. Importing it loads no torch.

A dataset declares its task (:attr:`b2s_bench.sources.DatasetSpec.task`); a metric the tasks it serves
(:attr:`b2s_bench.metrics.MetricSpec.tasks`). A task's :attr:`TaskSpec.run` turns a model and a
dataset into the outputs its metrics read (``Evaluation.outputs``): the runner calls it for the
compressed model of every cell and, once per model and data (cached on disk across cells and runs),
for the dense model (``Evaluation.baseline_outputs``). The core names no task: built-in ones are
plugins like any other.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch
    from torch import nn

    from .sources import LoadedData

__all__ = ["TaskSpec", "DEFAULT_TASK", "TASK_NAME", "AGGREGATES"]

#: the task of a dataset that declares none (every dataset before tasks existed classified images)
DEFAULT_TASK = "classification"
#: a task's name: lower-case words joined by "-" (it is written in records and error messages)
TASK_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
#: How a metric's per-example outcomes (``Evaluation.per_example[name]``) give its value
#: (``MetricSpec.aggregate``): "mean" (their mean, × 100 for a metric in %) or "exp_mean" (exp of
#: their mean: perplexity from per-window mean NLL). Reports resample the mean and transform each
#: resampled mean the same way (:func:`b2s_bench.reporting.stats.aggregated`).
AGGREGATES = ("mean", "exp_mean")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task plugin.

    Attributes:
        name: what datasets (``DatasetSpec.task``) and metrics (``MetricSpec.tasks``) call it, e.g.
            "classification", "segmentation", "language-modeling".
        run: ``run(model, data, device, batch_size) -> {name: tensor}``: the model's outputs on the
            whole eval set, on the CPU, in eval order (e.g. ``logits`` N×C and ``labels`` N). It must
            not depend on the batch size beyond float rounding. Metrics read the dict through
            ``Evaluation.outputs`` (the compressed model) and ``Evaluation.baseline_outputs`` (the dense
            model); ``b2s_bench.metrics.run_model`` is the plain forward pass most tasks wrap.
        description: one line, for ``b2s-bench ls tasks``.
        reference: ``reference(outputs) -> outputs``: what of the dense model's outputs is kept in the
            reference cache and given to metrics as ``baseline_outputs`` (e.g. per-pixel argmax
            predictions instead of N×C×H×W logits), so the cache stays small; None keeps them all.
        version: bump when ``run`` or ``reference`` changes what they return: a cached reference made
            by another version is not reused (the cache key holds it from version "2" on).
    """

    name: str
    run: Callable[[nn.Module, LoadedData, torch.device, int], Mapping[str, torch.Tensor]]
    description: str = ""
    reference: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]] | None = None
    version: str = "1"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not TASK_NAME.fullmatch(self.name):
            raise ValueError(
                f"task name {self.name!r}: use lower-case letters and digits, words joined by '-' (e.g. 'segmentation')"
            )
        if not callable(self.run):
            raise ValueError(f"task {self.name!r}: run must be callable, run(model, data, device, batch_size) -> dict")
        if self.reference is not None and not callable(self.reference):
            raise ValueError(f"task {self.name!r}: reference must be callable or None")
