"""Faults of the file system: a full disk, a read-only folder, files publish did not write, unreadable
files in a run folder, and the umask of what is written.

A real full tmpfs needs root to mount, so a full disk is an ``OSError(ENOSPC)`` injected where a
writer makes its temporary file; a read-only folder is ``OSError(EROFS)`` the same way, and chmod
0o555 where the tests do not run as root (root writes anywhere).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from b2s_bench.cli import exits
from b2s_bench.errors import CannotWrite
from b2s_bench.store import records
from b2s_bench.store.folder import RunStore
from b2s_bench.store.records import write_atomic

# two cells (the baseline and one quantizer), one small table: a run takes a few seconds
SMALL_SUITE = """\
suite: small
seed: 0
models:
  - name: tiny:cnn
dataset: {name: random, n: 16}
compressors:
  - name: quantize
    grid: {bits: [8]}
metrics: [top1, bits, ratio]
report: {formats: [markdown], plots: []}
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(suite file, run folder) of the small suite, run once for the module; tests copy the folder."""
    root = tmp_path_factory.mktemp("finished")
    suite = root / "small.yaml"
    suite.write_text(SMALL_SUITE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("B2S_BENCH_CACHE", str(root / "cache"))
        mp.setenv("B2S_BENCH_EXECUTOR", "inline")
        mp.setattr(records, "_git_commit", lambda: "0123abcd")  # publish wants records of one clean commit
        assert run_cli("run", str(suite), "--out", str(root / "run"), "--quiet", "--no-progress") == 0
    yield suite, root / "run"


@pytest.fixture
def run_dir(finished_run: tuple[Path, Path], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run[1], out)
    return out


@pytest.fixture
def small_suite(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SUITE)
    return path


def fail_writes(monkeypatch: pytest.MonkeyPatch, code: int, under: str | None = None, what: str = "mkstemp") -> None:
    """Make ``tempfile.mkstemp`` (or ``mkdtemp``) fail with ``code`` in folders named ``under`` (all when None)."""
    real = getattr(tempfile, what)

    def failing(*args: Any, **kwargs: Any) -> Any:
        folder = Path(kwargs.get("dir") or ".")
        if under is None or folder.name == under:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, what, failing)


def leftovers(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name.endswith(".tmp") or p.parent.name == "claims")


# -- 3. a full disk or a read-only folder ----------------------------------------------------------------


def test_a_full_disk_while_writing_records_stops_the_run_marks_no_cell_failed_and_leaves_no_claim(
    small_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    real = tempfile.mkstemp
    fail_writes(monkeypatch, errno.ENOSPC, under="cells")
    assert run_cli("run", str(small_suite), "--out", str(out), "--quiet", "--no-progress") == exits.CANNOT_WRITE
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert f"could not write {out / 'cells'}" in line and f"{out / 'cells'} is full" in line and "needed" in line
    assert "FAILED" not in err and "Traceback" not in err
    assert list((out / "cells").iterdir()) == [] and leftovers(out) == []  # no record, no claim, no temporary file
    assert run_cli("status", str(out)) == 0
    assert "2 cells: 0 done, 0 running, 0 failed, 2 pending" in capsys.readouterr().out
    monkeypatch.setattr(tempfile, "mkstemp", real)  # space again: the same command computes the pending cells
    assert run_cli("run", str(small_suite), "--out", str(out), "--quiet", "--no-progress") == exits.OK


def test_a_full_disk_while_saving_an_artifact_is_not_the_cells_error(
    small_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    fail_writes(monkeypatch, errno.ENOSPC, under="artifacts", what="mkdtemp")
    assert run_cli("run", str(small_suite), "--out", str(out), "--quiet", "--no-progress") == exits.CANNOT_WRITE
    err = capsys.readouterr().err
    assert f"{out / 'artifacts'} is full" in err and "FAILED" not in err
    assert list((out / "cells").glob("*.json")) == [] and leftovers(out) == []


FULL_PLUGIN = """
import dataclasses, errno, os
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

