"""Execution: isolated worker processes with timeouts, runs sharing a folder, and claims taken over (a dead
owner's) or never (a live one's on this host)."""

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
from helpers import run_cli

from b2s_bench.store.folder import RunStore

MISBEHAVING = """
import ctypes, dataclasses, os, sys, time
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    how: str = "fine"
    seconds: float = 0.0

def compress(model, config, ctx):
    log = os.environ.get("B2S_TEST_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{config.how} {config.seconds}\\n")
    if config.how == "segfault":
        ctypes.string_at(0)
    elif config.how == "hang":
        time.sleep(3600)
    elif config.how == "exit":  # the process dies (sys.exit would be the cell's own error)
        os._exit(3)
    time.sleep(config.seconds)
    return b2s.Compressed.from_codes(model, {})

@b2s.hookimpl
def b2s_register_compressors(register):
    # "fine" returns the model as it is: an identity (else its cells are not-applicable: they code nothing)
    register(b2s.CompressorSpec("misbehave", "other", "data-free", Cfg, compress, identity={}))
"""


@pytest.fixture
def misbehaving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "misbehaving.py"
    path.write_text(MISBEHAVING)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    monkeypatch.setenv("B2S_TEST_LOG", str(tmp_path / "calls.log"))
    return path


def records(out: Path) -> dict[str, dict]:
    return {
        r["compressor"]["pipeline"][0]["config"]["how"] if r["compressor"]["pipeline"] else "dense": r
        for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))
    }


