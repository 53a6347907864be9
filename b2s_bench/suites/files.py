"""Where suite files come from: a path, or the name of a suite shipped with b2s-bench.

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
from pathlib import Path

from ..errors import SuiteError, suggest

__all__ = ["EMBEDDED", "shipped_suites", "resolve_suite_path", "SUFFIXES"]

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
    raise SuiteError(f"no such suite file or shipped suite; {hint}Give a path to a .yaml suite or the name of a shipped "
                     f"suite ({', '.join(shipped)}; `b2s-bench ls suites` describes them)", suite)
