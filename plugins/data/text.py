"""Text corpora for language models: documents, a deterministic split by document, token windows.

The offline corpus is the Python 3 documentation as Debian's ``python3-doc`` package ships it: the
reStructuredText sources of every page under ``/usr/share/doc/python3.X/html/_sources/**/*.rst.txt``
(about 500 pages, 12 MB for 3.11). Each page is one *document*. The documentation is under the PSF
License Version 2 (its code examples under the Zero-Clause BSD licence), which allows redistribution
of derived works such as the zoo language model's weights (see ``/usr/share/doc/python3.X-doc/copyright``).

Split (by document, never within one): a page is in the test split when the first byte of the SHA-256
of its path relative to ``_sources`` (``library/os.rst.txt``) is below 26 (about 10 %), else in the train
split; no random state, so every machine and version splits a page the same way.

Windows: a document's tokens are cut into non-overlapping windows of ``T`` inputs; window ``i`` reads
tokens ``[iT, iT+T)`` and predicts tokens ``[iT+1, iT+T+1)``, so every token of a document but its first
is predicted once, always with its document's earlier tokens of the same window as context. The tail of
a document too short for a whole window is left out (fixed-length windows keep the per-window mean
NLL comparable). Each window carries its document's id: intervals resample documents
(``LoadedData.clusters``), since the windows of one page are not independent.

Tokenizer: the zoo language model reads UTF-8 bytes (vocabulary 256, nothing trained or downloaded);
a model from the ``hf:`` source brings its own tokenizer (``LoadedModel.data_config["tokenize"]``).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import b2s_bench as b2s
from b2s_bench import DatasetSpec, UserError, check
from b2s_bench.sources import LoadedData, LoadedModel

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch


__all__ = [
    "BYTES",
    "Document",
    "PyDocConfig",
    "Windows",
    "byte_tokens",
    "corpus_text",
    "is_test",
    "pydoc_root",
    "spread",
    "text_data",
    "tokenizer_of",
    "windows",
]

#: where Debian's python3.X-doc packages put the page sources (newest version first when several)
PYDOC_GLOB = "/usr/share/doc/python3.*/html/_sources"
PYDOC_WHERE = (
    "install it with `apt-get install python3-doc` (the pages' sources land in "
    "/usr/share/doc/python3.X/html/_sources), or point `root:` or $B2S_PYDOC at such a _sources folder"
)
TEST_BYTE = 26  # a page is a test page when sha256(relative path)[0] < TEST_BYTE: about 10 %
#: the label space of byte-level models: token i is the byte value i
BYTES = "utf-8-bytes"


# -- tokenizers ---------------------------------------------------------------------------------------------
def byte_tokens(text: str) -> list[int]:
    """The byte-level tokenizer of the zoo language model: UTF-8 bytes, vocabulary 256."""
    return list(text.encode("utf-8"))


def tokenizer_of(model: LoadedModel) -> Callable[[str], list[int]]:
    """The model's tokenizer: ``data_config["tokenize"]`` (an hf: model's), else UTF-8 bytes when the
    model's label space is :data:`BYTES`; anything else is an error naming the fix."""
    tokenize = model.data_config.get("tokenize")
    if callable(tokenize):
        return tokenize
    if model.label_space == BYTES:
        return byte_tokens
    raise UserError(
        f"model {model.checkpoint} has no tokenizer (data_config['tokenize']) and does not read UTF-8 bytes; "
        "text datasets need a language model (zoo-lm:... or hf:...)"
    )


# -- documents ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Document:
    """One document of a corpus: its name (a relative path or a title) and its text."""

    name: str
    text: str


def is_test(name: str) -> bool:
    """The split rule: the first byte of sha256(name) below :data:`TEST_BYTE`."""
    return hashlib.sha256(name.encode("utf-8")).digest()[0] < TEST_BYTE


def pydoc_root(root: str | None) -> Path | None:
    """The ``_sources`` folder: ``root:``, else ``$B2S_PYDOC``, else the newest installed python3.X-doc."""
    for candidate in (root, os.environ.get("B2S_PYDOC")):
        if candidate:
            path = Path(candidate).expanduser()
            return path if path.is_dir() else None

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"python3\.(\d+)", path)
        return (int(match.group(1)),) if match else (0,)

    found = sorted(glob.glob(PYDOC_GLOB), key=version, reverse=True)
    return Path(found[0]) if found else None