def test_crashing_hanging_and_exiting_cells_fail_alone(
    write_suite: Callable[..., Path], misbehaving: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite("""
        suite: misbehaving
        models: [tiny:cnn]
        dataset: {name: random, n: 8}
        compressors:
          - name: misbehave
            grid: {how: [fine, segfault, hang, exit, after]}
        metrics: [agreement, bits]
        """)
    out = tmp_path / "run"
    code = run_cli("run", str(suite), "--out", str(out), "--quiet", "--executor", "process", "--cell-timeout", "20")
    assert code == 1
    recs = records(out)
    assert {k: r["status"] for k, r in recs.items()} == {
        "dense": "ok",
        "fine": "ok",
        "after": "ok",
        "segfault": "error",
        "hang": "error",
        "exit": "error",
    }
    assert "killed by SIGSEGV" in recs["segfault"]["error"]["message"]
    assert "timed out after 20 s" in recs["hang"]["error"]["message"]
    assert "exit 3" in recs["exit"]["error"]["message"]
    assert (out / "leaderboard.md").is_file()  # the report still comes
    err = capsys.readouterr().err
    assert "FAILED tiny:cnn misbehave(how=segfault)" in err


def test_inline_executor_runs_in_this_process(
    write_suite: Callable[..., Path], misbehaving: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite("""
        suite: inline
        models: [tiny:cnn]
        dataset: {name: random, n: 8}
        compressors: [{name: misbehave, how: fine}]
        metrics: [bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--no-progress", "--executor", "inline") == 0
    assert {r["environment"]["pid"] for r in records(out).values()} == {os.getpid()}
    said = capsys.readouterr()
    # the header says what inline gives up: no cell can be stopped (runtime.cell_timeout needs a worker)
    assert "(inline executor), one at a time, with no cell time limit" in said.out + said.err


def _suite_of(n: int, write_suite: Callable[..., Path], seconds: float = 0.3) -> Path:
    values = ", ".join(f"{seconds + i / 1000:.3f}" for i in range(n))
    return write_suite(f"""
        suite: shared
        models: [tiny:cnn]
        dataset: {{name: random, n: 8}}
        baseline: false
        compressors:
          - name: misbehave
            grid: {{seconds: [{values}]}}
        metrics: [bits]
        runtime: {{save_artifacts: false}}
        """)


def _start(suite: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "b2s_bench", "run", str(suite), "--out", str(out), "--quiet", "--no-progress", *extra]
    return subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_share_one_folder_without_duplicates(
    write_suite: Callable[..., Path], misbehaving: Path, tmp_path: Path
) -> None:
    suite = _suite_of(20, write_suite)
    out = tmp_path / "run"
    runs = [_start(suite, out, "--executor", "inline") for _ in range(2)]
    results = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], results
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 20 and len(set(calls)) == 20  # every cell computed exactly once
    recs = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert len(recs) == 20 and all(r["status"] == "ok" for r in recs)
    assert len({r["environment"]["pid"] for r in recs}) == 2  # both runs did part of the work
    assert not list((out / "claims").glob("*.json"))  # every claim released


def test_a_killed_run_s_claimed_cell_is_taken_over(write_suite: Callable[..., Path], misbehaving: Path, tmp_path: Path) -> None:
    suite = _suite_of(6, write_suite, seconds=1.0)
    out = tmp_path / "run"
    victim = _start(suite, out, "--executor", "inline")
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "claims").glob("*.json")):
        time.sleep(0.05)
    survivor = _start(suite, out, "--executor", "inline")
    time.sleep(0.5)
    claims = RunStore(out).active_claims()
    held = {cid for cid, info in claims.items() if info.get("pid") == victim.pid}
    assert held, claims
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)  # also closes its pipes
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert "taking over cell" in err
    recs = {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs.values())
    assert all(recs[cid]["environment"]["pid"] == survivor.pid for cid in held)  # the survivor finished them


def test_status_shows_done_running_failed_and_pending(
    write_suite: Callable[..., Path], misbehaving: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite("""
        suite: status
        models: [tiny:cnn]
        dataset: {name: random, n: 8}
        compressors:
          - name: misbehave
            grid: {how: [fine, exit]}
        metrics: [bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--executor", "process", "-k", "exit") == 1
    store = RunStore(out, run_id="someone-else")
    fine = next(
        c for c in json.loads((out / "run.json").read_text())["cells"] if not (out / "cells" / f"{c}.json").exists() and c != ""
    )
    assert store.claim(fine)
    capsys.readouterr()
    assert run_cli("status", str(out)) == 0
    text = capsys.readouterr().out
    assert "1 failed" in text and "exit 3" in text and "1 running" in text and "1 pending" in text
    running = next(line for line in text.splitlines() if "| running" in line)
    name = json.loads((out / "run.json").read_text())["names"][fine]
    assert name.startswith("tiny:cnn ") and name in running  # the running cell is named, from run.json


def _metrics(out: Path) -> dict[str, dict[str, float]]:
    recs = (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))
    return {r["cell_id"]: {k: m["value"] for k, m in r["metrics"].items()} for r in recs if r["status"] == "ok"}


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(["--executor", "ray", "--workers", "2"], id="ray"),
        pytest.param(["--executor", "slurm", "--slurm", "cluster=local", "--slurm", "jobs=2"], id="slurm-local"),
    ],
)
def test_cluster_executors_give_the_records_of_inline(tiny_suite: Path, tmp_path: Path, engine: list[str]) -> None:
    pytest.importorskip(engine[1] if engine[1] == "ray" else "submitit", reason="the executor's extra is not installed")
    inline, other = tmp_path / "inline", tmp_path / "other"
    assert run_cli("run", str(tiny_suite), "--out", str(inline), "--quiet", "--executor", "inline") == 0
    assert run_cli("run", str(tiny_suite), "--out", str(other), "--quiet", *engine) == 0
    expected, got = _metrics(inline), _metrics(other)
    assert len(expected) == 4 and got.keys() == expected.keys()  # the same cell ids
    for cid in expected:  # the same values, on the CPU (None: not applicable, e.g. no weights replaced)
        assert {k: v is None for k, v in got[cid].items()} == {k: v is None for k, v in expected[cid].items()}
        known = {k: v for k, v in expected[cid].items() if v is not None}
        assert {k: got[cid][k] for k in known} == pytest.approx(known, rel=1e-6, abs=1e-9), cid
    pids = {json.loads(p.read_text())["environment"]["pid"] for p in (other / "cells").glob("*.json")}
    assert os.getpid() not in pids  # computed elsewhere


# -- a live claim is never taken over ------------------------------------------------------------------------------
DRIVER = """
import sys
from pathlib import Path
from b2s_bench.plugins import load_plugins
from b2s_bench.execution.prepare import prepare_run
from b2s_bench.execution.runner import Runner, RunOptions

plugins = load_plugins()
run = prepare_run(sys.argv[1], plugins=plugins, device="cpu", models=True)
# below the suite's 15 s minimum on purpose: the inline executor does not beat while a cell runs, so every
# claim looks stale after 0.3 s, and only the live-owner rule keeps each cell to one run
options = RunOptions(out_dir=Path(sys.argv[2]), progress=False, executor="inline", claim_timeout=0.3)
sys.exit(Runner(run, options).run().exit_code)
"""


def test_two_runs_never_take_each_other_s_live_claims(
    write_suite: Callable[..., Path], misbehaving: Path, tmp_path: Path
) -> None:
    suite = _suite_of(6, write_suite, seconds=1.5)
    out = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    runs = [
        subprocess.Popen(
            [sys.executable, str(driver), str(suite), str(out)],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], results
    assert not any("taking over cell" in err for _, err in results), results
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 6  # every cell computed exactly once
    assert len({json.loads(p.read_text())["environment"]["pid"] for p in (out / "cells").glob("*.json")}) == 2


def _foreign_claim(store: RunStore, cell_id: str, age: float, **who: object) -> None:
    """A claim file written by someone else (``who``: host, pid, pid_start), its heartbeat ``age`` seconds old."""
    path = store.claims / f"{cell_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": "someone-else", "started": "2026-01-01T00:00:00+00:00", **who}))
    then = time.time() - age
    os.utime(path, (then, then))


