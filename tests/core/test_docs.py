"""The documentation stays true: links resolve, shown commands parse, and the examples load and run.

Checked files: README.md, docs/*.md, results/README.md and benchmarks/README.md. Commands are parsed
by the real parser (with the plugins' options), never executed.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "results" / "README.md",
    ROOT / "benchmarks" / "README.md",
]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")
EXTERNAL = ("http://", "https://", "mailto:")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = FENCE.sub("", md.read_text())  # a '# comment' in a code block is not a heading
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def _links(md: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", md.read_text()))


def _commands(md: Path) -> list[list[str]]:
    """Each `b2s-bench ...` command in md's fenced code blocks, as argv (without the program)."""
    found = []
    for _, block in FENCE.findall(md.read_text()):
        for line in block.splitlines():
            if "b2s-bench" not in line:
                continue
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as e:
                raise AssertionError(f"{_rel(md)}: cannot split the shell line {line!r}: {e}") from e
            argv: list[str] | None = None
            for tok in [*tokens, "&&"]:
                if tok in ("&&", "||", "|", ";"):
                    if argv is not None:
                        found.append(argv)
                    argv = None
                elif argv is not None:
                    argv.append(tok)
                elif Path(tok).name == "b2s-bench":
                    argv = []
    return found


def test_the_checked_files_exist_and_show_commands() -> None:
    missing = [_rel(p) for p in DOCS if not p.is_file()]
    assert not missing, f"documentation files are gone: {missing}; update DOCS in tests/core/test_docs.py"
    # the parse test below must have something to check (a regex that finds nothing proves nothing)
    assert sum(len(_commands(p)) for p in DOCS) >= 20


@pytest.mark.parametrize("md", DOCS, ids=_rel)
def test_every_relative_link_resolves(md: Path) -> None:
    problems = []
    for target in _links(md):
        if target.startswith(EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        if not dest.exists():
            problems.append(f"{target}: {dest} does not exist")
        elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
            problems.append(f"{target}: no heading with the anchor #{anchor} in {_rel(dest)}")
    assert not problems, f"{_rel(md)} has broken links:\n" + "\n".join(problems)


def test_the_link_checker_sees_links_and_anchors(tmp_path: Path) -> None:
    md = tmp_path / "a.md"
    md.write_text(
        "# Top\n## Comparing runs: a regression gate\n[x](a.md#comparing-runs-a-regression-gate) "
        "[`y`](b/c.md) [z](https://example.org)\n```sh\n[not](a link.md)\n```\n"
    )
    assert _links(md) == ["a.md#comparing-runs-a-regression-gate", "b/c.md", "https://example.org"]
    assert _anchors(md) == {"top", "comparing-runs-a-regression-gate"}


@pytest.fixture(scope="module")
def subparsers() -> dict[str, argparse.ArgumentParser]:
    from b2s_bench.cli.main import build_parser
    from b2s_bench.plugins import load_plugins

    parser = build_parser(load_plugins())
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **action.choices}


def _check(argv: list[str], parsers: dict[str, argparse.ArgumentParser]) -> str | None:
    """Why argv is not a command b2s-bench accepts, or None."""
    top = parsers[""]
    rest = list(argv)
    while rest and rest[0].startswith("-"):  # global options come before the subcommand
        token = rest.pop(0)
        flag = token.split("=", 1)[0]
        if flag not in top._option_string_actions:
            return f"unknown global option {flag}"
        if top._option_string_actions[flag].nargs != 0 and "=" not in token:
            if not rest:
                return f"{flag} needs a value"
            rest.pop(0)
    if not rest:
        return None if argv and argv[0] in ("--help", "-h", "--version") else "no subcommand"
    if rest[0] not in parsers:
        return f"unknown subcommand {rest[0]!r} (known: {sorted(k for k in parsers if k)})"
    sub = parsers[rest[0]]
    for tok in rest[1:]:
        if tok.startswith("-") and len(tok) > 1 and not re.fullmatch(r"-\d.*", tok):
            if tok.split("=", 1)[0] not in sub._option_string_actions:
                return f"{rest[0]} has no option {tok.split('=', 1)[0]}"
    try:  # values too: choices, arguments a flag needs, missing positionals
        sub.parse_args(rest[1:])
    except SystemExit:
        return f"`b2s-bench {rest[0]}` rejects these arguments (see its --help)"
    return None


@pytest.mark.parametrize("md", DOCS, ids=_rel)
def test_every_shown_command_parses(
    md: Path, subparsers: dict[str, argparse.ArgumentParser], capsys: pytest.CaptureFixture[str]
) -> None:
    problems = [f"b2s-bench {shlex.join(argv)}: {why}" for argv in _commands(md) if (why := _check(argv, subparsers)) is not None]
    capsys.readouterr()  # argparse's own usage errors; the list below says which command
    assert not problems, f"{_rel(md)} shows commands that do not parse:\n" + "\n".join(problems)