def pydoc_documents(root: Path) -> list[Document]:
    """Every ``*.rst.txt`` page under ``root``, sorted by relative path."""
    files = sorted(root.rglob("*.rst.txt"), key=lambda p: p.relative_to(root).as_posix())
    return [Document(p.relative_to(root).as_posix(), p.read_text(encoding="utf-8", errors="replace")) for p in files]


def split_documents(docs: Sequence[Document], split: str) -> list[Document]:
    check(split in ("train", "test"), f"split must be 'train' or 'test', got {split!r}", "split")
    return [d for d in docs if is_test(d.name) == (split == "test")]


# -- windows -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Windows:
    """Token windows: ``inputs[i]`` predicts ``targets[i]`` (both N×T int64), ``doc[i]`` its document."""

    inputs: torch.Tensor
    targets: torch.Tensor
    doc: np.ndarray

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, index: Sequence[int] | np.ndarray) -> Windows:
        import torch

        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return Windows(self.inputs[idx], self.targets[idx], self.doc[np.asarray(index, dtype=np.int64)])


def windows(docs: Sequence[Document], tokenize: Callable[[str], list[int]], length: int) -> Windows:
    """Non-overlapping windows of ``length`` inputs (and their next tokens) of each document in turn;
    a document's tail shorter than a window is left out."""
    import torch

    check(length >= 1, f"window length must be >= 1, got {length}", "length")
    inputs, targets, doc = [], [], []
    for i, d in enumerate(docs):
        tokens = torch.tensor(tokenize(d.text), dtype=torch.int64)
        count = (tokens.numel() - 1) // length
        if count < 1:
            continue
        inputs.append(tokens[: count * length].reshape(count, length))
        targets.append(tokens[1 : count * length + 1].reshape(count, length))
        doc += [i] * count
    if not inputs:
        raise UserError(f"no document holds {length + 1} tokens: nothing to evaluate (lower `length`)")
    return Windows(torch.cat(inputs), torch.cat(targets), np.asarray(doc, dtype=np.int64))


def spread(n: int, limit: int | None) -> np.ndarray:
    """``limit`` indices spread evenly over ``range(n)`` (all when limit is None or >= n): a limit then
    samples every document rather than the first ones."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.floor(np.arange(limit) * (n / limit)).astype(np.int64)


def seeded_pick(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct indices of ``range(n)``, in a seeded random order."""
    return np.random.default_rng(seed).permutation(n)[: min(count, n)]


def digest(w: Windows) -> str:
    h = hashlib.sha256(w.inputs.numpy().tobytes())
    h.update(w.targets[:, -1].numpy().tobytes())
    h.update(w.doc.tobytes())
    return h.hexdigest()[:16]