def spill(model, config, ctx):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "SCRATCH/spill.bin")

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("spill", "other", "data-free", Cfg, spill))
"""


def test_a_full_disk_in_a_plugins_own_file_is_not_the_cells_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "spill.py"
    (tmp_path / "scratch").mkdir()
    plugin.write_text(FULL_PLUGIN.replace("SCRATCH", str(tmp_path / "scratch")))
    suite = tmp_path / "spill.yaml"
    suite.write_text(SMALL_SUITE.replace("name: quantize\n    grid: {bits: [8]}", "name: spill"))
    out = tmp_path / "run"
    assert (
        run_cli("--plugin", str(plugin), "run", str(suite), "--out", str(out), "--quiet", "--no-progress", "-k", "spill")
        == exits.CANNOT_WRITE
    )
    err = capsys.readouterr().err
    assert f"could not write {tmp_path}/scratch/spill.bin: {tmp_path}/scratch is full" in err and "FAILED" not in err
    assert list((out / "cells").glob("*.json")) == [] and leftovers(out) == []


def test_a_claim_that_cannot_be_written_is_not_left_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path / "run")
    store.prepare()
    real = os.fdopen

    def full(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real(fd, *args, **kwargs)
        f.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", full)
    with pytest.raises(CannotWrite, match="is full"):
        store.claim("0123456789abcdef")
    assert list(store.claims.iterdir()) == []


def test_an_empty_claim_left_by_a_dead_writer_is_taken_over_after_a_few_beats(tmp_path: Path) -> None:
    warnings: list[str] = []
    store = RunStore(tmp_path / "run", warn=warnings.append)
    store.prepare()
    empty = store.claims / "0123456789abcdef.json"
    empty.write_text("")  # what a full disk left behind before this was fixed: the run then waited forever
    assert not store.claim("0123456789abcdef")  # fresh: its writer may be writing it right now
    assert store.active_claims() == {}  # not shown as running
    old = empty.stat().st_mtime - 60
    os.utime(empty, (old, old))
    assert store.claim("0123456789abcdef")
    assert json.loads(empty.read_text())["run"] == store.run_id
    assert "from an unreadable claim (JSONDecodeError" in warnings[0]


@pytest.mark.parametrize("command", ["report", "compare", "publish"])
def test_a_read_only_folder_is_exit_4_naming_it(
    command: str, run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(records, "_git_commit", lambda: "0123abcd")
    args = {
        "report": [str(run_dir)],
        "compare": [str(run_dir), str(run_dir), "--out", str(tmp_path / "cmp")],
        "publish": [str(run_dir), "--to", str(tmp_path / "pub")],
    }[command]
    fail_writes(monkeypatch, errno.EROFS)
    if command != "report":  # the destination folder cannot even be made
        monkeypatch.setattr(Path, "mkdir", _read_only_mkdir(Path.mkdir))
    assert run_cli(command, *args) == exits.CANNOT_WRITE
    err = capsys.readouterr().err
    assert "is on a read-only file system" in err and "Traceback" not in err


def _read_only_mkdir(real: Any) -> Any:
    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if not self.exists():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *args, **kwargs)

    return mkdir


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_a_chmod_read_only_run_folder_is_exit_4(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir.chmod(0o555)
    try:
        assert run_cli("report", str(run_dir)) == exits.CANNOT_WRITE
    finally:
        run_dir.chmod(0o755)
    assert f"{run_dir} is not writable by this user" in capsys.readouterr().err


# -- 4. publish never overwrites a file it did not write --------------------------------------------------


@pytest.fixture
def publish_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "_git_commit", lambda: "0123abcd")


@pytest.mark.usefixtures("publish_env")
def test_publish_moves_aside_an_index_and_a_readme_it_did_not_write(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("my own page")
    dest = site / "small"
    assert run_cli("publish", str(run_dir), "--to", str(dest)) == 0
    aside = list(site.glob("index.html.replaced-*"))
    assert len(aside) == 1 and aside[0].read_text() == "my own page"
    assert "b2s-bench results" in (site / "index.html").read_text()
    assert "index.html" in json.loads((site / ".b2s-published.json").read_text())["files"]
    (dest / "README.md").write_text("edited by hand")
    assert run_cli("publish", str(run_dir), "--to", str(dest), "--merge") == 0
    assert "moved" in capsys.readouterr().err
    assert [p.read_text() for p in dest.glob("README.md.replaced-*")] == ["edited by hand"]
    assert "published results" in (dest / "README.md").read_text()
    assert len(list(site.glob("index.html.replaced-*"))) == 1  # its own index is replaced, not moved again
    published = json.loads((dest / ".b2s-published.json").read_text())["files"]
    assert {"README.md", "leaderboard.md", "run.json"} <= set(published)
    assert all(hashlib.sha256((dest / rel).read_bytes()).hexdigest() == digest for rel, digest in published.items())


@pytest.mark.usefixtures("publish_env")
def test_publish_to_a_file_is_a_clean_refusal(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert run_cli("publish", str(run_dir), "--to", str(target)) == exits.USAGE
    assert "is a file, not a folder" in capsys.readouterr().err and target.read_text() == "keep me"
    assert run_cli("publish", str(run_dir), "--to", str(target / "sub")) == exits.USAGE
    assert "a file is in the way" in capsys.readouterr().err and target.read_text() == "keep me"


@pytest.mark.usefixtures("publish_env")
def test_publish_replace_when_the_aside_name_is_taken(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from b2s_bench.cli import publish

    monkeypatch.setattr(publish, "_stamp", lambda: "20260101T000000")
    dest = tmp_path / "pub"
    assert run_cli("publish", str(run_dir), "--to", str(dest)) == 0
    taken = tmp_path / "pub.replaced-20260101T000000"
    taken.mkdir()
    (taken / "kept").write_text("an earlier replace")
    assert run_cli("publish", str(run_dir), "--to", str(dest), "--replace") == 0
    assert (taken / "kept").read_text() == "an earlier replace"
    assert (tmp_path / "pub.replaced-20260101T000000-2" / "README.md").is_file() and (dest / "README.md").is_file()


# -- 6. unreadable files in a run folder --------------------------------------------------------------------


def test_a_record_nested_200000_deep_is_named_set_aside_and_recomputed(
    finished_run: tuple[Path, Path], run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = json.loads((run_dir / "run.json").read_text())["cells"][0]
    bad = run_dir / "cells" / f"{cid}.json"
    bad.write_text("[" * 200_000 + "]" * 200_000)
    assert run_cli("status", str(run_dir), "--all") == 0
    assert "RecursionError" in capsys.readouterr().out  # named, pending
    assert run_cli("report", str(run_dir)) == 0
    assert f"warning: {bad} is not a valid record" in capsys.readouterr().err
    assert run_cli("run", str(finished_run[0]), "--out", str(run_dir), "--quiet", "--no-progress") == 0
    err = capsys.readouterr().err
    assert f"set aside {bad} (unreadable: RecursionError" in err and "1 computed" in err
    assert json.loads(bad.read_text())["status"] == "ok"
    assert len(list((run_dir / "set-aside").glob(f"{cid}.*.json"))) == 1


def test_a_truncated_run_json_is_named_set_aside_and_rebuilt(
    finished_run: tuple[Path, Path], run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = run_dir / "run.json"
    manifest.write_text(manifest.read_text()[:40])
    assert run_cli("status", str(run_dir)) == exits.USAGE
    err = capsys.readouterr().err
    assert f"{manifest} could not be read (unreadable: JSONDecodeError" in err and "no run.json" not in err
    assert not manifest.exists() and len(list((run_dir / "set-aside").glob("run.*.json"))) == 1
    manifest.write_text('{"suite": "sm')
    assert run_cli("publish", str(run_dir), "--to", str(run_dir.parent / "pub")) == exits.USAGE
    assert f"{manifest} could not be read (unreadable: JSONDecodeError" in capsys.readouterr().err
    assert not (run_dir.parent / "pub").exists()
    manifest.write_text("[" * 200_000)
    assert run_cli("report", str(run_dir)) == 0  # made of every record; the bad file is set aside, named
    assert f"set aside {manifest} (unreadable: RecursionError" in capsys.readouterr().err
    assert run_cli("run", str(finished_run[0]), "--out", str(run_dir), "--quiet", "--no-progress") == 0
    assert json.loads(manifest.read_text())["suite"] == "small"  # rebuilt; the records were reused
    assert "0 computed, 2 skipped" in capsys.readouterr().err


# -- 8. the umask -----------------------------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[Any]:
    before = os.umask(0o022)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize(("mask", "mode"), [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_atomic_files_and_claims_respect_the_umask(umask: Any, tmp_path: Path, mask: int, mode: int) -> None:
    umask(mask)
    write_atomic(tmp_path / "a.json", "{}")
    store = RunStore(tmp_path / "run")
    assert store.claim("0123456789abcdef")
    for path in (tmp_path / "a.json", store.claims / "0123456789abcdef.json"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_runs_records_reports_and_artifacts_respect_the_umask(small_suite: Path, tmp_path: Path, umask: Any) -> None:
    umask(0o002)
    out = tmp_path / "run"
    assert run_cli("run", str(small_suite), "--out", str(out), "--quiet", "--no-progress") == 0
    files = [*out.glob("cells/*.json"), out / "run.json", out / "leaderboard.md"]
    assert files and {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o664)}
    folders = [p for p in (out / "artifacts").iterdir()]
    assert folders and {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {oct(0o775)}
