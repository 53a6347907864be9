"""The segmentation task's run and its metrics' computations (torch; :mod:`.segmentation` registers them).

The definitions are in :mod:`.segmentation` (aggregation) and :mod:`.segmentation_scores` (per image).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from b2s_bench.metrics import Evaluation, NotApplicable

from . import segmentation_preview as preview
from .segmentation_scores import IGNORE, boundary_f, classes_of, confusion, image_scores, mask_iou, predict

if TYPE_CHECKING:
    from torch import nn

    from b2s_bench.sources import LoadedData

__all__ = ["CPU_BATCH_PIXELS", "run", "miou", "macc", "dice", "boundary_f_score", "mask_agreement", "write_preview"]

#: On a CPU, one forward pass holds at most this many input pixels (16 images of 128×128, one of
#: 512×512): a segmentation network keeps full-resolution feature maps of tens of channels (a UNet's first
#: stage: 64 channels, 64 MB at this size), so its batches are bounded in pixels, not in images.
CPU_BATCH_PIXELS = 1 << 18


def _preview_index(data: LoadedData) -> int:
    """The eval example the report pictures: the dataset's ``LoadedData.preview``."""
    index = data.preview
    if not isinstance(index, int) or not 0 <= index < max(1, data.num_examples):
        raise ValueError(
            f"dataset {data.fingerprint!r}: preview = {index!r} is not an eval example index "
            f"(0..{data.num_examples - 1}); set it to the index of the image the report should show"
        )
    return index


