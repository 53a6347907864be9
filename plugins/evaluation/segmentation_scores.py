"""Segmentation scores per image: the math of the segmentation metrics (torch; registering imports none).

Every function takes predicted and ground-truth class maps (N×H×W integer tensors, ``IGNORE`` = 255 in
the truth for pixels not scored) and returns one score per image (a float64 tensor of N values in
[0, 1]); :mod:`.segmentation` averages them over images. The definitions (written out in
:mod:`.segmentation`'s docstring) are:

- a class is *present* in an image when it is in the truth or the prediction of that image (ignored
  pixels left out); a class absent from both is excluded from that image's class mean, and an image
  with no class present (every pixel ignored) scores 1 (there was nothing to get wrong);
- IoU_c = TP_c / (TP_c + FP_c + FN_c); mIoU of an image: the mean over its present classes;
- accuracy_c = TP_c / (TP_c + FN_c) (per-class pixel accuracy, i.e. recall), defined only where the
  class is in the truth; mACC of an image: the mean over the classes of its truth;
- Dice_c = 2·TP_c / (2·TP_c + FP_c + FN_c); with 2 classes (a binary task) the image's Dice is the
  foreground's (class 1, the Kaggle Carvana convention), 1 when neither mask has foreground; with more,
  the mean over present classes;
- boundary F (:func:`boundary_f`): see there;
- mask IoU between two predictions (:func:`mask_iou`): IoU of the foreground for a binary task, the
  mean IoU over classes present in either prediction otherwise, over every pixel (no truth read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE",
    "PIXELS_PER_CHUNK",
    "confusion",
    "image_scores",
    "boundary_map",
    "boundary_f",
    "mask_iou",
    "predict",
    "classes_of",
]

#: the truth's label of a pixel that is not scored (Pascal VOC's and Cityscapes' convention)
IGNORE = 255
#: images are scored in chunks of at most this many pixels (a chunk's confusion indices take 8 bytes a
#: pixel, the boundary maps a few more): bounded memory whatever the eval set's size
PIXELS_PER_CHUNK = 1 << 22


def classes_of(channels: int) -> int:
    """The number of classes a model with ``channels`` output channels predicts (1 channel: binary, 2)."""
    if channels < 1:
        raise ValueError(f"a segmentation model must output at least one channel per pixel, got {channels}")
    return 2 if channels == 1 else channels


def predict(logits: torch.Tensor) -> torch.Tensor:
    """Class maps (N×H×W uint8) from logits N×C×H×W: C = 1 is binary with a sigmoid (foreground where
    the logit is > 0), C > 1 the argmax over channels.

    Raises:
        ValueError: logits that are not N×C×H×W, or more classes than a uint8 class map holds.
    """
    if logits.dim() != 4:
        raise ValueError(
            f"a segmentation model must return N×C×H×W logits, got shape {tuple(logits.shape)}; "
            "wrap a model that returns a dict or a list so that it returns the logits tensor"
        )
    if logits.shape[1] >= IGNORE:
        raise ValueError(
            f"{logits.shape[1]} classes: class maps are stored as uint8 with {IGNORE} = ignore, so at most {IGNORE - 1}"
        )
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.uint8)
    return logits.argmax(1).to(torch.uint8)


def _spans(n: int, pixels: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive chunks of images with at most :data:`PIXELS_PER_CHUNK` pixels (one image at least)."""
    step = max(1, PIXELS_PER_CHUNK // max(1, pixels))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def _check(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> None:
    if pred.shape != truth.shape or pred.dim() != 3:
        raise ValueError(
            f"predictions {tuple(pred.shape)} and masks {tuple(truth.shape)} must both be N×H×W of one shape; "
            "a segmentation model must return logits at the masks' resolution"
        )
    if classes < 2:
        raise ValueError(f"a segmentation task has at least 2 classes, got {classes}")
    bad = truth[(truth != IGNORE) & ((truth < 0) | (truth >= classes))]
    if bad.numel():
        raise ValueError(
            f"the masks hold class id {int(bad[0])}, but the model predicts {classes} classes (0..{classes - 1}); "
            f"mark pixels not to score with {IGNORE}, or use a model with as many output channels as classes"
        )


def confusion(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """Per-image confusion matrices N×K×K (int64; rows: truth, columns: prediction), ignored pixels left out."""
    _check(pred, truth, classes)
    n = pred.shape[0]
    out = torch.zeros(n, classes, classes, dtype=torch.int64)
    per_image = pred[0].numel() if n else 1
    for start, stop in _spans(n, per_image):
        p, t = pred[start:stop].long(), truth[start:stop].long()
        image = torch.arange(p.shape[0]).view(-1, 1, 1).expand_as(p)
        valid = t != IGNORE
        index = (image[valid] * classes + t[valid]) * classes + p[valid]
        counts = torch.bincount(index, minlength=p.shape[0] * classes * classes)
        out[start:stop] = counts.view(p.shape[0], classes, classes)
    return out


def _class_mean(values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """The mean over each row's counted classes; 1 for a row with none counted."""
    k = counted.sum(1)
    total = torch.where(counted, values, torch.zeros_like(values)).sum(1)
    return torch.where(k > 0, total / k.clamp(min=1), torch.ones_like(total))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den.clamp(min=1)


def image_scores(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``iou`` (mIoU), ``acc`` (mACC) and ``dice`` from confusion matrices N×K×K (float64, N values each)."""
    cm = cm.double()
    tp = torch.diagonal(cm, dim1=1, dim2=2)
    truth = cm.sum(2)
    pred = cm.sum(1)
    union = truth + pred - tp
    present = union > 0
    iou = _class_mean(_ratio(tp, union), present)
    acc = _class_mean(_ratio(tp, truth), truth > 0)
    dice_c = _ratio(2 * tp, truth + pred)
    if cm.shape[1] == 2:  # binary: the foreground's Dice, 1 when neither mask has foreground
        dice = torch.where(present[:, 1], dice_c[:, 1], torch.ones_like(dice_c[:, 1]))
    else:
        dice = _class_mean(dice_c, present)
    return {"iou": iou, "acc": acc, "dice": dice}


def boundary_map(labels: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of label maps N×H×W: a pixel whose 4-neighbour (inside the image) has another
    label. Both pixels of such a pair are boundary pixels, each of its own class; the image's edge is
    no boundary."""
    edge = torch.zeros(labels.shape, dtype=torch.bool)
    down = labels[:, 1:, :] != labels[:, :-1, :]
    edge[:, 1:, :] |= down
    edge[:, :-1, :] |= down
    right = labels[:, :, 1:] != labels[:, :, :-1]
    edge[:, :, 1:] |= right
    edge[:, :, :-1] |= right
    return edge


def _disk(radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1)
    return ((r.view(-1, 1) ** 2 + r.view(1, -1) ** 2) <= radius * radius).float().view(1, 1, 2 * radius + 1, 2 * radius + 1)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within Euclidean distance ``radius`` of a pixel of ``mask`` (N×H×W bool)."""
    if radius == 0:
        return mask
    return F.conv2d(mask[:, None].float(), _disk(radius), padding=radius)[:, 0] > 0.5


def boundary_f(pred: torch.Tensor, truth: torch.Tensor, classes: int, tolerance: int) -> torch.Tensor:
    """Boundary F-score per image (Csurka et al., BMVC 2013, "What is a good evaluation measure for
    semantic segmentation?"; the F measure of DAVIS, Perazzi et al. 2016), as defined here:

    For class c, B_p and B_t are the boundary pixels (:func:`boundary_map`) of class c in the prediction
    and in the truth; pixels the truth ignores are removed from both (a truth pixel next to an ignored one
    is a boundary pixel: void bands lie along object edges). Precision = |B_p within ``tolerance`` of
    B_t| / |B_p|, recall = |B_t within ``tolerance`` of B_p| / |B_t|, "within" meaning at Euclidean
    distance ≤ ``tolerance`` pixels; F_c = 2PR / (P + R), 0 when one of the two is empty or they never
    meet. A class with no boundary in either map is excluded from the image's mean; an image with no
    class counted scores 1. Binary tasks (2 classes) score the foreground (class 1) only: its boundary
    and the background's are the two sides of one edge.
    """
    _check(pred, truth, classes)
    if tolerance < 0:
        raise ValueError(f"boundary tolerance must be >= 0 pixels, got {tolerance}")
    n = pred.shape[0]
    scores = torch.ones(n, dtype=torch.float64)
    per_image = pred[0].numel() if n else 1
    wanted = [1] if classes == 2 else list(range(classes))
    for start, stop in _spans(n, per_image):
        p, t = pred[start:stop].long(), truth[start:stop].long()
        valid = t != IGNORE
        bp_all, bt_all = boundary_map(p) & valid, boundary_map(t) & valid
        f_sum = torch.zeros(stop - start, dtype=torch.float64)
        counted = torch.zeros(stop - start, dtype=torch.int64)
        for c in wanted:
            bp, bt = bp_all & (p == c), bt_all & (t == c)
            n_p, n_t = bp.sum((1, 2)).double(), bt.sum((1, 2)).double()
            hit_p = (bp & _dilate(bt, tolerance)).sum((1, 2)).double()
            hit_t = (bt & _dilate(bp, tolerance)).sum((1, 2)).double()
            precision, recall = hit_p / n_p.clamp(min=1), hit_t / n_t.clamp(min=1)
            f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-300), 0.0)
            has = (n_p > 0) | (n_t > 0)
            f_sum += torch.where(has, f, 0.0)
            counted += has.long()
        scores[start:stop] = torch.where(counted > 0, f_sum / counted.clamp(min=1), 1.0)
    return scores


def mask_iou(pred: torch.Tensor, reference: torch.Tensor, classes: int) -> torch.Tensor:
    """IoU per image between two predictions over every pixel: the foreground's for a binary task (1
    when neither has foreground), else the mean over classes present in either."""
    if pred.shape != reference.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and the dense model's {tuple(reference.shape)} differ in shape")
    cm = confusion(pred, reference, classes).double()
    tp = torch.diagonal(cm, dim1=1, dim2=2)
    union = cm.sum(2) + cm.sum(1) - tp
    iou = _ratio(tp, union)
    if classes == 2:
        return torch.where(union[:, 1] > 0, iou[:, 1], torch.ones_like(iou[:, 1]))
    return _class_mean(iou, union > 0)
