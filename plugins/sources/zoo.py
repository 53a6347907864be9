"""The reference-model zoo: small models trained deterministically in the run, and cached.

A zoo model is a *recipe* (architecture, data, seed, epochs, optimizer). Training is seeded with a
fixed data order, so the same recipe gives the same weights; the cache key is a hash of the
recipe, so a changed recipe never reuses stale weights. Weights are cached as safetensors under
``$B2S_BENCH_CACHE`` (default: the user cache dir, ``~/.cache/b2s-bench``), never in the repo.
Suite ``options:`` override recipe fields (``{epochs: 1, train_limit: 2000}``) and so the key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import ConfigError, LoadedModel, ModelRequest, UnknownNameError, UserError, build_config, check

from .catalog import OFFLINE

ZOO_VERSION = "1"  # bump when the training code changes results


class FashionCNN(nn.Module):
    """Conv(1→c)-BN-ReLU-pool, Conv(c→2c)-BN-ReLU-pool, Linear(2c·49→128), Linear(128→10).

    With c = 32 this is the 422 k-parameter CNN of offline-data.md (about 91 % on Fashion-MNIST).
    """

    def __init__(self, width: int = 32, hidden: int = 128, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 49, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a zoo model is made. Every field is part of the cache key."""

    width: int = 32
    hidden: int = 128
    dataset: str = "fashion-mnist"
    epochs: int = 2
    batch_size: int = 128
    lr: float = 3e-3  # OneCycle peak
    weight_decay: float = 1e-4
    seed: int = 0
    train_limit: int | None = None  # use the first N training images (quick test recipes)

    def __post_init__(self) -> None:
        check(self.width >= 1, f"width must be >= 1, got {self.width}", "width")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}", "epochs")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.dataset == "fashion-mnist", f"only fashion-mnist recipes exist, got {self.dataset!r}", "dataset")

    def key(self) -> str:
        blob = json.dumps({"zoo": ZOO_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


RECIPES = {
    "fmnist-cnn": Recipe(),
    "fmnist-cnn-small": Recipe(width=8, hidden=32),
}


def recipe_for(request: ModelRequest) -> Recipe:
    if request.arch not in RECIPES:
        raise UnknownNameError("zoo model", request.arch, RECIPES)
    try:
        return build_config(Recipe, {**dataclasses.asdict(RECIPES[request.arch]), **dict(request.options)},
                            owner=f"zoo:{request.arch}")
    except ConfigError as e:
        raise UserError(f"zoo:{request.arch} options: {e}") from None


def architecture(recipe: Recipe) -> FashionCNN:
    return FashionCNN(recipe.width, recipe.hidden)


def _batches(x: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``recipe.epochs`` passes over (x, y) in batches, each in a fixed, seeded order."""
    gen = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            yield x[idx], y[idx]


def train(recipe: Recipe, progress: bool | None = None) -> dict[str, torch.Tensor]:
    """Train a recipe deterministically and return its state_dict."""
    from tqdm.auto import tqdm

    from ..data.datasets import load_fmnist

    x, y = load_fmnist("train")
    if recipe.train_limit:
        x, y = x[: recipe.train_limit], y[: recipe.train_limit]
    torch.manual_seed(recipe.seed)
    model = architecture(recipe)
    steps = recipe.epochs * ((x.shape[0] + recipe.batch_size - 1) // recipe.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=steps, desc=f"training zoo model ({recipe.key()})", disable=not show, leave=False)
    model.train()
    try:
        b2s.train_loop(opt, lambda batch: nn.functional.cross_entropy(model(batch[0]), batch[1]),
                       _batches(x, y, recipe), scheduler=sched, progress=bar, log_every=steps)
    finally:
        bar.close()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def cached_weights(recipe: Recipe) -> dict[str, torch.Tensor]:
    """The recipe's weights from the cache, training (and caching) them on a miss."""
    from safetensors.torch import load_file, save_file

    path = _weights_path(recipe)
    if path.is_file():
        return load_file(str(path))
    start = time.perf_counter()
    state = train(recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"recipe": json.dumps(dataclasses.asdict(recipe)),
                                        "train_seconds": f"{time.perf_counter() - start:.1f}"})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return state


def _build(request: ModelRequest) -> LoadedModel:
    recipe = recipe_for(request)
    model = architecture(recipe)
    model.load_state_dict(cached_weights(recipe))
    return LoadedModel(model.eval(), (1, 28, 28), 10, f"zoo:{request.arch}@{recipe.key()}", recipe.dataset)


def _fingerprint(request: ModelRequest) -> str:
    """The recipe and the weights themselves: a model trained on another machine (other numerics, other
    library versions) can differ under the same recipe, and must not reuse this machine's records."""
    recipe = recipe_for(request)
    path = _weights_path(recipe)
    return f"recipe:{recipe.key()}:" + (f"sha256:{b2s.file_digest(path)}" if path.is_file() else "untrained")


def _weights_path(recipe: Recipe) -> Path:
    return b2s.cache_dir() / "zoo" / f"{recipe.key()}.safetensors"


def _prepare(request: ModelRequest) -> None:
    """Train (once) and cache the recipe's weights, so cell ids hash them."""
    cached_weights(recipe_for(request))


def _cached(recipe: Recipe) -> bool:
    return _weights_path(recipe).is_file()


def _problems(request: ModelRequest) -> list[str]:
    try:
        recipe = recipe_for(request)
    except UserError as e:  # an unknown name or a bad option: a mistake in the suite, reported with the others
        return [b2s.SuiteMistake(str(e), "" if isinstance(e, UnknownNameError) else "options")]
    if _cached(recipe):
        return []
    from ..data.datasets import FMNIST_INSTALL, fmnist_root

    return [] if fmnist_root(None) else [f"zoo:{request.arch} is trained on first use and needs its data: {FMNIST_INSTALL}"]


def _catalog() -> list[tuple[str, str, str]]:
    """Every recipe: offline, cached or trained here on first use (which needs Fashion-MNIST on disk)."""
    from ..data.datasets import FMNIST_WHERE, fmnist_root

    has_data = fmnist_root(None) is not None
    rows = []
    for name, recipe in sorted(RECIPES.items()):
        if _cached(recipe):
            rows.append((name, "trained here (cached)", OFFLINE))
        else:
            rows.append((name, "trained here on first use", OFFLINE if has_data else f"{OFFLINE} once Fashion-MNIST is "
                         f"here: {FMNIST_WHERE}"))
    return rows


def _architecture_only(name: str) -> nn.Module:
    return architecture(recipe_for(ModelRequest(f"zoo:{name}")))


SOURCE = b2s.ModelSource("zoo", _build, lambda p: sorted(n for n in RECIPES if not p or fnmatch.fnmatch(n, p)),
                      _fingerprint, _problems, "reference models trained deterministically in the run, cached",
                      build_architecture=_architecture_only, catalog=_catalog, prepare=_prepare)


@b2s.hookimpl
def b2s_register_models(register: Any) -> None:
    register(SOURCE)
