"""Binary car segmentation: the Carvana images from disk, and ``carvana-synth``, a seeded procedural
stand-in that works offline (:mod:`.carvana_synth`).

Both give what the segmentation task evaluates: ``eval_batches`` yields (images N x 3 x H x W float,
normalised with the model's mean/std, ImageNet's by default; masks N x H x W int64 class ids, 1 = car,
0 = background, 255 = ignore (neither set has ignored pixels)), for a model returning N x 1 x H x W
logits (foreground where the logit is > 0). ``clusters`` are cars: the 16 views of one car are not
independent examples, so intervals resample whole cars.

**carvana** reads the Kaggle competition "carvana-image-masking-challenge" (train.zip, train_masks.zip)
unpacked as ``ROOT/train/<car>_<NN>.jpg`` and ``ROOT/train_masks/<car>_<NN>_mask.gif`` (the
competition's test images have no masks, so the benchmark splits the train set). The root comes
from ``--data ROOT`` (when that folder has this layout: ``--data`` is shared with ImageNet, so in a
suite with both it names ImageNet's root and Carvana's comes from the suite's ``root:`` or
``$B2S_CARVANA``), the suite's ``root:``, or ``$B2S_CARVANA``. Missing files are a prerequisite
(exit 3) that says what to download and where to put it.

Held-out split, by car (each car has 16 views, so splitting images would put views of a test car in
training): a car is held out when the first 8 hex digits of SHA-256 of its id, read as an integer
over 2**32, fall below ``test_fraction``. That is deterministic, needs no seed, and keeps every car
on its side when cars are added or removed. Evaluation reads only held-out cars; calibration and
fine-tuning only the others. Images are resized (bilinear) and masks (nearest) to ``size``, by
default the model's input size.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

import b2s_bench as b2s
from b2s_bench import DatasetSpec, UserError, check
from b2s_bench.sources import LoadedData, LoadedModel

from .imagenet import OVERRIDE_ENV

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch

#: the task these datasets serve (the segmentation task plugin's name)
TASK = "segmentation"
IGNORE = 255  # the mask value no metric counts
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ENV = "B2S_CARVANA"
IMAGE = re.compile(r"^(?P<car>[0-9a-zA-Z]+)_(?P<view>\d{2})\.jpg$")
HOWTO = (
    'download train.zip and train_masks.zip of the Kaggle competition "carvana-image-masking-challenge" '
    "(https://www.kaggle.com/c/carvana-image-masking-challenge/data, after accepting its rules; or "
    "`kaggle competitions download -c carvana-image-masking-challenge -f train.zip` and `-f train_masks.zip`), "
    "unzip both into one folder ROOT so that ROOT/train/<car>_<NN>.jpg and ROOT/train_masks/<car>_<NN>_mask.gif "
    f"exist; then pass --data ROOT, set `root:` in the suite, or export {ENV}=ROOT"
)


def _normalise(images: np.ndarray | torch.Tensor, model: LoadedModel) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float, with the model's mean and std (ImageNet's by default)."""
    import torch

    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(model.data_config.get("mean", IMAGENET_MEAN), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(model.data_config.get("std", IMAGENET_STD), dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _model_size(model: LoadedModel, size: tuple[int, int] | None, dataset: str) -> tuple[int, int]:
    """The (H, W) the images are made at: ``size`` if set, else the model's input size."""
    if len(model.input_shape) != 3 or model.input_shape[0] != 3:
        raise UserError(
            f"dataset {dataset} has RGB images (3 x H x W), but the model expects {tuple(model.input_shape)}; "
            "pair it with a segmentation model (zoo:cars-unet, smp:Unet, seg:r2unet)"
        )
    return (int(size[0]), int(size[1])) if size else (int(model.input_shape[1]), int(model.input_shape[2]))


def _check_size(size: tuple[int, int] | None) -> None:
    check(
        size is None or (len(size) == 2 and all(int(s) >= 8 for s in size)),
        f"size must be [height, width] of at least 8 pixels each, got {size}",
        "size",
    )


def _batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """One epoch of shuffled (images, masks) batches per call, in a seeded order."""
    import torch

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        for i in range(0, x.shape[0], batch_size):
            yield x[order[i : i + batch_size]], y[order[i : i + batch_size]]

    return epoch


# -- carvana-synth: procedural, offline ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SyntheticCarsConfig:
    """The procedural Carvana stand-in (plugins/data/carvana_synth.py): seeded cars, each seen in
    ``views`` turntable poses, on textured backgrounds, with binary masks.

    Attributes:
        cars: cars evaluated (the held-out ``test`` split; ``views`` images each).
        views: poses per car (Carvana photographs 16); views of one car form one cluster.
        height, width: the image size; must match the model's input (the zoo UNet's recipe is 64 x 96).
        seed: seeds every car; the test, train and calibration cars are separate random streams of it.
        train_cars: cars of the train split, the only source of calibration and fine-tuning data.
        split: which split is evaluated (``test``; ``train`` to measure fitting).
    """

    cars: int = 16
    views: int = 16
    height: int = 64
    width: int = 96
    seed: int = 0
    train_cars: int = 40
    split: Literal["test", "train"] = "test"

    def __post_init__(self) -> None:
        check(self.cars >= 1, f"cars must be >= 1, got {self.cars}", "cars")
        check(self.views >= 1, f"views must be >= 1, got {self.views}", "views")
        check(self.train_cars >= 1, f"train_cars must be >= 1, got {self.train_cars}", "train_cars")
        check(self.height >= 16 and self.width >= 16, f"height and width must be >= 16, got {self.height}x{self.width}", "height")
        check(self.split in ("test", "train"), f"split must be test or train, got {self.split!r}", "split")


@functools.lru_cache(maxsize=8)
def synthetic_split(seed: int, split: str, cars: int, views: int, height: int, width: int) -> tuple[np.ndarray, ...]:
    """(images uint8 N x H x W x 3, masks uint8 N x H x W, car ids N) of a procedural split, kept per process."""
    from .carvana_synth import render_split

    return render_split(seed, split, cars, views, height, width)


def _synth_build(config: SyntheticCarsConfig, model: LoadedModel) -> LoadedData:
    import torch

    height, width = _model_size(model, None, "carvana-synth")
    if (height, width) != (config.height, config.width):
        raise UserError(
            f"dataset carvana-synth makes {config.height}x{config.width} images, but the model expects "
            f"{height}x{width}; set the dataset's height: and width: (or the model's input size) to match"
        )
    cars = config.cars if config.split == "test" else config.train_cars
    images, masks, ids = synthetic_split(config.seed, config.split, cars, config.views, height, width)
    x, y = _normalise(images, model), torch.from_numpy(masks.astype(np.int64))
    train_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def train() -> tuple[torch.Tensor, torch.Tensor]:
        if "t" not in train_cache:
            ti, tm, _ = synthetic_split(config.seed, "train", config.train_cars, config.views, height, width)
            train_cache["t"] = (_normalise(ti, model), torch.from_numpy(tm.astype(np.int64)))
        return train_cache["t"]

    def calibration(n: int) -> torch.Tensor:
        tx, _ = train()
        return tx[torch.randperm(tx.shape[0], generator=torch.Generator().manual_seed(config.seed))[:n]]

    data = LoadedData(
        lambda batch_size: ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)),
        x.shape[0],
        True,
        f"carvana-synth:{config.split}:{x.shape[0]}:{_digest(images, masks)}",
        calibration,
        lambda: _batches(*train(), 16, config.seed)(),
        f"procedural cars, {config.split} split ({cars} cars x {config.views} views, {height}x{width})",
        ids,
        task=TASK,
        preview=preview_index(masks),
    )
    return data