def test_the_command_checker_catches_mistakes(tmp_path: Path, subparsers: dict[str, argparse.ArgumentParser]) -> None:
    md = tmp_path / "a.md"
    md.write_text(
        "```sh\nsource x && .venv/bin/b2s-bench run  # all\n"
        "b2s-bench --plugin p.py ls compressors -v\nb2s-bench runn\nb2s-bench run --fast\n"
        "b2s-bench run --device gpu\nb2s-bench compare runs/a\n```\n"
    )
    commands = _commands(md)
    assert commands[:2] == [["run"], ["--plugin", "p.py", "ls", "compressors", "-v"]]
    whys = [_check(c, subparsers) for c in commands]
    assert whys[:2] == [None, None]
    assert "unknown subcommand 'runn'" in str(whys[2]) and "no option --fast" in str(whys[3])
    assert "rejects" in str(whys[4]) and "rejects" in str(whys[5])  # a bad choice; a missing NEW_DIR


def test_the_readme_suite_is_a_valid_suite(tmp_path: Path) -> None:
    from b2s_bench.plugins import load_plugins
    from b2s_bench.suites.load import load_suite

    blocks = [b for lang, b in FENCE.findall((ROOT / "README.md").read_text()) if lang.strip() == "yaml"]
    assert len(blocks) == 1, "README.md should show one suite"
    path = tmp_path / "my-first.yaml"
    path.write_text(blocks[0])
    suite = load_suite(path, load_plugins())
    assert suite.name == "my-first" and len(suite.models) == 2
    assert suite.grid_size() == 2 * (1 + 2 + 2 + 1)  # per model: dense, 2 bit widths, 2 sparsities, the pipeline


def test_the_plugin_example_of_writing_plugins_loads_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = [
        b
        for lang, b in FENCE.findall((ROOT / "docs" / "writing-plugins.md").read_text())
        if lang.strip() == "python" and "b2s_register_metrics" in b
    ]
    assert len(blocks) == 1
    (tmp_path / "my_plugin.py").write_text(blocks[0])
    (tmp_path / "tiny.yaml").write_text(
        "suite: tinydoc\nmodels: [{name: 'tiny:cnn'}]\ndataset: {name: random, n: 64}\n"
        "compressors: [{name: quantize, bits: 4}]\nmetrics: [top1, top1_error, bits]\n"
        "report: {formats: [markdown, top1_count]}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert run_cli("--plugin", "my_plugin.py", "run", "tiny.yaml", "--out", "run", "--no-progress", "--quiet") == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == 2  # the after-cell hook saw the dense cell and the quantized one
    assert (tmp_path / "run" / "top1_count.txt").read_text() == "2 records in tinydoc\n"
    assert "top1_error [%] ↓" in (tmp_path / "run" / "leaderboard.md").read_text()


def test_results_writes_and_checks_root_readme_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from b2s_bench.cli.results import END, START

    root = tmp_path / "pub"
    (root / "one").mkdir(parents=True)
    (root / "one" / "run.json").write_text('{"cells": [], "command": "b2s-bench run one", "description": "d"}')
    (root / "README.md").write_text(f"# Published\n\n{START}\n{END}\n\nkept\n")
    monkeypatch.chdir(tmp_path)
    assert run_cli("results", "pub", "--check") == 1  # an empty table is stale
    assert run_cli("results", "pub", "--write") == 0
    text = (root / "README.md").read_text()
    # the link is relative to pub/README.md, so it resolves from where the page is read
    assert "[`one`](one/leaderboard.md) | `b2s-bench run one`" in text and text.endswith("\n\nkept\n")
    assert run_cli("results", "pub", "--check") == 0
    # another file keeps working, with its links relative to that file
    (tmp_path / "other.md").write_text(f"{START}\n{END}\n")
    assert run_cli("results", "pub", "--write", "other.md") == 0
    assert "(pub/one/leaderboard.md)" in (tmp_path / "other.md").read_text()
    assert "pub/README.md's results table matches pub" in capsys.readouterr().out


def test_every_dotted_name_in_docstrings_and_docs_resolves() -> None:
    """``b2s_bench.x.y`` in the core's docstrings, the plugins and the docs names a module or an attribute
    that exists today, at its public home (a moved name would warn)."""
    import importlib
    import warnings

    files = [
        *(ROOT / "b2s_bench").rglob("*.py"),
        *(ROOT / "plugins").rglob("*.py"),
        *(ROOT / "docs").glob("*.md"),
        ROOT / "README.md",
    ]
    stale = []
    for path in files:
        for ref in set(re.findall(r"\bb2s_bench(?:\.[A-Za-z_]\w*)+", path.read_text())):
            if ref == "b2s_bench.id":  # a dataclass metadata key, not a name
                continue
            parts = ref.split(".")
            for k in range(len(parts), 0, -1):
                try:
                    obj: object = importlib.import_module(".".join(parts[:k]))
                    break
                except ImportError:
                    continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    for attr in parts[k:]:
                        obj = getattr(obj, attr)
            except (AttributeError, DeprecationWarning):
                stale.append(f"{path.relative_to(ROOT)}: {ref}")
    assert stale == []
