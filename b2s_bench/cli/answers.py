"""Answers of ``ls`` and ``show`` kept per set of installed plugins, so that asking again imports no plugin.

Loading the plugins imports torch and every plugin module (about 1.5 s on 2 cores), and ``ls
compressors`` or ``show quantize`` only prints what those modules declare. The first answer is kept in
the cache (``$B2S_BENCH_CACHE/answers/``) under a key of everything it can depend on:

- the command line (``--plugin`` files by their content, ``--disable``) and ``$B2S_BENCH_PLUGINS`` and
  ``$B2S_BENCH_DISABLE``;
- b2s-bench's version and Python's;
- every ``b2s_bench`` entry point (name, target, distribution and version);
- the size and modification time of every ``.py`` file of b2s-bench and of each plugin's package (an
  edited plugin or an editable install's change is seen at once);
- the modification time of every folder on ``sys.path`` (installing or removing any package, such as a
  plugin's optional dependency, changes it).

Only answers that depend on nothing else are kept: ``ls compressors|tasks|metrics|reporters|executors|plugins``
and ``show`` of a compressor, metric, reporter or executor; not ``ls models|datasets|suites`` or ``show``
of a model or dataset, which say what this machine has (data found, weights cached). An answer is kept
only when the command succeeded and printed nothing on stderr. ``B2S_BENCH_ANSWERS=0`` turns this off.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..plugins import DISABLE_ENV, GROUP, PLUGINS_ENV
from ..sources import cache_dir

__all__ = ["LS_KINDS", "wanted", "answer_key", "read_answer", "Recorder", "SWITCH_ENV"]

#: the ``ls`` kinds whose answer depends on the installed plugins only
LS_KINDS = ("compressors", "tasks", "metrics", "reporters", "executors", "plugins")
SWITCH_ENV = "B2S_BENCH_ANSWERS"


def wanted(rest: Sequence[str]) -> bool:
    """Whether the command (after the global options) may be answered from the cache."""
    if os.environ.get(SWITCH_ENV, "1") == "0" or any(a in ("-h", "--help") for a in rest):
        return False
    if len(rest) >= 2 and rest[0] == "ls":
        return rest[1] in LS_KINDS
    return len(rest) == 2 and rest[0] == "show" and ":" not in rest[1]  # SOURCE:NAME is a model


def _digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _py_files(root: Path) -> list[Any]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                found.append([os.path.relpath(os.path.join(folder, name), root), st.st_size, st.st_mtime_ns])
    return found


def _code(top: str) -> list[Any]:
    """Where the top-level module ``top`` lives and the state of its ``.py`` files (nothing is imported)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return [top, "not found"]
    if spec is None:
        return [top, "not found"]
    if spec.submodule_search_locations:
        return [top, *[[str(p), _py_files(Path(p))] for p in spec.submodule_search_locations]]
    origin = spec.origin or ""
    try:
        st = os.stat(origin)
        return [top, origin, st.st_size, st.st_mtime_ns]
    except OSError:
        return [top, origin]


def _folders() -> list[Any]:
    state = []
    for entry in sys.path:
        try:
            state.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            state.append([entry, None])
    return state


def answer_key(rest: Sequence[str], files: Sequence[str], disable: Sequence[str]) -> str:
    """The key of a command's answer: everything the answer can depend on (see the module docstring)."""
    env_files = [f for f in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if f]
    points = sorted(
        [ep.name, ep.value, ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else ""]
        for ep in md.entry_points(group=GROUP)
    )
    tops = sorted({"b2s_bench", *(p[1].split(":")[0].split(".")[0] for p in points)})
    state = {
        "argv": list(rest),
        "files": [[f, _digest(f)] for f in [*env_files, *files]],
        "disable": [os.environ.get(DISABLE_ENV, ""), *disable],
        "versions": [__version__, sys.version, sys.executable],
        "entry_points": points,
        "code": [_code(top) for top in tops],
        "sys_path": _folders(),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path(key: str) -> Path:
    return cache_dir() / "answers" / f"{key}.txt"


def read_answer(key: str) -> str | None:
    try:
        return _path(key).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


class _Tee:
    def __init__(self, stream: TextIO, copy: list[str] | None) -> None:
        self.stream, self.copy, self.used = stream, copy, False

    def write(self, text: str) -> int:
        self.used = self.used or bool(text)
        if self.copy is not None:
            self.copy.append(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class Recorder:
    """Records what a command prints, and keeps it as the answer if the command qualifies."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.text: list[str] = []
        self.out, self.err = sys.stdout, sys.stderr

    def __enter__(self) -> Recorder:
        self._stdout, self._stderr = _Tee(self.out, self.text), _Tee(self.err, None)
        sys.stdout, sys.stderr = self._stdout, self._stderr
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stdout, sys.stderr = self.out, self.err

    def keep(self, code: int, cacheable: bool) -> None:
        """Keep the answer when the command succeeded, said nothing on stderr and says it may be kept."""
        if code != 0 or not cacheable or self._stderr.used:
            return
        path = _path(self.key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(self.text))
            os.replace(tmp, path)
        except OSError:  # a read-only cache costs speed, never the answer
            pass
