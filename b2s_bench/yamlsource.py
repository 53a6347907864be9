"""YAML loading that remembers where every key came from (file and line), for located errors.

Data is loaded with ``yaml.safe_load``; the same text is composed into nodes only to read the line
of each key path. ``include:`` files are merged underneath the including file (mappings merge
deeply, everything else is replaced), and each key path remembers its file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import SuiteError

__all__ = ["Located", "load_located", "key_path"]

PathKey = tuple[Any, ...]


def key_path(path: PathKey) -> str:
    """``("compressors", 1, "name")`` -> ``compressors[1].name``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _lines(node: yaml.Node, path: PathKey, out: dict[PathKey, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


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


def load_located(path: str | os.PathLike[str], _seen: tuple[Path, ...] = ()) -> Located:
    """Load a suite file and its includes.

    Raises:
        SuiteError: unreadable files, YAML syntax errors (with their line), include cycles.
    """
    p = Path(path).resolve()
    shown = _display(p)
    if p in _seen:
        raise SuiteError(f"include cycle: {' -> '.join(_display(s) for s in (*_seen, p))}", shown, None, "include")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SuiteError("no such suite file; give a path to a .yaml suite (see suites/)", shown) from None
    except OSError as e:
        raise SuiteError(f"cannot read the file: {e.strerror}", shown) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise SuiteError(f"invalid YAML: {problem}; check indentation and quoting", shown, line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SuiteError("a suite must be a YAML mapping of keys (suite:, models:, compressors:, ...)", shown, 1)
    lines: dict[PathKey, int] = {}
    if node is not None:
        _lines(node, (), lines)
    own = Located(data, shown, lines)
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise own.error(("include",), "include must be a file name or a list of file names")
    parents = []
    merged: dict[str, Any] = {}
    for i, inc in enumerate(includes):
        inc_path = (p.parent / inc).resolve()
        if not inc_path.is_file():
            raise own.error(("include", i), f"included file {inc!r} not found (paths are relative to {shown})")
        parent = load_located(inc_path, (*_seen, p))
        parents.append(parent)
        merged = _merge(merged, parent.data)
    merged = _merge(merged, {k: v for k, v in data.items() if k != "include"})
    return Located(merged, shown, lines, parents)
