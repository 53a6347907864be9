"""Process faults with real worker processes: a worker killed holding the dense-outputs lock, a run
killed or terminated with its workers, and cells' messages (ctx.log, warnings) forwarded by workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import run_cli

from b2s_bench.store.folder import OwnedLock, RunStore
from b2s_bench.store.records import host_name

PLUGIN = """
import dataclasses, glob, os, time, warnings
import torch
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    how: str = "fine"

def compress(model, config, ctx):
    if config.how == "oom-score":
        with open("/proc/self/oom_score_adj") as f:
            ctx.log(f"oom_score_adj {f.read().strip()}")
    if config.how == "chatty":
        ctx.log("chatty: 3 layers left dense")
        warnings.warn("chatty: a layer is too small to quantize", UserWarning)
    elif config.how == "hang":
        with open(os.path.join(os.environ["B2S_TEST_DIR"], f"hang.{os.getpid()}"), "w") as f:
            f.write("")
        time.sleep(3600)
    return b2s.Compressed.from_codes(model, {})

@dataclasses.dataclass(frozen=True)
class GateCfg:
    n: int = 16

def build(config, model):
    x = torch.randn(config.n, *model.input_shape, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(config.n, dtype=torch.long)

    def batches(size):
        # while the test's gate file exists, whoever computes the dense outputs (a .lock exists) stops here
        gate = os.path.join(os.environ["B2S_TEST_DIR"], "gate")
        if os.path.exists(gate) and glob.glob(os.path.join(os.environ["B2S_BENCH_CACHE"], "reference/*.lock")):
            with open(os.path.join(os.environ["B2S_TEST_DIR"], "blocked"), "w") as f:
                f.write(str(os.getpid()))
            while os.path.exists(gate):
                time.sleep(0.05)
        for i in range(0, config.n, size):
            yield x[i:i + size], y[i:i + size]

    return b2s.sources.LoadedData(batches, config.n, True, f"gated:{config.n}")

@b2s.hookimpl
def b2s_register_compressors(register):
    # "fine" returns the model as it is: an identity (else its cells are not-applicable: they code nothing)
    register(b2s.CompressorSpec("faulty", "other", "data-free", Cfg, compress, identity={}))

@b2s.hookimpl
def b2s_register_datasets(register):
    register(b2s.DatasetSpec("gated", GateCfg, build))
"""


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "faulty.py"
    path.write_text(PLUGIN)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    monkeypatch.setenv("B2S_TEST_DIR", str(tmp_path))
    return path


def _start(suite: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "b2s_bench",
        "run",
        str(suite),
        "--out",
        str(out),
        "--quiet",
        "--no-progress",
        "--executor",
        "process",
        "--workers",
        "1",
        *extra,
    ]
    return subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Runs a test starts; any still running at its end (a failed assertion) is killed."""
    runs: list[subprocess.Popen[str]] = []
    yield runs
    for run in runs:
        if run.poll() is None:
            run.kill()
        try:
            run.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a worker that outlived its run holds the pipes open
            pass


def _wait_for(found: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {seconds} s")


def _alive(pid: int) -> bool:
    """A running process (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _records(out: Path) -> dict[str, dict]:
    recs = (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))
    return {
        r["compressor"]["pipeline"][0]["config"].get("how", r["label"]) if r["compressor"]["pipeline"] else "dense": r
        for r in recs
    }


def test_a_worker_killed_holding_the_dense_outputs_lock_is_taken_over(
    write_suite: Callable[..., Path], faulty: Path, tmp_path: Path, started: list
) -> None:
    suite = write_suite("""
        suite: locked
        models: [tiny:cnn]
        dataset: {name: gated}
        baseline: false
        compressors:
          - name: quantize
            grid: {bits: [8, 6, 4]}
        metrics: [agreement]
        runtime: {save_artifacts: false}
        """)
    out = tmp_path / "run"
    (tmp_path / "gate").write_text("")
    run = _start(suite, out)
    started.append(run)
    blocked = tmp_path / "blocked"
    _wait_for(blocked.is_file, 60, "worker computing the dense outputs")
    worker = int(_wait_for(blocked.read_text, 5, "pid"))
    lock = next((Path(os.environ["B2S_BENCH_CACHE"]) / "reference").glob("*.lock"))
    holder = OwnedLock(lock).holder()
    assert holder is not None and holder.get("pid") == worker and holder.get("host") == host_name()
    os.kill(worker, signal.SIGKILL)  # the lock stays behind
    (tmp_path / "gate").unlink()
    killed = time.time()
    _, err = run.communicate(timeout=90)  # today's main waited 1,800 s for the dead worker's lock
    assert time.time() - killed < 60, err
    assert run.returncode == 1, err  # the killed worker's cell failed; the others were computed
    recs = _records(out)
    assert sorted(r["status"] for r in recs.values()) == ["error", "ok", "ok"]
    assert "taking over the dense outputs of tiny:cnn from pid " + str(worker) in err
    assert not list((Path(os.environ["B2S_BENCH_CACHE"]) / "reference").glob("*.lock"))
    assert len(list((Path(os.environ["B2S_BENCH_CACHE"]) / "reference").glob("*.pt"))) == 1


def test_leftover_cleanup_removes_dead_reference_locks_and_temp_files(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = int(gone.stdout)  # a pid that just ended on this host
    store = RunStore(tmp_path / "run")
    ref = store.reference_cache
    ref.mkdir(parents=True)
    (ref / "a.lock").write_text(json.dumps({"host": host_name(), "pid": dead, "started": ""}))
    (ref / "b.lock").write_text(json.dumps({"host": host_name(), "pid": os.getpid(), "started": ""}))  # alive
    (ref / "c.lock").write_text("")  # an old lock without its holder (written before locks named it)
    os.utime(ref / "c.lock", (time.time() - 3600, time.time() - 3600))
    (ref / f".x.pt.{host_name()}-{dead}.tmp").write_text("half")
    (ref / f".y.pt.{host_name()}-{os.getpid()}.tmp").write_text("being written")
    removed = {p.name for p in store.clean_leftovers()}
    assert removed == {"a.lock", "c.lock", f".x.pt.{host_name()}-{dead}.tmp"}
    assert sorted(p.name for p in ref.iterdir()) == sorted(["b.lock", f".y.pt.{host_name()}-{os.getpid()}.tmp"])


def test_an_owned_lock_keeps_its_heartbeat_while_held(tmp_path: Path) -> None:
    lock = OwnedLock(tmp_path / "k.lock", stale_after=0.6)
    assert lock.acquire() and not OwnedLock(lock.path).acquire()
    os.utime(lock.path, (time.time() - 10, time.time() - 10))
    time.sleep(0.3)  # the heartbeat refreshes it every stale_after / 6 s
    info = lock.holder()
    assert info is not None and info["age"] < 0.6 and info["pid"] == os.getpid()
    other = OwnedLock(lock.path, stale_after=0.6)
    assert other.break_if_dead() is None  # a live holder is waited for
    lock.release()
    assert not lock.path.exists() and other.acquire()
    other.release()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_their_run(
    write_suite: Callable[..., Path], faulty: Path, tmp_path: Path, started: list, sig: signal.Signals
) -> None:
    suite = write_suite("""
        suite: hanging
        models: [tiny:cnn]
        dataset: {name: random, n: 8}
        compressors:
          - name: faulty
            grid: {how: [fine, hang]}
        metrics: [bits]
        runtime: {save_artifacts: false}
        """)
    out = tmp_path / "run"
    run = _start(suite, out)  # equal cost estimates keep suite order: dense and fine finish before hang starts
    started.append(run)
    hung = _wait_for(lambda: list(tmp_path.glob("hang.*")), 90, "hanging cell")
    worker = int(hung[0].suffix.lstrip("."))  # type: ignore[index]
    assert _alive(worker)
    run.send_signal(sig)
    sent = time.time()
    try:  # an orphaned worker holds the run's stderr open: communicate would time out
        _, err = run.communicate(timeout=30)
        _wait_for(lambda: not _alive(worker), 5, "end of the worker")  # today's main: alive an hour later
    finally:
        if _alive(worker):  # the test failed: do not leave it hanging for an hour
            os.kill(worker, signal.SIGKILL)
    recs = _records(out)
    assert {k: r["status"] for k, r in recs.items()} == {"dense": "ok", "fine": "ok"}  # finished cells kept
    if sig == signal.SIGTERM:
        assert run.returncode == 143, err
        assert "terminated (SIGTERM): finished cells are saved" in err
        assert time.time() - sent < 15
        assert not list((out / "claims").glob("*.json"))  # the hanging cell's claim released
    else:
        assert run.returncode == -signal.SIGKILL


@pytest.mark.filterwarnings("default::UserWarning")  # the project's tests turn warnings into errors
@pytest.mark.parametrize("executor", ["process", "inline"])
def test_cells_log_and_warnings_reach_the_terminal_and_the_record(
    write_suite: Callable[..., Path], faulty: Path, tmp_path: Path, executor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = write_suite("""
        suite: chatty
        models: [tiny:cnn]
        dataset: {name: random, n: 8}
        baseline: false
        compressors:
          - name: faulty
            grid: {how: [chatty, fine]}
        metrics: [bits]
        runtime: {save_artifacts: false}
        """)
    out = tmp_path / "run"
    assert (
        run_cli("run", str(suite), "--out", str(out), "--quiet", "--no-progress", "--executor", executor, "--workers", "1") == 0
    )
    err = capsys.readouterr().err
    assert "[tiny:cnn faulty(how=chatty)] chatty: 3 layers left dense" in err
    assert "[tiny:cnn faulty(how=chatty)] warning: UserWarning: chatty: a layer is too small to quantize (" in err
    recs = _records(out)
    assert recs["chatty"]["details"]["log"] == ["chatty: 3 layers left dense"]
    [warned] = recs["chatty"]["details"]["warnings"]
    assert warned.startswith("UserWarning: chatty: a layer is too small to quantize (") and "faulty.py:" in warned
    assert "log" not in recs["fine"]["details"] and "warnings" not in recs["fine"]["details"]
    pids = {r["environment"]["pid"] for r in recs.values()}
    assert (pids == {os.getpid()}) == (executor == "inline")  # the process executor really used a worker


@pytest.mark.skipif(not Path("/proc/self/oom_score_adj").exists(), reason="Linux only: /proc/self/oom_score_adj")
def test_a_worker_is_the_first_to_go_out_of_memory_and_the_run_is_not(
    write_suite: Callable[..., Path], faulty: Path, tmp_path: Path
) -> None:
    """A plugin that eats memory must cost its cell, not the run: out of memory the kernel kills the process
    with the highest score, so a worker raises its own (the run keeps the kernel's default)."""
    from b2s_bench.execution.worker import WORKER_OOM_SCORE_ADJ

    suite = write_suite("""
        suite: oom
        models: [tiny:cnn]
        dataset: {name: random, n: 8}
        baseline: false
        compressors:
          - {name: faulty, how: oom-score}
        metrics: [bits]
        runtime: {save_artifacts: false}
        """)
    out = tmp_path / "run"
    assert (
        run_cli("run", str(suite), "--out", str(out), "--quiet", "--no-progress", "--executor", "process", "--workers", "1") == 0
    )
    (rec,) = _records(out).values()
    assert rec["details"]["log"] == [f"oom_score_adj {WORKER_OOM_SCORE_ADJ}"] and rec["environment"]["pid"] != os.getpid()
    own = int(Path("/proc/self/oom_score_adj").read_text())
    assert own < WORKER_OOM_SCORE_ADJ  # this process (the run) was left as it was


def test_the_parent_watchdog_alone_ends_an_orphaned_worker(tmp_path: Path) -> None:
    # without PR_SET_PDEATHSIG (sys.platform faked, as on macOS) the watchdog thread must do it alone
    grandchild = (
        "import os, sys, time; sys.platform = 'darwin'; from b2s_bench.execution.worker import die_with_parent; "
        "die_with_parent(os.getppid(), every=0.1); print(os.getpid(), flush=True); time.sleep(60)"
    )
    middle = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], stdout=subprocess.PIPE, text=True); "
        "print(p.stdout.readline().strip(), flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    try:
        assert _alive(worker)
        parent.kill()
        parent.communicate(timeout=10)
        _wait_for(lambda: not _alive(worker), 5, "end of the orphaned worker")
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