def test_takeover_rule_live_dead_zombie_recycled_and_remote_owners(tmp_path: Path) -> None:
    from b2s_bench.store.folder import _proc_stat, _process_start
    from b2s_bench.store.records import host_name

    here = host_name()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid is free
    try:
        deadline = time.time() + 30
        while time.time() < deadline and (_proc_stat(zombie.pid) or ("Z",))[0] != "Z":
            time.sleep(0.05)  # exited but not waited for: a zombie
        warnings: list[str] = []
        store = RunStore(tmp_path / "run", run_id="me", warn=warnings.append)
        _foreign_claim(store, "live-old", 3600, host=here, pid=live.pid, pid_start=_process_start(live.pid))
        _foreign_claim(store, "live-no-start", 3600, host=here, pid=live.pid)  # a claim of an older version
        _foreign_claim(store, "dead-fresh", 0, host=here, pid=dead.pid)
        _foreign_claim(store, "zombie-fresh", 0, host=here, pid=zombie.pid)
        _foreign_claim(store, "recycled-fresh", 0, host=here, pid=live.pid, pid_start=_process_start(live.pid) - 1)
        _foreign_claim(store, "remote-fresh", 5, host="another-host", pid=live.pid)
        _foreign_claim(store, "remote-old", 30, host="another-host", pid=live.pid)
        taken = {
            cid
            for cid in ("live-old", "live-no-start", "dead-fresh", "zombie-fresh", "recycled-fresh", "remote-fresh", "remote-old")
            if store.claim(cid, stale_after=15)
        }
        assert taken == {"dead-fresh", "zombie-fresh", "recycled-fresh", "remote-old"}
        assert all(store.claim_info(cid)["run"] == "me" for cid in taken)  # type: ignore[index]
        assert store.claim_info("live-old")["run"] == "someone-else"  # type: ignore[index]
        assert any("dead-fresh from " in w and "(its process is gone)" in w for w in warnings), warnings
        assert any("remote-old from another-host" in w and "(no heartbeat for 30 s)" in w for w in warnings), warnings
        mine = json.loads((store.claims / "dead-fresh.json").read_text())
        assert mine["host"] == here and mine["pid"] == os.getpid() and mine["pid_start"] == _process_start(os.getpid())
    finally:
        live.kill()
        live.wait()
        zombie.wait()
