"""The runner: isolation, resume after interruption, atomic records, exit codes, the record schema."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from b2s_bench.execution.prepare import prepare_run
from b2s_bench.execution.runner import Runner, RunOptions
from b2s_bench.plugins import load_plugins
from b2s_bench.store import records
from b2s_bench.suites.load import load_suite

TEST_PLUGIN = """
import dataclasses, time
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    seconds: float = 0.0

def boom(model, config, ctx):
    raise RuntimeError("this compressor always fails")

def sleepy(model, config, ctx):
    time.sleep(config.seconds)
    return b2s.Compressed.from_codes(model, {})

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("boom", "other", "data-free", Cfg, boom))
    # returns the model as it is: an identity (else its cells are not-applicable: they code nothing)
    register(b2s.CompressorSpec("sleepy", "other", "data-free", Cfg, sleepy, identity={}))
"""


@pytest.fixture
def test_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "testplugin.py"
    path.write_text(TEST_PLUGIN)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    return path


def cells(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}


def test_end_to_end_cli_writes_records_and_reports(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(out)) == 0
    recs = cells(out)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs.values())
    rec = next(r for r in recs.values() if r["label"] == "quantize(bits=4)")
    for key in (
        "cell_id",
        "suite",
        "label",
        "track",
        "family",
        "seed",
        "model",
        "dataset",
        "compressor",
        "metrics",
        "size",
        "timings",
        "details",
        "environment",
        "started_at",
        "finished_at",
    ):
        assert key in rec
    top1 = rec["metrics"]["top1"]
    assert {k: top1[k] for k in ("unit", "higher_is_better", "kind", "roles")} == {
        "unit": "%",
        "higher_is_better": True,
        "kind": "quality",
        "roles": ["default", "primary"],
    }
    assert rec["compressor"]["pipeline"][0]["config"]["bits"] == 4
    assert rec["compressor"]["pipeline"][0]["version"] == "4"
    # where the defaults come from, and which of them the cell changed (bits 4, not quantize's 8)
    stage = rec["compressor"]["pipeline"][0]
    assert stage["defaults_source"].startswith("ours: 8-bit per-channel")
    assert (stage["at_defaults"], stage["changed"], stage["budget"]) == (False, ["bits"], [])
    at_8 = next(r for r in recs.values() if r["label"] == "quantize(bits=8)")["compressor"]["pipeline"][0]
    assert (at_8["at_defaults"], at_8["changed"]) == (True, [])  # 8 bits is the default: written, not changed
    assert rec["track"] == "data-free"
    env = rec["environment"]
    assert env["device"] == "cpu" and env["torch"] and env["python"] and env["b2s_bench"] and "git_commit" in env
    size = rec["size"]
    assert size["total_bits"] == sum(size["breakdown"].values())
    assert size["ratio_model"] == pytest.approx(size["baseline_bits"] / size["total_bits"])
    assert size["disk_bytes"] > size["total_bits"] / 8  # the artifact exists and holds at least the counted bits
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "leaderboard.json", "pareto.png", "run.json"):
        assert (out / name).is_file(), name
    assert "quantize(bits=4)" in capsys.readouterr().out  # the leaderboard is printed


def test_second_run_computes_nothing(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    manifest = (out / "run.json").stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet", "--no-progress") == 0
    assert "0 computed, 4 skipped" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before
    # another command line that computes nothing keeps run.json (and its command), so reports stay current
    assert (out / "run.json").stat().st_mtime_ns == manifest
    assert json.loads((out / "run.json").read_text())["command"].endswith("--quiet")
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet", "-k", "bits=8", "--force") == 0
    assert "1 computed, 0 skipped" in capsys.readouterr().err
    # -k reruns a subset; the run folder still describes, and its leaderboard still shows, the whole suite
    assert len(json.loads((out / "run.json").read_text())["cells"]) == 4
    board = (out / "leaderboard.md").read_text()
    assert "prune(sparsity=0.5)" in board and "quantize(bits=4)" in board and "| dense" in board


def test_dense_outputs_are_computed_once_across_cells_runs_and_force(tiny_suite: Path, tmp_path: Path) -> None:
    cache = Path(os.environ["B2S_BENCH_CACHE"]) / "reference"
    assert run_cli("run", str(tiny_suite), "--out", str(tmp_path / "a"), "--quiet") == 0
    made = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert len(made) == 1  # one model, one dataset: one dense pass for the run's 4 cells
    assert run_cli("run", str(tiny_suite), "--out", str(tmp_path / "a"), "--quiet", "-k", "bits=8", "--force") == 0
    assert run_cli("run", str(tiny_suite), "--out", str(tmp_path / "b"), "--quiet") == 0  # another run folder
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")} == made


def test_a_failing_observer_hook_does_not_stop_the_suite(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    observer = tmp_path / "observer.py"
    observer.write_text(
        "import b2s_bench as b2s\n\n@b2s.hookimpl\ndef b2s_after_cell(record):\n    raise ValueError('observer broke')\n"
    )
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(observer))
    out = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    assert len(cells(out)) == 4 and all(r["status"] == "ok" for r in cells(out).values())
    assert "b2s_after_cell hook failed" in capsys.readouterr().err


def test_data_chosen_outside_the_suite_joins_the_cell_ids(
    write_suite: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from b2s_bench.suites.cells import expand

    plugins = load_plugins()
    env_suite = write_suite("""
        suite: inet
        models: [tiny:cnn]
        dataset: {name: imagenet}
        compressors: [{name: quantize, bits: 8}]
        metrics: [top1]
        """)
    fixed_suite = write_suite(
        f"""
        suite: inet
        models: [tiny:cnn]
        dataset: {{name: imagenet, root: {tmp_path / "fixed"}}}
        compressors: [{{name: quantize, bits: 8}}]
        metrics: [top1]
        """,
        "fixed.yaml",
    )

    def ids(path: Path) -> list[str]:
        return [c.id for c in expand(load_suite(path, plugins), plugins, "cpu")]

    monkeypatch.setenv("B2S_IMAGENET", str(tmp_path / "imagenette"))
    first, fixed_first = ids(env_suite), ids(fixed_suite)
    monkeypatch.setenv("B2S_IMAGENET", str(tmp_path / "imagenet"))
    assert ids(env_suite) != first  # other data: nothing is reused
    assert ids(fixed_suite) == fixed_first  # the suite's root wins over the variable, so nothing changed
    monkeypatch.setenv("B2S_IMAGENET_OVERRIDE", str(tmp_path / "other"))  # --data
    assert ids(fixed_suite) != fixed_first


def test_a_failing_cell_is_recorded_and_the_rest_go_on(
    write_suite: Callable[..., Path], test_plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite("""
        suite: failing
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors: [boom, sleepy]
        metrics: [agreement, bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1
    recs = {r["label"]: r for r in cells(out).values()}
    assert recs["boom"]["status"] == "error"
    assert recs["boom"]["error"]["type"] == "RuntimeError"
    assert "this compressor always fails" in recs["boom"]["error"]["traceback"]
    assert recs["sleepy"]["status"] == "ok" and recs["dense"]["status"] == "ok"
    assert "FAILED tiny:cnn boom" in capsys.readouterr().err
    board = (out / "leaderboard.md").read_text()
    assert "## Failed cells" in board and "RuntimeError: this compressor always fails" in board
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1  # failed cells are retried
    assert "1 computed, 2 skipped" in capsys.readouterr().err


def test_a_model_that_cannot_load_fails_its_cells_only(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite("""
        suite: two-models
        models:
          - tiny:cnn
          - {name: tiny:cnn, weights: missing.pt, label: broken}
        dataset: {name: random, n: 16}
        compressors: [quantize]
        metrics: [agreement]
        """)
    assert run_cli("validate", str(suite)) == 3  # a missing prerequisite
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 3  # checked first: nothing runs
    assert not (out / "cells").exists()
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--keep-going") == 0  # the ready cells run
    recs = list(cells(out).values())
    assert sorted((r["model"]["label"], r["status"]) for r in recs) == [("tiny:cnn", "ok"), ("tiny:cnn", "ok")]


def test_a_model_that_fails_to_build_fails_its_cells_only(write_suite: Callable[..., Path], tmp_path: Path) -> None:
    bad = tmp_path / "other.pt"
    # a real checkpoint, so validation passes (a file that is not one is a suite error), but of another model
    torch.save({"not_a_layer": torch.zeros(1)}, bad)
    suite = write_suite(f"""
        suite: two-models
        models:
          - tiny:cnn
          - {{name: tiny:cnn, weights: {bad}, label: broken}}
        dataset: {{name: random, n: 16}}
        compressors: [quantize]
        metrics: [agreement]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1
    recs = list(cells(out).values())
    assert sorted((r["model"]["label"], r["status"]) for r in recs) == [
        ("broken", "error"),
        ("broken", "error"),
        ("tiny:cnn", "ok"),
        ("tiny:cnn", "ok"),
    ]


SLOW_SUITE = """
suite: slow
models: [tiny:cnn]
dataset: {name: random, n: 8}
compressors:
  - name: sleepy
    grid: {seconds: [1.01, 1.02, 1.03, 1.04, 1.05, 1.06]}  # slow enough that a loaded machine still interrupts mid-run
metrics: [bits]
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_resumes_without_redoing_cells(
    write_suite: Callable[..., Path], test_plugin: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    suite = write_suite(SLOW_SUITE)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "b2s_bench", "run", str(suite), "--out", str(out), "--quiet"]
    # the child starts with Ctrl-C at its default: an ignored SIGINT is inherited across exec, and another
    # test in this xdist worker (a cluster engine started in-process) may have left it ignored
    proc = subprocess.Popen(
        cmd,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and b"run the same command again to resume" in err
    done = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    assert 3 <= len(done) < 7
    assert all(records.read_record(out / "cells" / name) for name in done)  # every record is complete
    rerun = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{7 - len(done)} computed, {len(done)} skipped" in rerun.stderr
    assert {n: t for n, t in ((p.name, p.stat().st_mtime_ns) for p in (out / "cells").glob("*.json")) if n in done} == done
    assert not [p for p in (out / "cells").iterdir() if p.suffix == ".tmp" and sig == signal.SIGINT]


def test_record_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fingerprint = {"cell": "abc"}
    rec = {
        "schema": records.SCHEMA,
        "cell_id": records.fingerprint_id(fingerprint),
        "status": "ok",
        "suite": "s",
        "label": "m",
        "track": "data-free",
        "family": "other",
        "seed": 0,
        "model": {},
        "dataset": None,
        "compressor": {},
        "metrics": {"x": {"value": float("nan")}},
        "size": {"total_bits": 8},
        "timings": {},
        "details": {},
        "environment": {},
        "error": None,
        "started_at": "",
        "finished_at": "",
        "fingerprint": fingerprint,
    }
    path = records.write_record(tmp_path, rec)
    assert records.read_record(path)["metrics"]["x"]["value"] is None  # NaN is stored as null, valid JSON
    original = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        records.write_record(tmp_path, {**rec, "status": "error"})
    assert path.read_bytes() == original
    assert [p.name for p in (tmp_path / "cells").iterdir()] == [path.name]  # no temporary file left


def test_corrupt_records_are_recomputed(tiny_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    plugins = load_plugins()
    runner = Runner(prepare_run(tiny_suite, plugins=plugins, models=True), RunOptions(out_dir=out, progress=False))
    runner.run()
    victim = out / "cells" / f"{runner.cells[1].id}.json"
    victim.write_text('{"schema": "b2s-bench/record/1", "status": "o')  # a truncated file, as if written non-atomically
    todo, done = runner.pending()
    assert [c.id for c in todo] == [runner.cells[1].id] and len(done) == 3


def test_usage_errors_exit_2(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not __import__("torch").cuda.is_available():
        assert run_cli("run", str(tiny_suite), "--device", "cuda", "--out", str(tmp_path)) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert run_cli("report", str(tmp_path / "nothing")) == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run_cli("frobnicate")
    assert exc.value.code == 2
