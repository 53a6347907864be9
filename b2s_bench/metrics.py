"""Metrics: what plugins register, and the per-cell evaluation they read from.

An :class:`Evaluation` computes each expensive thing once per cell, lazily: the compressed model's
outputs, the dense model's outputs (cached per model and dataset by the runner), the size report
and the pairs of original and decoded weights. Metrics leave per-example outcomes in
``Evaluation.per_example`` (for confidence intervals) and facts in ``Evaluation.details``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing this module loads no torch: what needs it imports it where it runs
    import torch
    from torch import nn

    from .compression.compressed import Compressed
    from .compression.sizes import SizeReport
    from .sources import LoadedData, LoadedModel

from .tasks import AGGREGATES, TaskSpec

__all__ = [
    "MetricSpec",
    "TaskSpec",
    "Evaluation",
    "NotApplicable",
    "run_model",
    "ROLES",
    "AGGREGATES",
    "REPARAMETRIZED",
    "default_metrics",
]

#: What a metric may declare itself: in a suite's metrics when it lists none ("default"), a
#: candidate for the quality axis of Pareto plots and equal-bits verdicts ("primary", ordered by
#: ``rank``), or a theory check shown with the checks, not as a leaderboard column ("check").
ROLES = ("default", "primary", "check")


NO_WEIGHT_PAIRS = "no tensor was replaced with its shape kept (e.g. distillation or structured pruning)"

#: The key of a compressor's ``info`` (or of a pipeline stage's entry) saying why its decoded weights are
#: an equivalent reparametrization of the dense ones (per-channel scales folded from one layer into
#: another, as AWQ and SmoothQuant do), so that no weight-by-weight comparison with the dense tensors
#: measures it: the weight metrics and the rate–distortion limits are then not applicable, with this reason.
REPARAMETRIZED = "reparametrized"


class NotApplicable(Exception):
    """The cell lacks what this metric needs (labels, a dataset); recorded as an empty value."""


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """A metric plugin.

    Attributes:
        unit: shown in leaderboard headers ("%", "nats", "bits", "x", "dB", "s", "ms", ""). Only a
            metric of kind "size" in "bits" is shown as a stored size in MB; others keep their unit.
        higher_is_better: the direction (↑ or ↓ in headers).
        compute: ``compute(evaluation) -> float``.
        needs: what it reads: any of "labels", "data", "weights".
        version: bump when the definition changes (it is part of cell ids).
        kind: "quality" (compared with the dense model: deltas, Pareto y-axis), "size",
            "weights" or "time".
        roles: any of :data:`ROLES`.
        rank: among "primary" metrics, lower is preferred (a suite's ``report.primary`` wins).
        identity_target: the value an identity setting (32-bit, 0 % pruning, full rank) must
            reach, in the metric's better direction, to count as reproducing the dense model.
        tasks: the tasks (``TaskSpec.name``) whose outputs it reads, e.g. ``{"classification"}``; None
            serves every task (sizes, times, weights). A suite that asks for it on a dataset of
            another task is refused at validation.
        aggregate: how its per-example outcomes give the value, one of :data:`AGGREGATES`
            ("mean", or "exp_mean" for a perplexity); reports read it from the record.
    """

    name: str
    unit: str
    higher_is_better: bool
    compute: Callable[[Evaluation], float]
    needs: frozenset[str] = frozenset()
    description: str = ""
    version: str = "1"
    kind: str = "quality"
    roles: frozenset[str] = frozenset()
    rank: int = 100
    identity_target: float | None = None
    tasks: frozenset[str] | None = None
    aggregate: str = "mean"

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"metric {self.name!r}: unknown roles {sorted(unknown)}; roles are {ROLES}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"metric {self.name!r}: aggregate {self.aggregate!r} is not one of {AGGREGATES}")
        if self.tasks is not None:
            if isinstance(self.tasks, str) or not all(isinstance(t, str) and t for t in self.tasks) or not self.tasks:
                raise ValueError(
                    f"metric {self.name!r}: tasks must be a non-empty frozenset of task names "
                    f"(e.g. frozenset({{'classification'}})) or None for every task, got {self.tasks!r}"
                )
            object.__setattr__(self, "tasks", frozenset(self.tasks))

    def serves(self, task: str) -> bool:
        """Whether this metric can score a dataset of ``task``."""
        return self.tasks is None or task in self.tasks

    def record_entry(self, value: float | None) -> dict[str, Any]:
        """How a value of this metric is stored in a record (with what reports need to know of it)."""
        return {
            "value": value,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "kind": self.kind,
            "roles": sorted(self.roles),
            "rank": self.rank,
            "identity_target": self.identity_target,
            "description": self.description,
            "tasks": None if self.tasks is None else sorted(self.tasks),
            "aggregate": self.aggregate,
        }


def default_metrics(registry: Any, tasks: Iterable[str] = ()) -> list[str]:
    """The metrics a suite gets when it lists none: those registered with the "default" role (and,
    given the suite's dataset tasks, only those that serve every one of them)."""
    needed = set(tasks)
    return [m.name for m in registry if "default" in m.roles and all(m.serves(t) for t in needed)]


#: On a CPU, an evaluation batch holds at most this many input values (7 images of 3x224x224): on an
#: idle 2-core machine, EfficientNet-Lite0 on the 72 photo crops took 1.15 s at 2^20 values a batch,
#: 1.40 s at 2^21 and 1.77 s at 2^22, with peaks of 1,125, 1,300 and 1,575 MB (benchmarks: the cell's
#: evaluation, best of 2). Examples are independent in eval mode, so the outputs are the same.
CPU_BATCH_VALUES = 1 << 20


def run_model(
    model: nn.Module, data: LoadedData, device: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's outputs for the whole eval set (on the CPU, fp32, concatenated along the first
    dimension) and the dataset's targets (labels, masks; or None): the plain forward pass that a
    task's ``run`` wraps (CPU batches bounded by :data:`CPU_BATCH_VALUES`)."""
    import torch

    with torch.inference_mode():
        return _run_model(model, data, device, batch_size)


def _run_model(
    model: nn.Module, data: LoadedData, device: torch.device, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    model.eval()
    outs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    non_blocking = device.type == "cuda"
    for x, y in data.eval_batches(batch_size):
        if device.type == "cpu" and x.numel() > CPU_BATCH_VALUES:  # large inputs: bounded activations
            step = max(1, CPU_BATCH_VALUES // max(1, x[0].numel()))
            outs.extend(model(part).float() for part in x.split(step))
        else:
            outs.append(model(x.to(device, non_blocking=non_blocking)).float().cpu())
        if y is not None:
            labels.append(y)
    logits = torch.cat(outs) if outs else torch.empty(0)
    return logits, (torch.cat(labels) if labels else None)


class Evaluation:
    """Everything a metric may read about one cell; each piece is computed at most once.

    ``outputs`` and ``baseline_outputs`` are the task's dicts (:attr:`TaskSpec.run`) for the
    compressed and the dense model; ``logits``, ``labels`` and ``baseline_logits`` read the entries of
    those names (a classification task's outputs). Without a ``task`` (tests, old callers) the
    outputs are :func:`run_model`'s, as ``{"logits": outputs, "labels": targets}``.
    """

    def __init__(
        self,
        model: nn.Module,
        baseline: LoadedModel,
        compressed: Compressed,
        data: LoadedData | None,
        device: torch.device,
        batch_size: int,
        baseline_outputs: Callable[[], Any],
        timings: Mapping[str, float],
        artifact_dir: str | None = None,
        latency_repeats: int = 20,
        task: TaskSpec | None = None,
    ):
        self.model = model
        self.baseline = baseline
        self.compressed = compressed
        self.data = data
        self.device = device
        self.batch_size = batch_size
        self._baseline_outputs = baseline_outputs
        self.timings = dict(timings)
        self.artifact_dir = artifact_dir
        self.latency_repeats = latency_repeats
        self.task = task
        self.details: dict[str, Any] = {}  # metrics may leave per-layer facts here for the record
        #: one value per evaluation example, by metric name (a bool hit, a float loss), in eval-set
        #: order; stored in the record (b2s_bench.store.samples) so reports can draw confidence intervals
        #: and paired tests over the same examples (resampling the dataset's clusters). The metric's
        #: value must follow from them by its ``aggregate``: their mean (× 100 for a metric in %), or
        #: exp of their mean ("exp_mean"), or reports leave it without an interval.
        self.per_example: dict[str, torch.Tensor] = {}

    def require_data(self) -> LoadedData:
        if self.data is None:
            raise NotApplicable("this metric needs a dataset; add `dataset:` to the suite or the model entry")
        return self.data

    @functools.cached_property
    def outputs(self) -> dict[str, torch.Tensor]:
        """The compressed model's outputs on the eval set, as the task's ``run`` gives them."""
        data = self.require_data()
        if self.task is not None:
            return _as_outputs(self.task.run(self.model, data, self.device, self.batch_size))
        return _as_outputs(run_model(self.model, data, self.device, self.batch_size))

    @functools.cached_property
    def baseline_outputs(self) -> dict[str, torch.Tensor]:
        """The dense model's outputs (the runner's cached reference; reduced by ``TaskSpec.reference``)."""
        return _as_outputs(self._baseline_outputs())

    def output(self, name: str, dense: bool = False) -> torch.Tensor:
        """One entry of :attr:`outputs` (or of :attr:`baseline_outputs`), or NotApplicable naming the task."""
        found = (self.baseline_outputs if dense else self.outputs).get(name)
        if found is None:
            task = self.task.name if self.task is not None else (self.data.task if self.data is not None else "?")
            raise NotApplicable(f"the {task!r} task's outputs have no {name!r}; use a metric that serves this task")
        return found

    @property
    def logits(self) -> torch.Tensor:
        return self.output("logits")

    @property
    def labels(self) -> torch.Tensor:
        labels = self.outputs.get("labels")
        if labels is None:
            raise NotApplicable("this dataset has no labels; use a metric that compares with the dense model")
        return labels

    @property
    def baseline_logits(self) -> torch.Tensor:
        return self.output("logits", dense=True)

    @functools.cached_property
    def size(self) -> SizeReport:
        return self.compressed.size()

    @functools.cached_property
    def reparametrized(self) -> str | None:
        """Why the decoded weights cannot be compared one by one with the dense ones (the
        :data:`REPARAMETRIZED` entry of the compressor's info or of any pipeline stage's), or None."""
        info = self.compressed.info
        stages = info.get("stages")
        for entry in [info, *(stages if isinstance(stages, list) else [])]:
            why = entry.get(REPARAMETRIZED) if isinstance(entry, Mapping) else None
            if why:
                return (
                    f"the weights were reparametrized: {why}; "
                    "a weight-by-weight error against the dense model does not measure the method"
                )
        return None

    @functools.cached_property
    def coded_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(key, original, decoded) for every tensor the compressor replaced and kept the shape of; empty
        when the weights were :attr:`reparametrized`."""
        if self.reparametrized:
            return []
        original = self.baseline.module.state_dict()
        decoded = self.compressed.state_dict()
        pairs = []
        for key in sorted(self.compressed.codes):
            if key in original and tuple(original[key].shape) == tuple(decoded[key].shape):
                pairs.append((key, original[key].detach().float().cpu(), decoded[key].float().cpu()))
        return pairs

    @functools.cached_property
    def weight_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(key, original, decoded) for every weight tensor of the dense model, coded or not.

        The weight metrics compare these, so every method of a table is measured over the same
        tensor set (a method that codes 1 tensor and one that codes 12 share the denominator): the
        dense model's floating-point parameters plus any coded tensor that is not one (a buffer).
        A tensor stored as it was counts with error 0. Empty (see :attr:`weight_pairs_missing`) when
        no tensor was coded with its shape kept, or when some weight tensor is missing or changed
        shape (distillation, structured pruning): such models have no weight-by-weight comparison.
        """
        if not self.coded_pairs:
            self.weight_pairs_missing = self.reparametrized or NO_WEIGHT_PAIRS
            return []
        module = self.baseline.module
        original = module.state_dict()
        keys = {k for k, p in module.named_parameters() if p.is_floating_point()} | set(self.compressed.codes)
        decoded = self.compressed.state_dict()
        pairs = []
        for key in sorted(keys):
            if key not in original:
                continue  # a code of something the dense model does not hold: nothing to compare it to
            if key not in decoded or tuple(decoded[key].shape) != tuple(original[key].shape):
                self.weight_pairs_missing = (
                    f"the compressed model has no tensor {key!r} of the dense model's shape "
                    "(e.g. structured pruning or another architecture)"
                )
                return []
            pairs.append((key, original[key].detach().float().cpu(), decoded[key].float().cpu()))
        return pairs

    #: why :attr:`weight_pairs` is empty (set when it is)
    weight_pairs_missing = NO_WEIGHT_PAIRS

    @functools.cached_property
    def weight_errors(self) -> dict[str, dict[str, float]]:
        """:func:`b2s_bench.fitting.fidelity.error_sums` of every pair of :attr:`weight_pairs`, computed once per cell."""
        from .fitting.fidelity import error_sums

        return {k: error_sums(w, wh) for k, w, wh in self.weight_pairs}

    def limits(self) -> dict[str, Any]:
        """The code against the rate–distortion limits (:mod:`b2s_bench.fitting.limits`), once per cell.

        Fills ``details["rate_distortion"]`` (``{"tensors": {key: {numel, bits, rate, variance, mse,
        gaussian_bound_mse, ecsq_mse, gap_db, gap_ecsq_db}}, "model": {rate, mse, energy,
        variance_ratio, bound_mse, ecsq_mse, gap_db, below_limit}}``, over the coded tensors; gaps are
        None at 16 bits per weight or more, ECSQ values None on tensors too small for them, see
        :func:`~b2s_bench.fitting.limits.ecsq_applies`) and ``details["weight_structure"]``
        (``{key: {autocorr_rows, autocorr_cols, low_freq_energy, effective_rank_90, outlier_ratio_cols,
        outlier_ratio_rows, outlier_share}}`` of the original tensors, computed once per distinct tensor:
        every cell of a model shares them, in a process and through the cache folder
        ``$B2S_BENCH_CACHE/weight-structure-v2``),
        and returns the former; reports read both keys (a contract: keep them).

        Raises:
            NotApplicable: no tensor was replaced with its shape kept (distillation, structured pruning),
                or the weights were :attr:`reparametrized`.
        """
        if "rate_distortion" in self.details:
            return self.details["rate_distortion"]
        pairs = self.coded_pairs
        if not pairs:
            raise NotApplicable(self.reparametrized or NO_WEIGHT_PAIRS)
        from .fitting import limits as rd

        start = time.perf_counter()
        per = {key: rd.tensor_limits(w, wh, self.compressed.codes[key].bits().total) for key, w, wh in pairs}
        model = rd.model_limits([w for _, w, _ in pairs], list(per.values()))
        self.details["rate_distortion"] = {"tensors": {k: v.as_dict() for k, v in per.items()}, "model": model}
        from .sources import cache_dir

        folder = cache_dir() / rd.STRUCTURE_CACHE
        self.details["weight_structure"] = {key: rd.structure_of(w, folder=folder) for key, w, _ in pairs}
        self.timings["limits"] = time.perf_counter() - start  # the record's timings.limits: what they cost
        return self.details["rate_distortion"]

    def per_layer(self, fn: Callable[[torch.Tensor, torch.Tensor], float]) -> dict[str, float]:
        return {k: fn(w, w_hat) for k, w, w_hat in self.weight_pairs}

    @staticmethod
    def mean(values: Mapping[str, float]) -> float:
        vals = [v for v in values.values() if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan


def _as_outputs(found: Any) -> dict[str, torch.Tensor]:
    """A task's outputs dict without None entries; a pair (outputs, targets or None), as before tasks,
    as logits and labels."""
    if isinstance(found, tuple):
        outputs, targets = found
        found = {"logits": outputs, "labels": targets}
    return {k: v for k, v in found.items() if v is not None}
