"""What a newcomer waits for: the README's first command, fresh and warm, and the CLI's start-up.

    python benchmarks/bench_first_command.py [--suite embedded] [--workers N|auto] [--repeats 3] [--skip-runs]
                                             [--resume RUN_DIR]

- **fresh**: ``b2s-bench run`` with an empty cache (``$B2S_BENCH_CACHE``) into a new folder: zoo
  weights loaded (or trained, where a recipe has no shipped file), dense outputs computed.
- **warm**: the same command into another new folder with that cache kept: every cell computed
  again, nothing trained.
- **resume**: the warm command again: every cell done, nothing computed. ``--skip-runs --resume RUN_DIR``
  times it on a finished run folder made earlier (``b2s-bench run [SUITE] --out RUN_DIR``) in seconds.
- **CLI start-up**: ``--help``, ``ls``, ``show quantize``, ``validate`` and the resumed run, each the
  best of ``--repeats`` subprocess runs (``ls`` and ``show`` also their first answer, before the
  answers cache holds it), next to ``python -c pass`` and ``python -c "import torch"``
  measured in the same process (the ratios are what to compare on a shared machine).
- **limits' share**: the rate–distortion limits' and weight-structure seconds over the cells'
  seconds, from the warm run's records (``timings.limits`` where records keep it).

Goals (the issue on speed): fresh < 5 min and warm < 3 min on 2 CPU cores, each CLI start-up < 1 s,
the limits < 5 % of a cell. Prints one table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "b2s_bench"]


def _timed(cmd: list[str], env: dict[str, str], check: bool = True) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def _best(cmd: list[str], env: dict[str, str], repeats: int) -> float:
    return min(_timed(cmd, env) for _ in range(repeats))


def _limits_share(out: Path) -> tuple[float, float, int, float]:
    """(limits seconds, cell seconds, records with a limits timing, checks seconds) over the run's records."""
    limits = total = checks = 0.0
    n = 0
    for path in sorted((out / "cells").glob("*.json")):
        timings = json.loads(path.read_text()).get("timings") or {}
        total += float(timings.get("total") or 0.0)
        checks += float(timings.get("checks") or 0.0)
        if "limits" in timings:
            limits += float(timings["limits"])
            n += 1
    return limits, total, n, checks


def _resume_env(run_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with the cache the finished run used (its weights decide the cell ids): the caller's own
    ``$B2S_BENCH_CACHE``, or the default cache when it is unset."""
    if not (run_dir / "run.json").is_file():
        raise SystemExit(f"--resume {run_dir}: not a run folder (no run.json); make one with `b2s-bench run --out {run_dir}`")
    resumed = {k: v for k, v in env.items() if k != "B2S_BENCH_CACHE"}
    if "B2S_BENCH_CACHE" in os.environ:
        resumed["B2S_BENCH_CACHE"] = os.environ["B2S_BENCH_CACHE"]
    return resumed


def _row(name: str, seconds: float, goal: str, ref: float | None = None) -> str:
    ratio = f"{seconds / ref:6.2f}x" if ref else "       "
    return f"| {name:<38} | {seconds:9.2f} s | {ratio} | {goal:<10} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default=None, help="a suite name or file (default: the embedded default)")
    ap.add_argument("--workers", default=None, help="passed to run (default: run's own default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-runs", action="store_true", help="only the CLI start-up (seconds, not minutes)")
    ap.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="with --skip-runs: also time resuming this finished run folder of the suite (a run made earlier)",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="b2s-first-"))
    env = {**os.environ, "B2S_BENCH_CACHE": str(tmp / "cache")}
    env.pop("B2S_BENCH_EXECUTOR", None)
    suite = [args.suite] if args.suite else []
    workers = ["--workers", args.workers] if args.workers else []
    rows = []
    try:
        py_pass = _best([sys.executable, "-c", "pass"], env, args.repeats)
        py_torch = _best([sys.executable, "-c", "import torch"], env, args.repeats)
        rows += [_row("python -c pass (reference)", py_pass, ""), _row("python -c 'import torch' (reference)", py_torch, "")]
        rows.append(_row("b2s-bench --help", _best(CLI + ["--help"], env, args.repeats), "< 1 s", py_torch))
        for name, cmd in (("b2s-bench ls compressors", ["ls", "compressors"]), ("b2s-bench show quantize", ["show", "quantize"])):
            # the first answer loads the plugins; later ones come from the answers cache (b2s_bench/cli/answers.py)
            rows.append(_row(f"{name}, first", _timed(CLI + cmd, env), "", py_torch))
            rows.append(_row(f"{name}, again", _best(CLI + cmd, env, args.repeats), "< 1 s", py_torch))
        rows.append(_row("b2s-bench validate", _best(CLI + ["validate", *suite], env, args.repeats), "< 1 s", py_torch))
        if args.skip_runs and args.resume is not None:
            resumed = CLI + ["run", *suite, "--out", str(args.resume), *workers]
            rows.append(
                _row("run, resumed (all done)", _best(resumed, _resume_env(args.resume, env), args.repeats), "< 1 s", py_torch)
            )
        if not args.skip_runs:
            fresh_out, warm_out = tmp / "fresh", tmp / "warm"
            fresh = _timed(CLI + ["run", *suite, "--out", str(fresh_out), *workers], env, check=False)
            warm = _timed(CLI + ["run", *suite, "--out", str(warm_out), *workers], env, check=False)
            resume = _best(CLI + ["run", *suite, "--out", str(warm_out), *workers], env, args.repeats)
            rows += [
                _row("run, fresh cache", fresh, "< 300 s"),
                _row("run, warm cache", warm, "< 180 s"),
                _row("run, resumed (all done)", resume, "< 1 s", py_torch),
            ]
            limits, total, n, checks = _limits_share(warm_out)
            share = (
                f"{100 * limits / total:.1f} % of {total:.0f} s of cell time ({n} records)"
                if n
                else "not recorded (records keep no timings.limits)"
            )
            rows.append(f"limits' share (warm run): {share}; goal < 5 %")
            if total:
                rows.append(f"the runner's checks of each result (warm run): {100 * checks / total:.1f} % of the cell time")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'| what':<41}| {'seconds':>11} | vs torch | goal       |")
    print(f"|{'-' * 40}|{'-' * 13}|{'-' * 9}|{'-' * 12}|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
