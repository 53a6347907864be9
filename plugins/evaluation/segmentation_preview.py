"""The mask picture's data in a record: small encodings of one image, its truth and a predicted mask.

A segmentation record keeps, in ``details["preview"]``, what the report's mask grid needs without the
data (written by :mod:`.segmentation`, drawn by ``b2s_bench_plugins.reporting.masks``)::

    {"task": "segmentation", "example": 0, "classes": 2,
     "mask": MASK, "truth": MASK, "image": IMAGE}

- ``example``: the eval example shown (the dataset's ``preview`` index, else the first);
- ``mask``: the cell's predicted class map, ``truth`` the ground truth (255 = ignored; absent for an
  unlabeled dataset), each downsampled by nearest neighbour to at most :data:`LONGEST` pixels on the
  long side and stored as ``{"codec": "zlib-uint8", "shape": [h, w], "data": base64}`` (zlib of the
  row-major uint8 map: a 96×128 binary mask takes a few hundred bytes);
- ``image``: the input thumbnail, the same size, as ``{"codec": "jpeg", "shape": [h, w, 3], "data":
  base64}`` (JPEG at quality :data:`JPEG_QUALITY`: 2–4 KB). Inputs arrive normalized for the model, so
  the thumbnail stretches each channel to its own range (undoing a per-channel mean/std normalization
  up to that stretch).

Only numpy, zlib and PIL (a dependency of torchvision) are needed: reports decode without torch.
"""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "LONGEST",
    "JPEG_QUALITY",
    "preview_size",
    "downsample_labels",
    "stretch",
    "encode_mask",
    "decode_mask",
    "encode_image",
    "decode_image",
]

#: the long side of a stored preview, in pixels
LONGEST = 128
#: JPEG quality of the stored thumbnail (PIL's scale, 1–95)
JPEG_QUALITY = 80


def preview_size(height: int, width: int, longest: int = LONGEST) -> tuple[int, int]:
    """(h, w) of a preview of an image of ``height``×``width``: at most ``longest`` on the long side,
    the aspect ratio kept; never larger than the image."""
    if height < 1 or width < 1:
        raise ValueError(f"an image of {height}×{width} pixels has nothing to preview")
    scale = min(1.0, longest / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def downsample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class map H×W at ``size`` by nearest neighbour (each output pixel takes the label at its centre)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a class map is H×W, got shape {labels.shape}")
    h, w = labels.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def stretch(image: np.ndarray) -> np.ndarray:
    """A C×H×W float image as H×W×3 uint8, each channel stretched to 0..255 over its own range (a
    constant channel is mid-grey); one channel is repeated three times."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"an input image is C×H×W with 1 or 3 channels, got shape {image.shape}")
    lo = image.min(axis=(1, 2), keepdims=True)
    span = image.max(axis=(1, 2), keepdims=True) - lo
    scaled = np.where(span > 0, (image - lo) / np.where(span > 0, span, 1.0), 0.5)
    out = np.rint(scaled * 255).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def encode_mask(labels: np.ndarray) -> dict[str, Any]:
    """A uint8 class map as a JSON-safe entry (zlib, base64)."""
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"a class map is a non-empty H×W array, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError("class maps are stored as uint8: ids 0..254 and 255 for ignored pixels")
    raw = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    return {
        "codec": "zlib-uint8",
        "shape": [int(s) for s in arr.shape],
        "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii"),
    }


def _shape(entry: Mapping[str, Any], ndim: int) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) != ndim or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"a preview entry needs a shape of {ndim} positive integers, got {shape!r}")
    return tuple(shape)


def decode_mask(entry: Mapping[str, Any]) -> np.ndarray:
    """The uint8 class map an :func:`encode_mask` entry holds.

    Raises:
        ValueError: another codec, or data that does not hold the shape's pixels.
    """
    if entry.get("codec") != "zlib-uint8":
        raise ValueError(f"a mask preview of unknown codec {entry.get('codec')!r} (known: zlib-uint8)")
    h, w = _shape(entry, 2)
    try:
        raw = zlib.decompress(base64.b64decode(str(entry.get("data", ""))))
    except (zlib.error, ValueError) as e:
        raise ValueError(f"a mask preview whose data does not decode: {e}") from None
    if len(raw) != h * w:
        raise ValueError(f"a mask preview of {len(raw)} bytes cannot hold {h}×{w} pixels")
    return np.frombuffer(raw, np.uint8).reshape(h, w).copy()


def encode_image(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> dict[str, Any]:
    """An H×W×3 uint8 image as a JSON-safe JPEG entry."""
    from PIL import Image

    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"a thumbnail is H×W×3 uint8, got shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=quality)
    return {"codec": "jpeg", "shape": [int(s) for s in arr.shape], "data": base64.b64encode(buf.getvalue()).decode("ascii")}


def decode_image(entry: Mapping[str, Any]) -> np.ndarray:
    """The H×W×3 uint8 image an :func:`encode_image` entry holds.

    Raises:
        ValueError: another codec, or data that is not a JPEG of the entry's shape.
    """
    from PIL import Image, UnidentifiedImageError

    if entry.get("codec") != "jpeg":
        raise ValueError(f"an image preview of unknown codec {entry.get('codec')!r} (known: jpeg)")
    shape = _shape(entry, 3)
    try:
        with Image.open(io.BytesIO(base64.b64decode(str(entry.get("data", ""))))) as img:
            arr = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"an image preview whose data is not a JPEG: {e}") from None
    if arr.shape != shape:
        raise ValueError(f"an image preview of shape {arr.shape}, not the recorded {shape}")
    return arr
