"""Executors: per-cell overhead of worker processes against in-process cells, resuming a finished
suite, and the speed-up of two workers over one.

    python benchmarks/bench_executors.py [--cells 50] [--speedup SUITE] [--skip-speedup]

Targets (issue 10): process-executor overhead < 50 ms per cell over inline; a resumed 50-cell suite
< 2 s in process; --workers 2 close to 2x --workers 1 on cells that do not share threads (issue 20:
>= 1.6x on the embedded suite against one 1-thread worker; ``--speedup`` prints both references). Timings on
shared machines are noisy: the ratios, measured in this one process, are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from b2s_bench.execution import Runner, RunOptions, prepare_run
from b2s_bench.plugins import load_plugins

NOOP_PLUGIN = """
import dataclasses
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    tag: int = 0
    work: int = 0  # busy-loop iterations: CPU work on one thread

def compress(model, config, ctx):
    x = 0
    for i in range(config.work):
        x += i * i
    return b2s.Compressed.from_codes(model, {})

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("noop", "other", "data-free", Cfg, compress, identity={}))  # an exact copy by design
"""


def suite_file(folder: Path, name: str, cells: int, work: int = 0) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""
        suite: {name}
        models: [tiny:cnn]
        baseline: false
        compressors:
          - name: noop
            settings: {{work: {work}}}
            grid: {{tag: {list(range(cells))}}}
        metrics: [bits]
        runtime: {{save_artifacts: false, threads: 1}}
        """)
    )
    return path


def timed_run(path: Path, out: Path, executor: str, workers: int | None = None) -> tuple[float, int]:
    plugins = load_plugins()
    runner = Runner(
        prepare_run(path, plugins=plugins, device="cpu", models=True),
        RunOptions(out_dir=out, progress=False, executor=executor, workers=workers),
    )
    t0 = time.perf_counter()
    summary = runner.run()
    return time.perf_counter() - t0, summary.computed


def overhead(folder: Path, cells: int) -> None:
    """Per-cell cost of each executor on no-op cells: the difference between a run of ``cells`` and a
    run of 5x as many, so that the start-up (a worker's imports) cancels out."""
    times = {}
    for executor in ("inline", "process"):
        few, n_few = timed_run(suite_file(folder, f"few-{executor}", cells), folder / f"few-{executor}", executor, 1)
        many, n_many = timed_run(suite_file(folder, f"many-{executor}", 5 * cells), folder / f"many-{executor}", executor, 1)
        per_cell = (many - few) / (n_many - n_few)
        times[executor] = per_cell
        print(
            f"[overhead] {executor:8s}: {n_few} no-op cells {few:.2f} s, {n_many} cells {many:.2f} s: "
            f"{per_cell * 1000:.1f} ms per cell (start-up excluded: {few - n_few * per_cell:.2f} s)"
        )
    extra = (times["process"] - times["inline"]) * 1000
    print(
        f"[overhead] process executor over inline: {extra:+.1f} ms per cell (target < 50 ms); "
        f"ratio {times['process'] / times['inline']:.2f}x"
    )


def resume(folder: Path, cells: int) -> None:
    path = suite_file(folder, "resume", cells)
    out = folder / "resume"
    timed_run(path, out, "inline")
    for executor in ("inline", "process", "ray", "slurm"):
        seconds, computed = timed_run(path, out, executor)
        assert computed == 0
        print(
            f"[resume] finished {cells}-cell suite through --executor {executor}: {seconds * 1000:.0f} ms in process "
            "(no cell to run, so the executor is never started; target < 2 s)"
        )


def _one_thread_copy(suite: str, folder: Path) -> Path:
    """The suite with ``runtime.threads: 1`` (a name is resolved to its shipped file first)."""
    import yaml

    from b2s_bench.suites.source import resolve_suite_path

    data = yaml.safe_load(Path(resolve_suite_path(suite)).read_text())
    data.setdefault("runtime", {})["threads"] = 1
    path = folder / f"{data['suite']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def speedup(suite: str, folder: Path) -> None:
    """Wall time of the whole CLI with two workers against one, from the same cache, in this process.

    Two references: one worker as a user gets it (all cores' threads for its cells: what two workers
    gain a user), and one worker held to one thread (``runtime.threads: 1``, the threads each of two
    workers has: what the scheduling gains, the parallel efficiency of two workers). The cells' own
    time at one thread over their time at all threads is the intra-op speed-up; two one-thread
    workers can beat one all-thread worker by at most cores / intra-op speed-up."""
    runs = (("1 worker, all threads", "1", suite), ("1 worker, 1 thread", "1", None), ("2 workers", "2", suite))
    walls: dict[str, float] = {}
    cell_seconds: dict[str, float] = {}
    for name, workers, which in runs:
        out = folder / f"speedup-{len(walls)}"
        target = which if which is not None else str(_one_thread_copy(suite, folder))
        cmd = [sys.executable, "-m", "b2s_bench", "run", target, "--out", str(out), "--quiet", "--no-progress"]
        cmd += ["--executor", "process", "--workers", workers, "--device", "cpu"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        walls[name] = time.perf_counter() - t0
        manifest = json.loads((out / "run.json").read_text())
        times = cell_times(out)
        cell_seconds[name] = sum(t for t, _ in times)
        longest, label = max(times)
        print(
            f"[speedup] {suite}, {name}: {walls[name]:.1f} s wall, exit {proc.returncode}, {len(times)} cells, "
            f"{cell_seconds[name]:.1f} s of cell time (longest {longest:.1f} s, {label}), "
            f"peak RSS {manifest.get('peak_rss_mb')} MB"
        )
        if proc.returncode:
            print(proc.stderr[-2000:])
    one, single, two = (walls[name] for name, _, _ in runs)
    intra = cell_seconds["1 worker, 1 thread"] / cell_seconds["1 worker, all threads"]
    cores = os.cpu_count() or 1
    print(f"[speedup] --workers 2 over one 1-thread worker (the scheduling; goal >= 1.6x): {single / two:.2f}x")
    print(f"[speedup] --workers 2 over --workers 1 with all {cores} threads (what a user gains): {one / two:.2f}x")
    print(
        f"[speedup] the cells run {intra:.2f}x faster on {cores} threads than on 1, so on {cores} cores "
        f"2 one-thread workers can beat one {cores}-thread worker by at most {cores / intra:.2f}x on cell time"
    )


def cell_times(out: Path) -> list[tuple[float, str]]:
    """(seconds, label) of every cell a run computed, from its records."""
    recs = (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))
    return [(float(r["timings"].get("total", 0.0)), f"{r['model']['name']} {r['label']}") for r in recs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=50)
    parser.add_argument(
        "--speedup",
        default=None,
        metavar="SUITE",
        help="suite for the two-worker speed-up (default: 8 CPU-bound single-thread cells)",
    )
    parser.add_argument("--skip-speedup", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "noop.py").write_text(NOOP_PLUGIN)
        os.environ["B2S_BENCH_PLUGINS"] = str(folder / "noop.py")
        overhead(folder, args.cells)
        resume(folder, args.cells)
        if not args.skip_speedup:
            speedup(args.speedup or str(suite_file(folder, "busy", 8, work=150_000_000)), folder)


if __name__ == "__main__":
    main()
