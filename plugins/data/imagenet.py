"""ImageNet validation (and Imagenette) from a folder on disk, preprocessed for each model.

Layout: ``ROOT/val/<wnid>/*.JPEG`` (or ROOT pointing at the class folders themselves). Each wnid
maps to its ImageNet-1k index through timm's synset list, so the full 1000-class set, Imagenette's
10 classes and any other subset all score against the model's 1000 outputs. The root comes from
``--data`` (an option this plugin adds to ``run`` and ``validate``), the suite's ``root:``, or ``$B2S_IMAGENET``.
Preprocessing is the model's timm data config (resize by crop_pct, interpolation, mean/std).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import b2s_bench as b2s
from b2s_bench import DatasetSpec, UserError, check
from b2s_bench.sources import LoadedData, LoadedModel

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch

OVERRIDE_ENV = "B2S_IMAGENET_OVERRIDE"  # set by --data (see b2s_register_cli_options below)
WNID = re.compile(r"^n\d{8}$")
EXTENSIONS = {".jpeg", ".jpg", ".png"}
HOWTO = (
    "download the ILSVRC2012 validation images (https://image-net.org, login required) and arrange them as "
    "ROOT/val/<wnid>/*.JPEG (1000 folders of 50 images; e.g. with the widely used valprep.sh), or unpack "
    "Imagenette (imagenette2-320, https://github.com/fastai/imagenette) as ROOT/val/<wnid>/; then set `root:` "
    "in the suite, pass --data ROOT, or export B2S_IMAGENET=ROOT"
)


def imagenet_wnids() -> list[str]:
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@dataclasses.dataclass(frozen=True)
class ImageNetConfig:
    """root: the data folder; split: the sub-folder (val); limit: images in all; per_class: images per class;
    workers: loader processes."""

    root: str | None = None
    split: str = "val"
    limit: int | None = None
    per_class: int | None = None
    workers: int = 2
    calibration_split: str = "train"

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}", "limit")
        check(self.per_class is None or self.per_class >= 1, f"per_class must be >= 1, got {self.per_class}", "per_class")
        check(self.workers >= 0, f"workers must be >= 0, got {self.workers}", "workers")


def resolve_root(config: ImageNetConfig) -> Path | None:
    for candidate in (os.environ.get(OVERRIDE_ENV), config.root, os.environ.get("B2S_IMAGENET")):
        if candidate:
            return Path(candidate).expanduser()
    return None


def origin(config: ImageNetConfig) -> str | None:
    """The root when ``--data`` or ``$B2S_IMAGENET`` chose it (it then joins the cell ids)."""
    override = os.environ.get(OVERRIDE_ENV)
    chosen = override or (None if config.root else os.environ.get("B2S_IMAGENET"))
    return str(Path(chosen).expanduser().resolve()) if chosen else None


def split_folder(root: Path, split: str) -> Path | None:
    for folder in (root / split, root):
        if folder.is_dir() and any(WNID.match(p.name) for p in folder.iterdir() if p.is_dir()):
            return folder
    return None


def scan(folder: Path, limit: int | None, per_class: int | None) -> list[tuple[str, int]]:
    """(path, ImageNet index) pairs in a deterministic order: sorted classes, sorted files."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and WNID.match(p.name))
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise UserError(f"{folder}: class folders {unknown[:3]} are not ImageNet-1k wnids")
    items = []
    for wnid in classes:
        files = sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in EXTENSIONS)
        items += [(str(p), index[wnid]) for p in files[:per_class]]
    if limit:  # spread a limit over classes rather than taking the first ones
        step = max(len(items) / limit, 1.0)
        items = [items[int(i * step)] for i in range(min(limit, len(items)))]
    return items


class _Images:
    """A map-style dataset (what torch's DataLoader reads: ``len`` and ``[i]``); no torch base class, so
    that registering this plugin imports no torch."""

    def __init__(self, items: list[tuple[str, int]], transform: Callable[[Any], torch.Tensor]):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


def _transform(model: LoadedModel) -> Callable[[Any], torch.Tensor]:
    import timm.data

    cfg = dict(model.data_config) or {"input_size": tuple(model.input_shape)}
    return timm.data.create_transform(**timm.data.resolve_data_config(cfg), is_training=False)


def _build(config: ImageNetConfig, model: LoadedModel) -> LoadedData:
    import torch

    if model.num_classes != 1000:
        raise UserError(f"ImageNet labels index 1000 classes; the model has {model.num_classes} outputs")
    root = resolve_root(config)
    folder = split_folder(root, config.split) if root else None
    if folder is None:
        raise UserError(f"ImageNet {config.split} not found{f' under {root}' if root else ''}: {HOWTO}")
    items = scan(folder, config.limit, config.per_class)
    if not items:
        raise UserError(f"{folder} holds no images ({', '.join(sorted(EXTENSIONS))})")
    transform = _transform(model)
    dataset = _Images(items, transform)

    def batches(batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            cast("torch.utils.data.Dataset[tuple[torch.Tensor, int]]", dataset),
            batch_size=batch_size,
            shuffle=False,
            num_workers=config.workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
        yield from loader

    def calibration(n: int) -> torch.Tensor:
        cal = split_folder(root, config.calibration_split) if root else None
        if cal is None or cal == folder:
            raise UserError(
                f"calibration needs training images at {root}/{config.calibration_split}/<wnid>/; "
                "the validation set must not be used to calibrate"
            )
        pool = scan(cal, None, None)
        gen = torch.Generator().manual_seed(0)
        picks = [pool[int(i)] for i in torch.randperm(len(pool), generator=gen)[:n]]
        return torch.stack([_Images(picks, transform)[i][0] for i in range(len(picks))])

    digest = hashlib.sha256("\n".join(p for p, _ in items).encode()).hexdigest()[:16]
    return LoadedData(
        batches,
        len(items),
        True,
        f"imagenet:{config.split}:{len(items)}:{digest}",
        calibration,
        description=f"ImageNet {config.split} at {folder} ({len(items)} images)",
    )


def _problems(config: ImageNetConfig) -> list[str]:
    root = resolve_root(config)
    if root is None or split_folder(root, config.split) is None:
        return [f"ImageNet {config.split} not found{f' under {root}' if root else ''}: {HOWTO}"]
    return []


SPEC = DatasetSpec(
    "imagenet",
    ImageNetConfig,
    _build,
    True,
    "imagenet-1k",
    _problems,
    "ImageNet-1k validation (or Imagenette / any wnid subset) from ROOT/val/<wnid>/*.JPEG",
    origin,
)


@b2s.hookimpl
def b2s_register_datasets(register: Callable[[b2s.DatasetSpec], None]) -> None:
    register(SPEC)


def _apply_data(value: str | None) -> None:
    """``--data ROOT``: kept in the environment, which every worker process inherits."""
    if value:
        os.environ[OVERRIDE_ENV] = value


@b2s.hookimpl
def b2s_register_cli_options(register: Callable[[b2s.CliOption], None]) -> None:
    register(
        b2s.CliOption(
            "--data",
            ("run", "validate"),
            _apply_data,
            "the data root: ImageNet's ROOT/val/, WikiText-2's ROOT/wikitext-2-raw-v1/, Carvana's ROOT/train/ and "
            "ROOT/train_masks/ (overrides the suites' root:)",
            "DIR",
        )
    )
