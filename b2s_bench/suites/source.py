"""Where suites come from: suite files found by path or shipped name, and YAML loading that remembers where
every key came from (file and line), for located errors.

Suite files are untrusted input, so loading is bounded and strict: a file larger than
:data:`MAX_BYTES`, binary or not UTF-8 is refused; the YAML is composed with a ``SafeLoader``
subclass that refuses nesting deeper than :data:`MAX_DEPTH` and documents whose aliases would expand
past :data:`MAX_NODES` nodes (a "billion laughs" bomb), before any data is built; and a key given
twice in one mapping is an error (YAML would silently keep the second). Data is then constructed
by the same safe loader from the checked nodes. ``include:`` files are merged underneath the
including file (mappings merge deeply, everything else is replaced), at most
:data:`MAX_FILES` files in all, and each key path remembers its file.

Shipped suites are found, by name, in this order (the first of a name wins):

1. the package's own ``b2s_bench/suites/`` (the embedded default);
2. the ``b2s_bench_suites`` package, where an install maps the repository's ``suites/`` folder to it;
3. the ``suites/`` folder next to the ``b2s_bench`` package of a checkout (an editable install);
4. ``suites/`` in the current directory (running from a clone with another install).

A suite that cannot be found gets a "did you mean" with near file names in the same folder and
near shipped names.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import SuiteError, suggest

__all__ = [
    "Located",
    "load_located",
    "key_path",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_FILES",
    "EMBEDDED",
    "shipped_suites",
    "resolve_suite_path",
    "SUFFIXES",
]

PathKey = tuple[Any, ...]

MAX_BYTES = 1 << 20  # suites are a few KB; a MiB of YAML takes the pure-Python parser seconds
MAX_DEPTH = 64  # suites nest about 6 deep; deep nesting would exhaust Python's recursion limit
MAX_NODES = 100_000  # nodes after alias expansion; the shipped suites have a few hundred
MAX_FILES = 32  # files per suite, includes counted: a tree of includes could otherwise explode
MERGE_TAG = "tag:yaml.org,2002:merge"


def key_path(path: PathKey) -> str:
    """``("compressors", 1, "name")`` -> ``compressors[1].name``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class _TooLarge(yaml.MarkedYAMLError):
    """A document past a limit of :class:`_BoundedLoader`, at a key path (its message is complete)."""

    def __init__(self, problem: str, mark: yaml.Mark, path: PathKey):
        super().__init__(None, None, problem, mark)
        self.path = path


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that bounds nesting depth and alias expansion while composing.

    Every node's expanded size (itself plus its children, an alias counting as the whole node it
    names) is computed as the node is composed, so a bomb is refused after reading its text once,
    long before anything walks the expansion.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._path: list[Any] = []  # the key path being composed, for errors
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size; the tree keeps the nodes alive

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = self._composed(parent, index)
            self._size(node, mark)  # refuses an alias inside the node it names
            return node
        # a mapping's value is composed with its key node as index, a sequence item with its position
        self._path.append(index.value if isinstance(index, yaml.ScalarNode) else index)
        try:
            if len(self._path) > MAX_DEPTH:
                raise self._error(f"the YAML nests deeper than {MAX_DEPTH} levels; a suite needs a few", mark)
            node = self._composed(parent, index)
            self._sizes[id(node)] = size = 1 + sum(int(self._size(child, mark)) for child in _children(node))
            if size > MAX_NODES:
                raise self._error(
                    f"aliases expand this YAML past {MAX_NODES:,} nodes (an alias bomb?); write the "
                    "values out or use fewer aliases",
                    mark,
                )
        finally:
            self._path.pop()
        return node

    def _composed(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        node = super().compose_node(parent, index)
        if node is None:  # only at the end of the stream, which compose_node is never called at
            raise self._error("the YAML ended inside a value", self.peek_event().start_mark)
        return node

    def _error(self, problem: str, mark: yaml.Mark) -> _TooLarge:
        path = tuple(p for p in self._path[1:] if p is not None)
        return _TooLarge(problem, mark, path[:8])  # the start of a deep path is enough to find it

    def _size(self, node: yaml.Node, mark: yaml.Mark) -> int:
        if id(node) not in self._sizes:  # begun but not finished: an alias inside its own anchor
            raise self._error("an alias refers to a node that contains it (a recursive alias)", mark)
        return self._sizes[id(node)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _lines(node: yaml.Node, path: PathKey, out: dict[PathKey, int], file: str) -> None:
    """Record the line of every key path, refusing duplicate and non-scalar keys."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise SuiteError("a key must be a plain name, not a list or a mapping", file, line, key_path(path))
            key = key_node.value
            if key_node.tag != MERGE_TAG:  # `<<: *base` then `key: value` overrides on purpose
                if key in seen:
                    raise SuiteError(
                        f"duplicate key {key!r}, already given on line {seen[key]}; YAML would silently "
                        "keep only the second. Merge the two or delete one",
                        file,
                        line,
                        key_path((*path, key)),
                    )
                seen[key] = line
            out[(*path, key)] = line
            _lines(value_node, (*path, key), out, file)
            out[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out, file)


class Located:
    """Merged suite data plus the file and line of each key path."""

    def __init__(self, data: dict[str, Any], file: str, lines: dict[PathKey, int], parents: list[Located] | None = None):
        self.data = data
        self.file = file
        self.lines = lines
        self.parents = parents or []

    def _find(self, path: PathKey) -> tuple[str, int] | None:
        if path in self.lines:
            return self.file, self.lines[path]
        for parent in reversed(self.parents):  # later includes override earlier ones
            found = parent._find(path)
            if found:
                return found
        return None

    def defines(self, path: PathKey) -> bool:
        return self._find(tuple(path)) is not None

    def where(self, path: PathKey) -> tuple[str, int | None]:
        """(file, line) of the longest prefix of ``path`` that a file defines."""
        for n in range(len(path), 0, -1):
            found = self._find(tuple(path[:n]))
            if found:
                return found
        return self.file, None

    def error(self, path: PathKey, message: str) -> SuiteError:
        file, line = self.where(path)
        return SuiteError(message, file, line, key_path(path))


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def read_text(path: Path, shown: str) -> str:
    """A suite file's text: a regular file of at most MAX_BYTES of UTF-8 (read no further than that).

    Raises:
        SuiteError: missing, not a regular file, too large, binary or not UTF-8.
    """
    if not path.exists():
        raise SuiteError("no such suite file; give a path to a .yaml suite (see suites/)", shown)
    if not path.is_file():  # a folder, a FIFO, /dev/zero: reading would fail, block or never end
        raise SuiteError("not a regular file; give a path to a .yaml suite", shown)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"cannot read the file: {e.strerror}", shown) from None
    if len(raw) > MAX_BYTES:
        raise SuiteError(
            f"the file is larger than {MAX_BYTES >> 20} MiB; a suite is a few KB of YAML. Is it the right file?", shown
        )
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise SuiteError(
            "a binary file, not a YAML suite (it holds NUL bytes; UTF-16 text does too): save the suite as UTF-8 text",
            shown,
            line,
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SuiteError(
            f"not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}); save the suite as UTF-8", shown, line
        ) from None


def parse(text: str, shown: str) -> tuple[Any, dict[PathKey, int]]:
    """Compose (bounded), locate every key (no duplicates), then construct the data, all with safe loading.

    Raises:
        SuiteError: YAML syntax errors and limits, with their line.
    """
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[PathKey, int] = {}
        if node is not None:
            _lines(node, (), lines, shown)
        data = loader.construct_document(node) if node is not None else None
    except _TooLarge as e:
        raise SuiteError(str(e.problem), shown, e.problem_mark.line + 1 if e.problem_mark else None, key_path(e.path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise SuiteError(f"invalid YAML: {problem}; check indentation and quoting", shown, line) from None
    except RecursionError:  # a backstop: MAX_DEPTH keeps nesting far below the interpreter's limit
        raise SuiteError(f"the YAML nests too deeply (limit {MAX_DEPTH} levels)", shown) from None
    finally:
        loader.dispose()
    return data, lines


def _kind(value: Any) -> str:
    """What a YAML document holds, in words."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def load_located(
    path: str | os.PathLike[str],
    _seen: tuple[Path, ...] = (),
    _files: list[Path] | None = None,
    _via: tuple[str, int | None, str] | None = None,
) -> Located:
    """Load a suite file and its includes.

    ``_via`` is where the ``include:`` entry that names this file is (file, line, key path), for errors
    about the included file as a whole: the fix may be in either file.

    Raises:
        SuiteError: unreadable, oversized, binary or non-UTF-8 files, YAML syntax errors and limits (with
            their line), duplicate keys, include cycles, too many included files, and an included file
            that is not a mapping (located at the include, naming both files).
    """
    p = Path(path).resolve()
    shown = _display(p)
    files = [] if _files is None else _files
    if p in _seen:
        raise SuiteError(f"include cycle: {' -> '.join(_display(s) for s in (*_seen, p))}", shown, None, "include")
    files.append(p)
    if len(files) > MAX_FILES:
        raise SuiteError(
            f"the suite reads more than {MAX_FILES} files through include:; include each file once",
            _display(_seen[0]) if _seen else shown,
            None,
            "include",
        )
    data, lines = parse(read_text(p, shown), shown)
    if data is None:
        data = {}
    if not isinstance(data, dict) and _via is not None:
        raise SuiteError(
            f"included file {shown} holds {_kind(data)}, not a mapping of suite keys; an included file "
            "gives keys this suite extends (dataset:, models:, compressors:, runtime:, ...): fix "
            f"{shown} or drop it from include:",
            *_via,
        )
    if not isinstance(data, dict):
        raise SuiteError("a suite must be a YAML mapping of keys (suite:, models:, compressors:, ...)", shown, 1)
    own = Located(data, shown, lines)
    includes = data.get("include", [])
    single = isinstance(includes, str)
    if single:
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise own.error(("include",), "include must be a file name or a list of file names")
    parents = []
    merged: dict[str, Any] = {}
    for i, inc in enumerate(includes):
        inc_path = (p.parent / inc).resolve()
        if not inc_path.is_file():
            raise own.error(("include", i), f"included file {inc!r} not found (paths are relative to {shown})")
        at: PathKey = ("include",) if single else ("include", i)
        parent = load_located(inc_path, (*_seen, p), files, (*own.where(at), key_path(at)))
        parents.append(parent)
        merged = _merge(merged, parent.data)
    merged = _merge(merged, {k: v for k, v in data.items() if k != "include"})
    return Located(merged, shown, lines, parents)


EMBEDDED = "embedded"
SUFFIXES = (".yaml", ".yml")
_HERE = Path(__file__).resolve().parent  # b2s_bench/suites: the embedded default lives here
_PACKAGE = _HERE.parent
_LISTED = 1000  # files of a folder looked at for "did you mean" (a huge folder must not stall an error)


def _folders() -> list[Path]:
    folders = [_HERE]
    # find_spec of a top-level name looks the package up without importing (running) anything
    spec = importlib.util.find_spec("b2s_bench_suites")
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    if (_PACKAGE.parent / "pyproject.toml").is_file():  # a checkout, not site-packages (whose suites/ is anyone's)
        folders.append(_PACKAGE.parent / "suites")
    folders.append(Path.cwd() / "suites")
    return folders


def shipped_suites() -> dict[str, Path]:
    """The suites shipped with b2s-bench by name (the file's stem), in the order of the module docstring."""
    found: dict[str, Path] = {}
    for folder in _folders():
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix in SUFFIXES and path.is_file():
                    found.setdefault(path.stem, path)
    return found


def _near_files(arg: str) -> list[str]:
    path = Path(arg)
    try:
        files = {p.stem: p.name for _, p in zip(range(_LISTED), path.parent.iterdir()) if p.suffix in SUFFIXES}
    except OSError:
        return []
    return [str(path.parent / files[stem]) for stem in suggest(path.stem, files)]  # stems: ".yaml" is no likeness


def resolve_suite_path(suite: str | None) -> str:
    """A suite argument -> a file: a path, or the name of a shipped suite (None: the embedded one).

    Raises:
        SuiteError: neither a file nor a shipped suite, with near file and suite names.
    """
    if suite is None or suite == EMBEDDED:
        return str(_PACKAGE / "suites" / f"{EMBEDDED}.yaml")
    if os.path.exists(suite):
        return suite
    shipped = shipped_suites()
    stem = Path(suite).stem if Path(suite).suffix in SUFFIXES and os.sep not in suite else suite
    if stem in shipped:  # `families` or `families.yaml`
        return str(shipped[stem])
    near = _near_files(suite) + suggest(stem, shipped)
    hint = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
    raise SuiteError(
        f"no such suite file or shipped suite; {hint}Give a path to a .yaml suite or the name of a shipped "
        f"suite ({', '.join(shipped)}; `b2s-bench ls suites` describes them)",
        suite,
    )