def text_data(
    name: str,
    test: Windows,
    train: Callable[[], Windows],
    description: str,
    batch: int = 16,
    seed: int = 0,
) -> LoadedData:
    """A :class:`LoadedData` of token windows: evaluation batches ``(inputs, targets)``, ``clusters`` = the
    document of each window, ``calibration(n)``: n seeded train windows (int64 n×T), ``training``: one
    seeded epoch of train windows as ``(inputs, targets)`` batches."""

    def batches(batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for i in range(0, len(test), batch_size):
            yield test.inputs[i : i + batch_size], test.targets[i : i + batch_size]

    def calibration(n: int) -> torch.Tensor:
        pool = train()
        return pool.inputs[seeded_pick(len(pool), n, seed)]

    def training() -> list[tuple[torch.Tensor, torch.Tensor]]:
        pool = train()
        order = seeded_pick(len(pool), len(pool), seed + 1)
        return [(pool.inputs[order[i : i + batch]], pool.targets[order[i : i + batch]]) for i in range(0, len(order), batch)]

    return LoadedData(
        batches,
        len(test),
        True,
        f"{name}:{len(test)}x{test.inputs.shape[1]}:{digest(test)}",
        calibration,
        training,
        description,
        clusters=test.doc.copy(),
    )


# -- the python-docs dataset --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PyDocConfig:
    """root: the pages' ``_sources`` folder (default: $B2S_PYDOC, else the newest installed python3.X-doc);
    split: the evaluated split (test; train only to measure fit); length: tokens per window (the model's
    context at most); limit: windows evaluated, spread evenly over the split (None: all);
    train_limit: train windows calibration and training draw from (None: all)."""

    root: str | None = None
    split: str = "test"
    length: int = 128
    limit: int | None = None
    train_limit: int | None = None

    def __post_init__(self) -> None:
        check(self.split in ("train", "test"), f"split must be 'train' or 'test', got {self.split!r}", "split")
        check(self.length >= 1, f"length must be >= 1, got {self.length}", "length")
        check(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}", "limit")
        check(
            self.train_limit is None or self.train_limit >= 1,
            f"train_limit must be >= 1, got {self.train_limit}",
            "train_limit",
        )


def check_length(length: int, model: LoadedModel) -> None:
    context = int(model.input_shape[0]) if model.input_shape else length
    if length > context:
        raise UserError(
            f"dataset option length: {length} tokens exceed the model's context of {context}; set `length: {context}`"
        )


_CACHE: dict[tuple[str, str, int, int | None], Windows] = {}


def pydoc_windows(config: PyDocConfig, split: str, tokenize: Callable[[str], list[int]], key: str) -> Windows:
    """The windows of a split (kept per process: cells of one suite share them)."""
    root = pydoc_root(config.root)
    if root is None:
        raise UserError(f"the Python documentation corpus was not found: {PYDOC_WHERE}")
    limit = config.limit if split == config.split else config.train_limit
    cache_key = (f"{root}:{key}", split, config.length, limit)
    if cache_key not in _CACHE:
        docs = split_documents(pydoc_documents(root), split)
        all_windows = windows(docs, tokenize, config.length)
        _CACHE[cache_key] = all_windows.take(spread(len(all_windows), limit))
    return _CACHE[cache_key]


def _pydoc_build(config: PyDocConfig, model: LoadedModel) -> LoadedData:
    tokenize = tokenizer_of(model)
    check_length(config.length, model)
    key = model.label_space or model.checkpoint
    test = pydoc_windows(config, config.split, tokenize, key)
    root = pydoc_root(config.root)
    return text_data(
        "python-docs",
        test,
        lambda: pydoc_windows(config, "train", tokenize, key),
        f"Python documentation pages ({root}), {config.split} split: {len(test)} windows of {config.length} tokens "
        f"from {len(set(test.doc.tolist()))} pages",
    )


def _pydoc_problems(config: PyDocConfig) -> list[str]:
    root = pydoc_root(config.root)
    if root is None:
        return [f"the Python documentation corpus was not found: {PYDOC_WHERE}"]
    if not any(root.rglob("*.rst.txt")):
        return [f"{root} holds no *.rst.txt pages: {PYDOC_WHERE}"]
    return []


def _pydoc_origin(config: PyDocConfig) -> str | None:
    """The folder when the options do not fix it (part of cell ids: another Python version's pages are other data)."""
    if config.root:
        return None
    root = pydoc_root(None)
    return str(root.resolve()) if root else None


SPEC = DatasetSpec(
    "python-docs",
    PyDocConfig,
    _pydoc_build,
    True,
    "",
    _pydoc_problems,
    "the Python 3 documentation pages of Debian's python3-doc (PSF licence) as token windows, split by page",
    _pydoc_origin,
    task="language-modeling",
)


@b2s.hookimpl
def b2s_register_datasets(register: Callable[[b2s.DatasetSpec], None]) -> None:
    register(SPEC)


def corpus_text(split: str, root: str | None = None) -> list[Document]:
    """The python-docs documents of a split (what the zoo language model trains on)."""
    found = pydoc_root(root)
    if found is None:
        raise UserError(f"the Python documentation corpus was not found: {PYDOC_WHERE}")
    return split_documents(pydoc_documents(found), split)