def _masks(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if y.shape != shape:
        raise ValueError(
            f"a segmentation dataset yields masks N×H×W at the images' resolution; got masks {tuple(y.shape)} "
            f"for predictions {tuple(shape)}"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"masks hold integer class ids (int64; {IGNORE} = ignore), got {y.dtype}")
    bad = y[(y != IGNORE) & ((y < 0) | (y >= IGNORE))]
    if bad.numel():
        raise ValueError(f"masks hold class id {int(bad[0])}: class ids are 0..{IGNORE - 1}, and {IGNORE} marks ignored pixels")
    return y.to(torch.uint8)


def _thumbnail(image: torch.Tensor) -> torch.Tensor:
    """One input C×H×W as the preview's H×W×3 uint8 thumbnail (bilinear with antialiasing, each channel stretched)."""
    size = preview.preview_size(image.shape[-2], image.shape[-1])
    small = F.interpolate(image[None].float().cpu(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return torch.from_numpy(preview.stretch(small.numpy()))


def run(model: nn.Module, data: LoadedData, device: torch.device, batch_size: int) -> dict[str, torch.Tensor]:
    """The segmentation task's outputs for the whole eval set (on the CPU), compact for the cache:

    ``pred`` (N×H×W uint8 predicted class ids), ``masks`` (N×H×W uint8 truth, 255 = ignore; absent for
    an unlabeled dataset), ``classes`` (the number of classes, a 0-d int64), ``preview_index`` (0-d) and
    ``preview_image`` (h×w×3 uint8 thumbnail of that example, at most 128 px on the long side).
    """
    index = _preview_index(data)
    preds: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    classes: int | None = None
    thumb: torch.Tensor | None = None
    seen = 0
    model.eval()
    with torch.inference_mode():
        for x, y in data.eval_batches(batch_size):
            if x.dim() != 4:
                raise ValueError(f"a segmentation dataset yields images N×C×H×W, got shape {tuple(x.shape)}")
            step = max(1, CPU_BATCH_PIXELS // max(1, x.shape[-1] * x.shape[-2])) if device.type == "cpu" else x.shape[0]
            parts: list[torch.Tensor] = []
            for part in x.split(step):
                logits = model(part.to(device, non_blocking=device.type == "cuda"))
                if not isinstance(logits, torch.Tensor):
                    raise ValueError(
                        f"a segmentation model returns one N×C×H×W logits tensor, got {type(logits).__name__}; wrap it"
                    )
                if classes is None:
                    classes = classes_of(logits.shape[1])
                elif classes_of(logits.shape[1]) != classes:
                    raise ValueError(f"the model returned {logits.shape[1]} channels after {classes} classes before")
                if not bool(torch.isfinite(logits).all()):
                    raise ValueError(f"model output logits has {int((~torch.isfinite(logits)).sum())} non-finite values")
                parts.append(predict(logits).cpu())
            preds.append(torch.cat(parts))
            if seen <= index < seen + x.shape[0]:
                thumb = _thumbnail(x[index - seen])
            if y is not None:
                masks.append(_masks(y, preds[-1].shape))
            seen += x.shape[0]
    if classes is None or thumb is None:
        raise ValueError(f"dataset {data.fingerprint!r} yielded no images to segment")
    out = {
        "pred": torch.cat(preds),
        "classes": torch.tensor(classes, dtype=torch.int64),
        "preview_index": torch.tensor(index, dtype=torch.int64),
        "preview_image": thumb,
    }
    if masks:
        out["masks"] = torch.cat(masks)
    return out


# -- metrics ---------------------------------------------------------------------------------------
_SCORES: weakref.WeakKeyDictionary[Evaluation, dict[str, Any]] = weakref.WeakKeyDictionary()


def _outputs(ev: Evaluation) -> dict[str, torch.Tensor]:
    ev.output("pred")  # NotApplicable, naming the task, for another task's outputs
    return ev.outputs


def _cached(ev: Evaluation) -> dict[str, Any]:
    if ev not in _SCORES:
        _SCORES[ev] = {}
    return _SCORES[ev]


def _truth(ev: Evaluation) -> tuple[torch.Tensor, torch.Tensor, int]:
    out = _outputs(ev)
    if "masks" not in out:
        raise NotApplicable("this dataset has no masks; use mask_agreement, which compares with the dense model")
    return out["pred"], out["masks"], int(out["classes"])


def _image_scores(ev: Evaluation) -> dict[str, torch.Tensor]:
    cache = _cached(ev)
    if "images" not in cache:
        pred, truth, classes = _truth(ev)
        cache["images"] = image_scores(confusion(pred, truth, classes))
    return cache["images"]


def _finish(ev: Evaluation, name: str, scores: torch.Tensor) -> float:
    """Keep the per-image scores for intervals, write the preview, and return the mean in %."""
    ev.per_example[name] = scores.float()
    write_preview(ev)
    return 100.0 * float(scores.mean()) if scores.numel() else float("nan")


def miou(ev: Evaluation) -> float:
    return _finish(ev, "miou", _image_scores(ev)["iou"])


def macc(ev: Evaluation) -> float:
    return _finish(ev, "macc", _image_scores(ev)["acc"])


def dice(ev: Evaluation) -> float:
    return _finish(ev, "dice", _image_scores(ev)["dice"])


def boundary_f_score(ev: Evaluation, tolerance: int, name: str = "boundary_f") -> float:
    pred, truth, classes = _truth(ev)
    return _finish(ev, name, boundary_f(pred, truth, classes, tolerance))


def mask_agreement(ev: Evaluation) -> float:
    out = _outputs(ev)
    return _finish(ev, "mask_agreement", mask_iou(out["pred"], ev.output("pred", dense=True), int(out["classes"])))


def write_preview(ev: Evaluation) -> None:
    """``details["preview"]`` (:mod:`.segmentation_preview`): the preview example's predicted mask, its
    truth and thumbnail, once per cell."""
    if "preview" in ev.details:
        return
    out = _outputs(ev)
    index = int(out["preview_index"])
    pred = out["pred"][index].numpy()
    size = preview.preview_size(*pred.shape)
    entry: dict[str, Any] = {
        "task": "segmentation",
        "example": index,
        "classes": int(out["classes"]),
        "mask": preview.encode_mask(preview.downsample_labels(pred, size)),
    }
    if "masks" in out:
        entry["truth"] = preview.encode_mask(preview.downsample_labels(out["masks"][index].numpy(), size))
    if "preview_image" in out:
        entry["image"] = preview.encode_image(np.asarray(out["preview_image"].numpy()))
    ev.details["preview"] = entry
