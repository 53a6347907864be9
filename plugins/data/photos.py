"""The photo fidelity set: real photos with known ImageNet classes, shipped inside pip packages.

Eight photos (scikit-image, scikit-learn, matplotlib) expanded into seeded random crops and flips.
A sanity set, not an accuracy estimate: its use is the **agreement** and KL of a compressed model
against its own dense version. Labels are the photos' ImageNet classes, so ``top1`` is the sanity
top-1. Measured: the dense EfficientNet-Lite0 gets 6 of the 8 center crops right against these
single labels (7 if "tiger cat" counts for the tabby Chelsea, as offline-data.md counts it; Grace
Hopper's "military uniform" is the miss).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import b2s_bench as b2s
from b2s_bench import DatasetSpec, UserError, check
from b2s_bench.sources import LoadedData, LoadedModel

from .datasets import tensor_batches

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch

#: (package, how to load, ImageNet class index, what it shows)
PHOTOS: list[tuple[str, str, int, str]] = [
    ("skimage", "chelsea", 281, "tabby cat"),
    ("skimage", "coffee", 967, "espresso"),
    ("skimage", "rocket", 657, "missile"),
    ("skimage", "camera", 872, "tripod"),
    ("skimage", "stereo_motorcycle", 665, "moped"),
    ("sklearn", "china.jpg", 698, "palace"),
    ("sklearn", "flower.jpg", 985, "daisy"),
    ("matplotlib", "grace_hopper.jpg", 652, "military uniform"),
]
INSTALL = "the photo set needs scikit-image, scikit-learn and matplotlib: `pip install -e '.[offline]'`"


def _load(package: str, name: str) -> np.ndarray:
    """An HxWx3 uint8 image."""
    if package == "skimage":
        import skimage.data

        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img
    else:
        from PIL import Image

        if package == "sklearn":
            import sklearn.datasets

            path = Path(sklearn.datasets.__file__).parent / "images" / name
        else:
            import matplotlib

            path = Path(matplotlib.get_data_path()) / "sample_data" / name
        img = np.asarray(Image.open(path).convert("RGB"))
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.array(img[..., :3], copy=True)  # writable and contiguous


def load_photos() -> list[tuple[torch.Tensor, int, str]]:
    """[(3xHxW float image in [0, 1], ImageNet class, description)]."""
    import torch

    missing = [p for p in ("skimage", "sklearn", "matplotlib") if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"{INSTALL} (missing: {', '.join(missing)})")
    out = []
    for package, name, label, what in PHOTOS:
        img = torch.from_numpy(_load(package, name)).permute(2, 0, 1).float() / 255.0
        out.append((img, label, what))
    return out


def _resize(img: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    mode = InterpolationMode.BICUBIC if interpolation == "bicubic" else InterpolationMode.BILINEAR
    return F.resize(img, list(size), interpolation=mode, antialias=True).clamp(0, 1)


def center_view(img: torch.Tensor, size: int, crop_pct: float, interpolation: str) -> torch.Tensor:
    """Resize the short side to size/crop_pct, then center-crop size x size (timm's eval transform)."""
    h, w = img.shape[1:]
    short = math.floor(size / crop_pct)
    scale = short / min(h, w)
    img = _resize(img, (max(size, round(h * scale)), max(size, round(w * scale))), interpolation)
    top, left = (img.shape[1] - size) // 2, (img.shape[2] - size) // 2
    return img[:, top : top + size, left : left + size]


def random_view(img: torch.Tensor, size: int, interpolation: str, gen: torch.Generator, min_scale: float) -> torch.Tensor:
    """A seeded random-resized crop (area in [min_scale, 1], aspect in [3/4, 4/3]) and a coin-flip mirror."""
    import torch

    h, w = img.shape[1:]
    area = h * w * (min_scale + (1 - min_scale) * torch.rand((), generator=gen).item())
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand((), generator=gen).item()
    ratio = math.exp(log_ratio)
    ch = min(h, round(math.sqrt(area / ratio)))
    cw = min(w, round(math.sqrt(area * ratio)))
    top = int(torch.randint(0, h - ch + 1, (), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (), generator=gen))
    view = _resize(img[:, top : top + ch, left : left + cw], (size, size), interpolation)
    if torch.rand((), generator=gen).item() < 0.5:
        view = view.flip(-1)
    return view


@dataclasses.dataclass(frozen=True)
class PhotosConfig:
    """crops: random views per photo (besides the center view); min_scale: the smallest crop area."""

    crops: int = 8
    seed: int = 0
    min_scale: float = 0.35

    def __post_init__(self) -> None:
        check(self.crops >= 0, f"crops must be >= 0, got {self.crops}", "crops")
        check(0 < self.min_scale <= 1, f"min_scale must be in (0, 1], got {self.min_scale}", "min_scale")


def _build(config: PhotosConfig, model: LoadedModel) -> LoadedData:
    import torch

    if model.num_classes != 1000:
        raise UserError(f"the photo set is labeled with ImageNet-1k classes; the model has {model.num_classes} outputs")
    cfg = dict(model.data_config)
    size = int(tuple(cfg.get("input_size", model.input_shape))[-1])
    crop_pct = float(cfg.get("crop_pct", 0.875))
    interpolation = str(cfg.get("interpolation", "bilinear"))
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(3, 1, 1)
    gen = torch.Generator().manual_seed(config.seed)
    views, labels, clusters = [], [], []
    photos = load_photos()
    for i, (img, label, _) in enumerate(photos):
        views.append(center_view(img, size, crop_pct, interpolation))
        labels.append(label)
        clusters.append(i)
    for _ in range(config.crops):
        for i, (img, label, _) in enumerate(photos):
            views.append(random_view(img, size, interpolation, gen, config.min_scale))
            labels.append(label)
            clusters.append(i)
    x = (torch.stack(views) - mean) / std
    y = torch.tensor(labels)
    digest = hashlib.sha256(x[:, :, ::16, ::16].contiguous().numpy().tobytes()).hexdigest()[:16]
    # the views of one photo are not independent examples: intervals resample photos (clusters)
    return LoadedData(
        tensor_batches(x, y),
        x.shape[0],
        True,
        f"photos:{digest}",
        description=f"{len(photos)} photos x {config.crops + 1} views",
        clusters=np.array(clusters, dtype=np.int64),
    )


def _problems(config: PhotosConfig) -> list[str]:
    missing = [p for p in ("skimage", "sklearn", "matplotlib") if importlib.util.find_spec(p) is None]
    return [f"{INSTALL} (missing: {', '.join(missing)})"] if missing else []


SPEC = DatasetSpec(
    "photos",
    PhotosConfig,
    _build,
    True,
    "imagenet-1k",
    _problems,
    "8 real photos with ImageNet labels in seeded crops (fidelity: agreement, KL)",
)


@b2s.hookimpl
def b2s_register_datasets(register: Callable[[b2s.DatasetSpec], None]) -> None:
    register(SPEC)
