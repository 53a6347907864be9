"""The command line: ls, validate, --version, python -m."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("compressors", "quantization"),
        ("models", "tiny:cnn"),
        ("datasets", "fashion-mnist"),
        ("metrics", "agreement"),
        ("plugins", "b2s-quantize"),
        ("reporters", "pareto"),
        ("executors", "process (default)"),
    ],
)
def test_ls(kind: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("ls", kind) == 0
    assert expect in capsys.readouterr().out


def test_ls_models_wildcard(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("ls", "models", "timm:*efficientnet_lite*") == 0
    out = capsys.readouterr().out
    assert "timm:tf_efficientnet_lite0" in out and "timm:resnet18" not in out


def test_validate_lists_cells_and_needs(tiny_suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("validate", str(tiny_suite)) == 0
    out = capsys.readouterr().out
    assert "4 cells on cpu" in out and "quantize(bits=4)" in out and "data:random" in out and "ready" in out


def test_python_dash_m_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "b2s_bench", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("b2s-bench ")


@pytest.fixture
def clean_commit(monkeypatch: pytest.MonkeyPatch) -> str:
    """Records made by a clean commit (the tests run from a working tree that may have edits)."""
    from b2s_bench.store import records

    monkeypatch.setattr(records, "_git_commit", lambda: "0123abcd")
    return "0123abcd"


def test_publish_copies_records_rebuilds_tables_and_says_what_made_them(
    tiny_suite: Path, tmp_path: Path, clean_commit: str
) -> None:
    run_dir, dest = tmp_path / "run", tmp_path / "published"
    assert run_cli("run", str(tiny_suite), "--out", str(run_dir), "--quiet") == 0
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["command"] == f"b2s-bench run {tiny_suite} --out {run_dir} --quiet"
    assert manifest["wall_seconds"] > 0 and manifest["peak_rss_mb"] > 0
    assert run_cli("publish", str(run_dir), "--to", str(dest)) == 0
    assert sorted(p.name for p in (dest / "cells").iterdir()) == sorted(p.name for p in (run_dir / "cells").iterdir())
    assert not (dest / "artifacts").exists()  # artifacts stay behind
    assert (dest / "leaderboard.md").read_text() == (run_dir / "leaderboard.md").read_text()
    text = (dest / "README.md").read_text()
    assert f"`b2s-bench run {tiny_suite} --out {run_dir} --quiet`" in text and "4 recorded (4 ok, 0 failed)" in text
    assert "Code (git commit): 0123abcd" in text
    assert run_cli("report", str(dest), "--format", "md") == 0  # the published folder rebuilds on its own


def test_publish_never_deletes(tiny_suite: Path, tmp_path: Path, clean_commit: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, dest = tmp_path / "run", tmp_path / "published"
    assert run_cli("run", str(tiny_suite), "--out", str(run_dir), "--quiet") == 0
    (dest / "cells").mkdir(parents=True)
    other = dest / "cells" / "0000000000000000.json"
    other.write_text("{}")  # a record of an earlier publish
    assert run_cli("publish", str(run_dir), "--to", str(dest)) == 2  # refused, nothing changed
    assert "already holds a published run" in capsys.readouterr().err
    assert [p.name for p in (dest / "cells").iterdir()] == [other.name]
    assert run_cli("publish", str(run_dir), "--to", str(dest), "--merge") == 0
    assert other.is_file() and len(list((dest / "cells").iterdir())) == 5  # added, the other kept
    assert run_cli("publish", str(run_dir), "--to", str(dest), "--replace") == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("published.replaced-")]
    assert len(aside) == 1 and (aside[0] / "cells" / other.name).is_file()  # moved aside, not deleted
    assert len(list((dest / "cells").iterdir())) == 4
    # what was moved aside is kept, but the site index and the results table list only the live run
    index = (tmp_path / "index.html").read_text()
    assert "published/leaderboard" in index and ".replaced-" not in index
    capsys.readouterr()
    assert run_cli("results", str(tmp_path)) == 0
    table = capsys.readouterr().out
    assert "`published`" in table and ".replaced-" not in table


def test_publish_refuses_records_of_uncommitted_code(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from b2s_bench.store import records

    monkeypatch.setattr(records, "_git_commit", lambda: "0123abcd-dirty")
    run_dir = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(run_dir), "--quiet") == 0
    assert run_cli("publish", str(run_dir), "--to", str(tmp_path / "p")) == 2
    assert "one clean commit" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert run_cli("publish", str(run_dir), "--to", str(tmp_path / "p"), "--allow-dirty") == 0


def test_publish_refuses_records_made_with_a_local_plugin_file(
    tiny_suite: Path, tmp_path: Path, clean_commit: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run made with `--plugin FILE.py` ran code that no commit holds (its records say "local file"), yet publish
    took them as one clean commit's. Now they are refused like uncommitted code, and with --allow-dirty the README
    names the file."""
    plugin = tmp_path / "extra.py"
    plugin.write_text("import b2s_bench as b2s\n\n@b2s.hookimpl\ndef b2s_register_compressors(register):\n    pass\n")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    run_dir = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(run_dir), "--quiet") == 0
    capsys.readouterr()
    assert run_cli("publish", str(run_dir), "--to", str(tmp_path / "p")) == 2
    err = capsys.readouterr().err
    assert "one clean commit" in err and "4 records were made with local plugin files outside git (extra)" in err
    assert not (tmp_path / "p").exists()
    assert run_cli("publish", str(run_dir), "--to", str(tmp_path / "p"), "--allow-dirty") == 0
    assert "- Local plugin files (outside git): extra" in (tmp_path / "p" / "README.md").read_text()


