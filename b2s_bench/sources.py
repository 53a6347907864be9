"""Model sources and datasets, as plugins register them; and where b2s-bench keeps files it can rebuild
(:func:`cache_dir`: zoo weights, downloads, reference outputs). Importing it loads no torch."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .tasks import DEFAULT_TASK, TASK_NAME

if TYPE_CHECKING:  # annotations only
    import torch
    from torch import nn

__all__ = [
    "ModelRequest",
    "LoadedModel",
    "ModelSource",
    "LoadedData",
    "DatasetSpec",
    "split_model_name",
    "cache_dir",
    "file_digest",
]


def split_model_name(name: str) -> tuple[str, str]:
    """``"timm:resnet18"`` -> ``("timm", "resnet18")``."""
    source, sep, arch = name.partition(":")
    if not sep or not source or not arch:
        raise ValueError(f"model names are SOURCE:NAME (`b2s-bench ls models` lists them), got {name!r}")
    return source, arch


@dataclasses.dataclass(frozen=True)
class ModelRequest:
    """A model as a suite asks for it."""

    name: str  # SOURCE:NAME
    pretrained: bool = False
    weights: str | None = None  # a local file, or "package:MODULE" for weights shipped in a pip package
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def source(self) -> str:
        return split_model_name(self.name)[0]

    @property
    def arch(self) -> str:
        return split_model_name(self.name)[1]


@dataclasses.dataclass
class LoadedModel:
    """A built model with what the runner and datasets need to know about it."""

    module: nn.Module
    input_shape: tuple[int, ...]  # one example, (C, H, W)
    num_classes: int
    checkpoint: str  # which weights: "random-init", a package and version, a file hash, a recipe hash
    label_space: str = ""  # "imagenet-1k", "fashion-mnist", ... (datasets check they match)
    #: timm-style preprocessing: input_size, mean, std, crop_pct, interpolation (a language model: its
    #: ``tokenize``, str -> list[int])
    data_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: a model that reads token ids (N×T int64, T up to ``input_shape[0]``): the vocabulary size; None
    #: for float inputs (images)
    input_vocab: int | None = None


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A family of models under one prefix (``timm``, ``torchvision``, ``zoo``).

    Attributes:
        list_models: names under this source (without the prefix) matching a pattern or all.
        build: builds the model (downloads nothing unless the request allows it).
        fingerprint: a cheap, stable identity of the weights a request would load (part of cell ids).
        problems: what would stop ``build`` (a missing file or package), found without building,
            for ``validate``; each item says how to fix it.
        build_architecture: the bare architecture of a name, with no weights loaded or trained
            (for a distillation student); by default ``build`` of a plain request.
        catalog: ``catalog() -> [(name, weights, availability)]``: each model (without the prefix) with
            the weights it can have and whether they work offline (availability starts with
            "offline") or need the hub; ``ls models`` shows it (bare names when it is None).
        prepare: makes the weights a request names exist on this machine (e.g. trains and caches a
            zoo model), so that ``fingerprint`` can hash the real weights. The runner calls it once
            per model before computing cell ids; ``validate`` never does.
    """

    name: str
    build: Callable[[ModelRequest], LoadedModel]
    list_models: Callable[[str | None], list[str]]
    fingerprint: Callable[[ModelRequest], str] | None = None
    problems: Callable[[ModelRequest], list[str]] | None = None
    description: str = ""
    build_architecture: Callable[[str], nn.Module] | None = None
    prepare: Callable[[ModelRequest], None] | None = None
    catalog: Callable[[], list[tuple[str, str, str]]] | None = None


@dataclasses.dataclass
class LoadedData:
    """A dataset prepared for one model.

    Attributes:
        eval_batches: ``eval_batches(batch_size)`` iterates ``(inputs, labels)``; labels are None
            for an unlabeled set (scored by agreement with the dense model).
        calibration: ``calibration(n)`` returns up to n unlabeled inputs from a training split.
        training: iterates ``(inputs, labels)`` batches of a training split (one epoch).
        clusters: one integer id per evaluation example, in ``eval_batches`` order, naming the group
            of examples it is not independent of (the photo a view was cropped from, the image of a
            pixel, the document of a token); intervals resample whole clusters. None when every
            example is independent (ImageNet, Fashion-MNIST).
        task: the task of its examples: the runner sets it to its ``DatasetSpec.task`` after ``build``
            (the spec decides, as validation read it there).
        preview: the index of the evaluation example a report pictures (segmentation's mask grid: an
            image with thin structures shows what compression loses); 0 by default.
    """

    eval_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor | None]]]
    num_examples: int
    labeled: bool
    fingerprint: str
    calibration: Callable[[int], torch.Tensor] | None = None
    training: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None
    description: str = ""
    clusters: np.ndarray | None = None
    task: str = DEFAULT_TASK
    preview: int = 0

    def __post_init__(self) -> None:
        if self.clusters is None:
            return
        ids = np.asarray(self.clusters)
        if ids.ndim != 1 or ids.size != self.num_examples or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"LoadedData.clusters of dataset {self.fingerprint!r}: need one integer cluster id per "
                f"example ({self.num_examples}), got {ids.dtype} of shape {ids.shape}; "
                "or None when the examples are independent"
            )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset plugin.

    Attributes:
        config: frozen dataclass of the dataset's options (``limit``, ``root``, ...).
        build: ``build(config, model) -> LoadedData``, preprocessing for that model.
        problems: ``problems(config) -> list[str]``: why it cannot load here (missing files), with fixes.
        label_space: the output space the labels index ("" when unlabeled or any).
        origin: ``origin(config) -> str | None``: where the data is read from when the options do not
            fix it (an environment variable, ``--data``); part of cell ids, so other data never
            reuses a record. None when the options decide it.
        task: what the examples ask of a model (a registered ``TaskSpec.name``: "classification",
            "segmentation", ...): it decides the outputs the runner computes and the metrics a suite
            may ask for on this dataset.
    """

    name: str
    config: type
    build: Callable[[Any, LoadedModel], LoadedData]
    labeled: bool = True
    label_space: str = ""
    problems: Callable[[Any], list[str]] | None = None
    description: str = ""
    origin: Callable[[Any], str | None] | None = None
    task: str = DEFAULT_TASK

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not TASK_NAME.fullmatch(self.task):
            raise ValueError(
                f"dataset {self.name!r}: task {self.task!r} is no task name; use a registered task's name "
                "(`b2s-bench ls tasks`), e.g. task='classification'"
            )


_DIGESTS: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """``$B2S_BENCH_CACHE``, else ``$XDG_CACHE_HOME/b2s-bench``, else ``~/.cache/b2s-bench``."""
    root = os.environ.get("B2S_BENCH_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "b2s-bench"


def file_digest(path: str | os.PathLike[str], length: int = 16) -> str:
    """The first ``length`` hex digits of a file's SHA-256 (16: what weights a cell really loads, for
    cell ids; 64: the whole digest, to check a shipped file).

    Kept per process by (path, size, mtime), so a suite whose cells share a checkpoint hashes it once.
    """
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key][:length]
