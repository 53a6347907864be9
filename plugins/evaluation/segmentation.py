"""The segmentation task and its metrics: mIoU, mACC, Dice, boundary F and mask agreement (issue 18).

**The dataset contract.** A segmentation dataset (``DatasetSpec.task = "segmentation"``) has
``eval_batches`` yield ``(images, masks)``: images N×3×H×W float (normalized for the model), masks N×H×W
int64 class ids with 255 = ignore (masks None for an unlabeled set: only ``mask_agreement`` then
applies). The model returns N×C×H×W logits at the masks' resolution; C = 1 means binary with a
sigmoid (foreground where the logit is > 0, 2 classes), C > 1 the argmax over channels (C ≤ 254). The
picture shows eval example ``LoadedData.preview`` when the dataset's data carries that attribute, else
example 0.

**The task's outputs** (what the runner caches once per model and data): predicted class maps as uint8
(1 byte a pixel, not the logits), the truth as uint8, the number of classes and a thumbnail of the
preview example (:func:`.segmentation_eval.run`). Forward passes on a CPU hold at most 2^18 input pixels.

**Aggregation: per image, then the mean over images** (the Kaggle Carvana convention: mean Dice per
image). Each image's score is one per-example outcome (``Evaluation.per_example[name]``, in [0, 1]); the
metric's value is their mean in %, so intervals resample images (or the dataset's clusters of images,
such as the views of one car), never pixels: the pixels of one image are not independent. Per image
(:mod:`.segmentation_scores`):

- a class absent from both the prediction and the truth of an image is excluded from that image's class
  mean; an image with no class present (every pixel ignored) scores 1;
- ``miou``: the mean over present classes of TP / (TP + FP + FN); background counts as a class;
- ``macc``: the mean per-class pixel accuracy TP / (TP + FN) over the classes of the image's truth (a class
  only predicted has no accuracy; its false positives lower the other classes' accuracies);
- ``dice``: 2TP / (2TP + FP + FN); with 2 classes the foreground's alone (1 when neither mask has any),
  with more the mean over present classes;
- ``boundary_f``: the boundary F-score at a tolerance of :data:`BOUNDARY_TOLERANCE` pixels (Csurka et al.
  2013): per class, precision and recall of boundary pixels matched within the tolerance (Euclidean), F
  their harmonic mean; the foreground alone for 2 classes (:func:`.segmentation_scores.boundary_f`;
  :func:`boundary_metric` makes the metric at another tolerance, under another name);
- ``mask_agreement``: IoU between the compressed and the dense model's predicted masks over every pixel
  (the foreground's for 2 classes, 1 when neither has any; else the mean over classes either predicts):
  fidelity to the dense model, as classification's ``agreement``; needs no truth.

All five are in % and higher is better. ``miou`` is the primary metric (the paper reports mIoU); a
suite on a segmentation dataset without ``metrics:`` gets miou, macc, dice and mask_agreement (the
"default" role) with the size metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import b2s_bench as b2s
from b2s_bench import MetricSpec

__all__ = ["TASK", "SEGMENTATION", "BOUNDARY_TOLERANCE", "boundary_metric", "METRICS"]

#: the task's name, as datasets declare it
TASK = "segmentation"
#: the boundary F-score's default tolerance in pixels (at the evaluated resolution); 2 px is about
#: Csurka et al.'s 0.75 % of the image diagonal at 192×256
BOUNDARY_TOLERANCE = 2

_TASKS = frozenset({TASK})


def _ref(name: str) -> Callable[..., Any]:
    return b2s.lazy(f".segmentation_eval:{name}", __package__)  # torch loads when a metric is computed


def boundary_metric(tolerance: int = BOUNDARY_TOLERANCE, name: str = "boundary_f") -> MetricSpec:
    """The boundary F-score at ``tolerance`` pixels as a metric named ``name`` (register another name for
    another tolerance: the tolerance is part of the definition, so it is part of the metric's version).

    Raises:
        ValueError: a negative tolerance.
    """
    if not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"boundary_metric: tolerance must be a whole number of pixels >= 0, got {tolerance!r}")
    return MetricSpec(
        name,
        "%",
        True,
        functools.partial(_ref("boundary_f_score"), tolerance=tolerance, name=name),
        frozenset({"labels"}),
        f"boundary F-score at {tolerance} px, per image then averaged (segmentation)",
        version=f"1-tol{tolerance}",
        roles=frozenset({"primary"}),
        rank=50,
        tasks=_TASKS,
    )


METRICS = [
    MetricSpec(
        "miou",
        "%",
        True,
        _ref("miou"),
        frozenset({"labels"}),
        "mean IoU over present classes, per image then averaged (segmentation)",
        roles=frozenset({"default", "primary"}),
        rank=10,
        tasks=_TASKS,
    ),
    MetricSpec(
        "macc",
        "%",
        True,
        _ref("macc"),
        frozenset({"labels"}),
        "mean per-class pixel accuracy over the truth's classes, per image then averaged (segmentation)",
        roles=frozenset({"default", "primary"}),
        rank=40,
        tasks=_TASKS,
    ),
    MetricSpec(
        "dice",
        "%",
        True,
        _ref("dice"),
        frozenset({"labels"}),
        "Dice (foreground for binary masks), per image then averaged (segmentation)",
        roles=frozenset({"default", "primary"}),
        rank=15,
        tasks=_TASKS,
    ),
    boundary_metric(),
    MetricSpec(
        "mask_agreement",
        "%",
        True,
        _ref("mask_agreement"),
        frozenset({"data"}),
        "IoU of the predicted masks with the dense model's, per image then averaged (segmentation)",
        roles=frozenset({"default", "primary"}),
        rank=20,
        identity_target=99.999,
        tasks=_TASKS,
    ),
]


SEGMENTATION = b2s.TaskSpec(
    TASK,
    _ref("run"),
    "one class per pixel: images N×3×H×W, masks N×H×W int64 (255 = ignore), logits N×C×H×W (C = 1: binary, "
    "logit > 0); outputs uint8 class maps; miou, macc, dice, boundary_f and mask_agreement read them",
)


@b2s.hookimpl
def b2s_register_tasks(register: Callable[[b2s.TaskSpec], None]) -> None:
    register(SEGMENTATION)


@b2s.hookimpl
def b2s_register_metrics(register: Callable[[b2s.MetricSpec], None]) -> None:
    for spec in METRICS:
        register(spec)