def test_the_published_readme_counts_every_status() -> None:
    """results/embedded's README said "18 recorded (17 ok, 0 failed)": the not-applicable cell was in no count."""
    from b2s_bench.cli.publish import readme

    records = [
        {"status": "ok"},
        {"status": "ok"},
        {"status": "not-applicable"},
        {"status": "short-of-target"},
        {"status": "error"},
    ]
    text = readme({"suite": "s", "file": "s.yaml"}, records, 0)
    assert "- Cells: 5 recorded (2 ok, 1 not-applicable, 1 short-of-target, 1 failed)" in text
    assert "- Cells: 2 recorded (2 ok, 0 failed)" in readme({"suite": "s", "file": "s.yaml"}, records[:2], 0)


def test_publish_refuses_an_unfinished_run(
    tiny_suite: Path, tmp_path: Path, clean_commit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(run_dir), "--quiet", "-k", "bits=8") == 0
    assert run_cli("publish", str(run_dir), "--to", str(tmp_path / "p")) == 2
    assert "have no record yet" in capsys.readouterr().err
    assert run_cli("publish", str(run_dir), "--to", str(tmp_path / "p"), "--allow-incomplete") == 0
    assert "without a record yet" in (tmp_path / "p" / "README.md").read_text()


def test_the_top_level_help_imports_neither_torch_nor_a_plugin() -> None:
    code = (
        "import sys\nimport b2s_bench.cli.main as m\ntry:\n    m.main(['--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0\nprint(sorted(n for n in ('torch', 'timm', 'b2s_bench_plugins') if n in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "validate" in done.stdout  # the command list is there
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _cli_in_a_fresh_process(*argv: str) -> tuple[str, list[str]]:
    """(what the command printed, which of torch and the plugin package it imported)."""
    code = (
        "import sys\nimport b2s_bench.cli.main as m\nrc = m.main(sys.argv[1:])\n"
        "print('LOADED', sorted(n for n in ('torch', 'b2s_bench_plugins') if n in sys.modules))\nsys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out, _, loaded = done.stdout.rpartition("LOADED ")
    return out, eval(loaded)


def test_ls_and_show_answer_again_without_importing_a_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path / "cache"))
    for argv in (("ls", "compressors"), ("show", "quantize")):
        first, loaded = _cli_in_a_fresh_process(*argv)
        assert loaded == ["b2s_bench_plugins"]  # the plugins register without importing torch (b2s.lazy)
        again, loaded = _cli_in_a_fresh_process(*argv)
        assert (again, loaded) == (first, [])
    # what this machine has is never answered from the cache
    _cli_in_a_fresh_process("show", "fashion-mnist")
    assert _cli_in_a_fresh_process("show", "fashion-mnist")[1] == ["b2s_bench_plugins"]


