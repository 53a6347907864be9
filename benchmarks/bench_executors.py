"""Executors: per-cell overhead of worker processes against in-process cells, resuming a finished
suite, and the speed-up of two workers over one.

    python benchmarks/bench_executors.py [--cells 50] [--speedup SUITE] [--skip-speedup]

Targets (issue 10): process-executor overhead < 50 ms per cell over inline; a resumed 50-cell suite
< 2 s in process; --workers 2 close to 2x --workers 1 on cells that do not share threads. Timings on
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


def speedup(suite: str, folder: Path) -> None:
    """Wall time of the whole CLI with one worker and with two, on the same suite, from the same cache."""
    walls = {}
    for workers in (1, 2):
        out = folder / f"speedup-{workers}"
        cmd = [
            sys.executable,
            "-m",
            "b2s_bench",
            "run",
            suite,
            "--out",
            str(out),
            "--quiet",
            "--no-progress",
            "--executor",
            "process",
            "--workers",
            str(workers),
            "--device",
            "cpu",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        walls[workers] = time.perf_counter() - t0
        manifest = json.loads((out / "run.json").read_text())
        print(
            f"[speedup] {suite} --workers {workers}: {walls[workers]:.1f} s wall, exit {proc.returncode}, "
            f"peak RSS {manifest.get('peak_rss_mb')} MB"
        )
        if proc.returncode:
            print(proc.stderr[-2000:])
        if workers == 1:
            times = cell_times(out)
            total, (longest, label) = sum(t for t, _ in times), max(times)
            print(
                f"[speedup] {len(times)} cells, {total:.1f} s of cell time at one worker; the longest, {label}, "
                f"{longest:.1f} s: two workers can at best reach {total / max(longest, total / 2):.2f}x"
            )
    print(
        f"[speedup] --workers 2 over --workers 1: {walls[1] / walls[2]:.2f}x (target close to 2 on cells that "
        "do not share threads; a suite's longest cell bounds it, see above)"
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
