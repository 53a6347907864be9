"""WikiText-2 (raw) from disk, as token windows for a language model's own tokenizer.

Layout: ``ROOT/wikitext-2-raw-v1/wiki.{train,valid,test}.raw`` (the folder of the original archive may
also be named ``wikitext-2-raw``, or ROOT may be that folder itself). ROOT comes from ``--data`` (the
option ``imagenet`` registers: one data root for every from-disk dataset), the suite's ``root:``, or
``$B2S_WIKITEXT``. Nothing is downloaded: :func:`_problems` says where to get the files.

Documents: an article starts at a top-level heading line `` = Title = `` (one ``=`` on each side; the
``= = Section = =`` lines stay inside their article), so the 62 test articles are 62 documents and
intervals resample articles. Windows as in :mod:`.text`: non-overlapping, per article, the short tail
left out, every window's first token without earlier context; so perplexities here are per document and
somewhat higher than the usual figures computed on the whole test file as one stream of 2048-token
windows (a documented choice: the document is the unit the interval resamples).
Calibration (``calibration(n)``): n seeded windows of the train file; the test file is never used to calibrate.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path

import b2s_bench as b2s
from b2s_bench import DatasetSpec, UserError, check
from b2s_bench.sources import LoadedData, LoadedModel

from . import text
from .imagenet import OVERRIDE_ENV

FOLDERS = ("wikitext-2-raw-v1", "wikitext-2-raw")
FILES = {"train": "wiki.train.raw", "valid": "wiki.valid.raw", "test": "wiki.test.raw"}
HEADING = re.compile(r"^ = [^=].* = $")
HOWTO = (
    "download WikiText-2 raw (the archive wikitext-2-raw-v1.zip of Salesforce Research, or the Hugging Face "
    "dataset Salesforce/wikitext, config wikitext-2-raw-v1, written out as text) so that "
    "ROOT/wikitext-2-raw-v1/wiki.test.raw and wiki.train.raw exist; then pass --data ROOT, set `root:` in "
    "the suite, or export B2S_WIKITEXT=ROOT"
)


@dataclasses.dataclass(frozen=True)
class WikiTextConfig:
    """root: the folder holding wikitext-2-raw-v1/ (default: --data, else $B2S_WIKITEXT); split: the
    evaluated file (test, or valid); length: tokens per window (at most the model's context); limit:
    windows evaluated, spread evenly over the split (None: all); train_limit: train windows calibration
    and training draw from (None: all)."""

    root: str | None = None
    split: str = "test"
    length: int = 2048
    limit: int | None = None
    train_limit: int | None = None

    def __post_init__(self) -> None:
        check(self.split in ("test", "valid"), f"split must be 'test' or 'valid', got {self.split!r}", "split")
        check(self.length >= 1, f"length must be >= 1, got {self.length}", "length")
        check(self.limit is None or self.limit >= 1, f"limit must be >= 1, got {self.limit}", "limit")
        check(
            self.train_limit is None or self.train_limit >= 1,
            f"train_limit must be >= 1, got {self.train_limit}",
            "train_limit",
        )


def resolve_root(config: WikiTextConfig) -> Path | None:
    for candidate in (os.environ.get(OVERRIDE_ENV), config.root, os.environ.get("B2S_WIKITEXT")):
        if candidate:
            return Path(candidate).expanduser()
    return None


def folder_of(root: Path) -> Path | None:
    """The folder holding the ``wiki.*.raw`` files: ROOT/wikitext-2-raw-v1, ROOT/wikitext-2-raw, or ROOT."""
    for folder in (*(root / name for name in FOLDERS), root):
        if (folder / FILES["test"]).is_file():
            return folder
    return None


def articles(raw: str) -> list[text.Document]:
    """The articles of a ``wiki.*.raw`` file: each starts at a `` = Title = `` line; text before the first is dropped."""
    docs: list[text.Document] = []
    title, lines = "", list[str]()
    for line in raw.splitlines(keepends=True):
        if HEADING.match(line.rstrip("\n")):
            if title:
                docs.append(text.Document(title, "".join(lines)))
            title, lines = line.strip().strip("=").strip(), [line]
        elif title:
            lines.append(line)
    if title:
        docs.append(text.Document(title, "".join(lines)))
    return docs


def read_split(folder: Path, split: str) -> list[text.Document]:
    path = folder / FILES[split]
    if not path.is_file():
        raise UserError(f"WikiText-2 {split} file {path} is missing: {HOWTO}")
    return articles(path.read_text(encoding="utf-8"))


_CACHE: dict[tuple[str, str, str, int, int | None], text.Windows] = {}


def split_windows(
    folder: Path, split: str, tokenize: Callable[[str], list[int]], key: str, length: int, limit: int | None
) -> text.Windows:
    cache_key = (str(folder), key, split, length, limit)
    if cache_key not in _CACHE:
        found = text.windows(read_split(folder, split), tokenize, length)
        _CACHE[cache_key] = found.take(text.spread(len(found), limit))
    return _CACHE[cache_key]


def _build(config: WikiTextConfig, model: LoadedModel) -> LoadedData:
    tokenize = text.tokenizer_of(model)
    text.check_length(config.length, model)
    root = resolve_root(config)
    folder = folder_of(root) if root else None
    if folder is None:
        raise UserError(f"WikiText-2 not found{f' under {root}' if root else ''}: {HOWTO}")
    key = model.label_space or model.checkpoint
    test = split_windows(folder, config.split, tokenize, key, config.length, config.limit)
    return text.text_data(
        "wikitext-2",
        test,
        lambda: split_windows(folder, "train", tokenize, key, config.length, config.train_limit),
        f"WikiText-2 raw {config.split} at {folder}: {len(test)} windows of {config.length} tokens "
        f"from {len(set(test.doc.tolist()))} articles",
    )


def _problems(config: WikiTextConfig) -> list[str]:
    root = resolve_root(config)
    folder = folder_of(root) if root else None
    if folder is None:
        return [f"WikiText-2 not found{f' under {root}' if root else ''}: {HOWTO}"]
    missing = [name for name in (FILES[config.split], FILES["train"]) if not (folder / name).is_file()]
    return [f"WikiText-2 at {folder} lacks {', '.join(missing)}: {HOWTO}"] if missing else []


def _origin(config: WikiTextConfig) -> str | None:
    """The root when ``--data`` or ``$B2S_WIKITEXT`` chose it (it then joins the cell ids)."""
    chosen = os.environ.get(OVERRIDE_ENV) or (None if config.root else os.environ.get("B2S_WIKITEXT"))
    return str(Path(chosen).expanduser().resolve()) if chosen else None


SPEC = DatasetSpec(
    "wikitext-2",
    WikiTextConfig,
    _build,
    True,
    "",
    _problems,
    "WikiText-2 raw (wiki.test.raw) from disk as token windows per article, for the model's tokenizer",
    _origin,
    task="language-modeling",
)


@b2s.hookimpl
def b2s_register_datasets(register: Callable[[b2s.DatasetSpec], None]) -> None:
    register(SPEC)