def test_an_edited_plugin_file_or_a_failed_command_is_never_answered_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path / "cache"))
    plugin = tmp_path / "mine.py"
    body = (
        "import b2s_bench as b2s\nfrom b2s_bench_plugins.compressors.quantize import SPEC\nimport dataclasses\n\n"
        "@b2s.hookimpl\ndef b2s_register_compressors(register):\n"
        "    register(dataclasses.replace(SPEC, name='{name}', description='{name} here'))\n"
    )
    plugin.write_text(body.format(name="first-name"))
    assert "first-name here" in _cli_in_a_fresh_process("--plugin", str(plugin), "ls", "compressors")[0]
    plugin.write_text(body.format(name="second-name"))
    out, loaded = _cli_in_a_fresh_process("--plugin", str(plugin), "ls", "compressors")
    assert "second-name here" in out and "first-name" not in out and loaded
    assert run_cli("show", "no-such-thing") == 2
    assert not any("no-such" in p.read_text() for p in (tmp_path / "cache" / "answers").glob("*.txt"))


def test_status_does_not_call_a_killed_runs_cells_running(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed with SIGKILL leaves its claims behind: status showed them "running" with the dead pid for as
    long as nobody resumed. A claim whose process is gone on this host, or whose heartbeat (another host's) stopped
    past the claim timeout, is pending, said interrupted; a live one stays running."""
    import os
    import time

    from b2s_bench.store.folder import RunStore, _host

    out = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    dead, away, live = sorted(p.stem for p in (out / "cells").glob("*.json"))[:3]
    for cid in (dead, away, live):
        (out / "cells" / f"{cid}.json").unlink()
    claims = out / "claims"
    claims.mkdir(exist_ok=True)
    (claims / f"{dead}.json").write_text(json.dumps({"host": _host(), "pid": 2**22 + 12345, "run": "x", "started": "t"}))
    (claims / f"{away}.json").write_text(json.dumps({"host": "elsewhere", "pid": 7, "run": "y", "started": "t"}))
    old = time.time() - 3600
    os.utime(claims / f"{away}.json", (old, old))
    assert RunStore(out)._create_claim(claims / f"{live}.json")  # this process: alive
    capsys.readouterr()
    assert run_cli("status", str(out)) == 0
    text = capsys.readouterr().out
    assert "4 cells: 1 done, 1 running, 0 failed, 2 pending" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| running " in rows[live]
    assert "| pending " in rows[dead] and f"interrupted: {_host()} pid {2**22 + 12345} is gone" in rows[dead]
    assert "| pending " in rows[away] and "interrupted: elsewhere pid 7, no heartbeat for 1h00m" in rows[away]


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_cell_timeout_the_suite_would_refuse_is_refused_on_the_command_line(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """runtime.cell_timeout: -1 is exit 2, but --cell-timeout -1 silently ran without a limit (and nan the same)."""
    out = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet", "--cell-timeout", value) == 2
    err = capsys.readouterr().err
    assert f"--cell-timeout must be a number of seconds >= 0 (0: no limit), got {value!r}" in err
    assert not (out / "cells").exists()


@pytest.mark.parametrize("command", ["status", "publish"])
def test_a_file_given_as_a_run_folder_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """`status some_file.py` said its run.json "is set aside in some_file.py/set-aside" (nothing was, nothing could
    be) and to rerun the suite into it: the file is simply not a run folder."""
    path = tmp_path / "plugin.py"
    path.write_text("x = 1\n")
    assert run_cli(command, str(path)) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a run folder (a file, not a folder)" in err and "set aside" not in err
    assert path.read_text() == "x = 1\n"


def test_validate_k_that_matches_nothing_is_the_error_run_gives(tiny_suite: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run -k zzz` is exit 2 (matches none of the cells), but `validate -k zzz` printed an empty table and exit 0:
    the command meant to check a selection before a run said it was fine."""
    assert run_cli("validate", str(tiny_suite), "-k", "zzz") == 2
    assert "-k 'zzz' matches none of the cells of suite tiny" in capsys.readouterr().err
    assert run_cli("validate", str(tiny_suite), "-k", "bits=4") == 0


@pytest.mark.parametrize("command", [["ls", "compressors"], ["show", "quantize"]])
def test_a_plugin_file_that_fails_to_load_is_said_by_ls_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """`b2s-bench --plugin mine.py ls compressors` with a typo in the path, or a syntax error in the file, listed the
    built-ins and exit 0 without a word: the user's own compressor was silently missing."""
    bad = tmp_path / "mine.py"
    bad.write_text("def broken(:\n")
    assert run_cli("--plugin", str(bad), *command) == 0
    assert f"warning: plugin 'mine' (local file -): {bad} failed to load: SyntaxError" in capsys.readouterr().err
    assert run_cli("--plugin", str(tmp_path / "typo.py"), *command) == 0
    assert "typo.py' does not exist" in capsys.readouterr().err