def thin_pixels(masks: np.ndarray) -> np.ndarray:
    """Per mask (N x H x W), its foreground pixels whose left and right neighbours are background:
    the 1-pixel antennas and mirror stalks."""
    m = masks.astype(bool)
    return (m[:, :, 1:-1] & ~m[:, :, :-2] & ~m[:, :, 2:]).reshape(m.shape[0], -1).sum(1)


def preview_index(masks: np.ndarray) -> int:
    """The example the report's mask picture shows: the first with the most thin structure (an antenna
    seen from the side), where compression errors show first."""
    return int(np.argmax(thin_pixels(masks)))


# -- carvana: the competition's images from disk ------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CarvanaConfig:
    """Carvana's train images and masks from disk, split by car into a held-out test part.

    Attributes:
        root: the folder holding train/ and train_masks/ (or --data ROOT, or $B2S_CARVANA).
        size: [height, width] the images and masks are resized to; None = the model's input size.
        test_fraction: the share of cars held out (by a hash of the car id: see the module docstring).
        split: which part is evaluated (``test``, the held-out cars; ``train`` only to measure fitting).
        cars: evaluate only the first N cars of the split (sorted ids; all 16 views of each).
        workers: image-decoding processes.
    """

    root: str | None = None
    size: tuple[int, int] | None = None
    test_fraction: float = 0.2
    split: Literal["test", "train"] = "test"
    cars: int | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        _check_size(self.size)
        check(0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction}", "test_fraction")
        check(self.split in ("test", "train"), f"split must be test or train, got {self.split!r}", "split")
        check(self.cars is None or self.cars >= 1, f"cars must be >= 1, got {self.cars}", "cars")
        check(self.workers >= 0, f"workers must be >= 0, got {self.workers}", "workers")


def is_carvana_root(path: Path) -> bool:
    """Whether ``path`` holds the competition's layout (train/*.jpg beside train_masks/)."""
    images, masks = path / "train", path / "train_masks"
    return images.is_dir() and masks.is_dir() and any(IMAGE.match(p.name) for p in images.iterdir())


def resolve_root(config: CarvanaConfig) -> Path | None:
    override = os.environ.get(OVERRIDE_ENV)
    if override and is_carvana_root(Path(override).expanduser()):
        return Path(override).expanduser()
    for candidate in (config.root, os.environ.get(ENV)):
        if candidate:
            return Path(candidate).expanduser()
    return None


def origin(config: CarvanaConfig) -> str | None:
    """The root when ``--data`` or ``$B2S_CARVANA`` chose it (it then joins the cell ids)."""
    root = resolve_root(config)
    chosen = root is not None and (config.root is None or str(root) != str(Path(config.root).expanduser()))
    return str(root.resolve()) if chosen and root is not None else None


def held_out(car: str, test_fraction: float) -> bool:
    """Whether a car is in the held-out test part: SHA-256 of its id, first 8 hex digits / 2**32."""
    return int(hashlib.sha256(car.encode()).hexdigest()[:8], 16) / 2**32 < test_fraction


def scan(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    """car id -> its (image, mask) pairs in view order; an image without its mask is an error."""
    cars: dict[str, list[tuple[Path, Path]]] = {}
    missing = []
    for image in sorted((root / "train").iterdir()):
        m = IMAGE.match(image.name)
        if not m:
            continue
        mask = root / "train_masks" / f"{image.stem}_mask.gif"
        if not mask.is_file():
            missing.append(mask.name)
            continue
        cars.setdefault(m["car"], []).append((image, mask))
    if missing:
        raise UserError(
            f"{len(missing)} images under {root / 'train'} have no mask in {root / 'train_masks'} "
            f"(e.g. {missing[0]}); unzip train_masks.zip there completely"
        )
    return cars


def split_cars(cars: dict[str, list[tuple[Path, Path]]], split: str, test_fraction: float) -> list[str]:
    """The sorted car ids of a split."""
    return sorted(c for c in cars if held_out(c, test_fraction) == (split == "test"))


class _Pairs:
    """A map-style dataset of (image, mask) files: resized, normalised image and int64 mask; no torch
    base class, so that registering this plugin imports no torch."""

    def __init__(self, pairs: list[tuple[Path, Path]], size: tuple[int, int], model: LoadedModel):
        self.pairs, self.size, self.model = pairs, size, model

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        from PIL import Image

        image_path, mask_path = self.pairs[i]
        h, w = self.size
        with Image.open(image_path) as img:
            rgb = np.array(img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
        with Image.open(mask_path) as msk:
            mask = np.array(msk.convert("L").resize((w, h), Image.Resampling.NEAREST)) > 0
        return _normalise(rgb[None], self.model)[0], torch.from_numpy(mask.astype(np.int64))


def _carvana_build(config: CarvanaConfig, model: LoadedModel) -> LoadedData:
    import torch

    root = resolve_root(config)
    if root is None or not is_carvana_root(root):
        raise UserError(f"Carvana not found{f' under {root}' if root else ''}: {HOWTO}")
    size = _model_size(model, config.size, "carvana")
    cars = scan(root)
    chosen = split_cars(cars, config.split, config.test_fraction)[: config.cars]
    if not chosen:
        raise UserError(f"no car of {root / 'train'} falls in the {config.split} split at test_fraction {config.test_fraction}")
    pairs = [p for c in chosen for p in cars[c]]
    ids = np.array([k for k, c in enumerate(chosen) for _ in cars[c]], dtype=np.int64)
    dataset = _Pairs(pairs, size, model)
    training_cars = split_cars(cars, "train", config.test_fraction)

    def loader(data: _Pairs, batch_size: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from torch.utils.data.DataLoader(
            cast("torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]", data),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(0) if shuffle else None,
            num_workers=config.workers,
            pin_memory=torch.cuda.is_available(),
        )

    def calibration(n: int) -> torch.Tensor:
        pool = [p for c in training_cars for p in cars[c]]
        if not pool:
            raise UserError(f"calibration needs training cars, and test_fraction {config.test_fraction} left none")
        picks = [pool[int(i)] for i in torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))[:n]]
        return torch.stack([_Pairs(picks, size, model)[i][0] for i in range(len(picks))])

    def training() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from loader(_Pairs([p for c in training_cars for p in cars[c]], size, model), 8, True)

    listing = "\n".join(f"{i.name}:{m.name}" for i, m in pairs)
    return LoadedData(
        lambda batch_size: loader(dataset, batch_size, False),
        len(pairs),
        True,
        f"carvana:{config.split}:{config.test_fraction}:{size[0]}x{size[1]}:{len(pairs)}:"
        f"{hashlib.sha256(listing.encode()).hexdigest()[:16]}",
        calibration,
        training,
        f"Carvana {config.split} cars at {root} ({len(chosen)} cars, {len(pairs)} images, {size[0]}x{size[1]})",
        ids,
        task=TASK,
    )


def _carvana_problems(config: CarvanaConfig) -> list[str]:
    root = resolve_root(config)
    if root is not None and is_carvana_root(root):
        return []
    override = os.environ.get(OVERRIDE_ENV)
    where = f" under {root}" if root else (f" under --data {override}" if override else "")
    return [f"Carvana not found{where}: {HOWTO}"]


DATASETS = [
    DatasetSpec(
        "carvana-synth",
        SyntheticCarsConfig,
        _synth_build,
        True,
        "car-mask",
        None,
        "procedural Carvana stand-in: seeded cars with antennas and mirrors on textured backgrounds, "
        "16 views each, binary masks, 64x96 (offline)",
        task=TASK,
    ),
    DatasetSpec(
        "carvana",
        CarvanaConfig,
        _carvana_build,
        True,
        "car-mask",
        _carvana_problems,
        "Carvana (Kaggle carvana-image-masking-challenge train set) from ROOT/train and ROOT/train_masks, "
        "held-out cars by a hash of the car id",
        origin,
        task=TASK,
    ),
]


@b2s.hookimpl
def b2s_register_datasets(register: Callable[[b2s.DatasetSpec], None]) -> None:
    for spec in DATASETS:
        register(spec)
