"""Runner performance: evaluation throughput against a plain PyTorch loop, the cost of re-running a
finished 50-cell suite, and the runner's own overhead per cell.

    python benchmarks/bench_runner.py [--device cpu|cuda] [--repeats 5]

Prints absolute numbers and ratios measured in this process (timings on shared machines are noisy;
the ratios are what to compare). Targets: evaluation >= 0.95 of the plain loop; a second run of a
finished 50-cell suite < 2 s; runner overhead < 50 ms per cell.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from b2s_bench.execution import Runner, RunOptions, prepare_run
from b2s_bench.metrics import run_model
from b2s_bench.plugins import load_plugins
from b2s_bench.sources import LoadedModel
from b2s_bench.suites.load import load_suite

NOOP_PLUGIN = """
import dataclasses
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    tag: int = 0

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("noop", "other", "data-free", Cfg, lambda m, c, ctx: b2s.Compressed.from_codes(m, {}),
                                identity={}))  # an exact copy by design, not a no-op row
"""


def eval_throughput(device: torch.device, repeats: int) -> None:
    from b2s_bench_plugins.data.datasets import FashionMNISTConfig, RandomConfig, fmnist_root
    from b2s_bench_plugins.sources.zoo import FashionCNN

    plugins = load_plugins()
    model = FashionCNN().eval().to(device)
    loaded = LoadedModel(model, (1, 28, 28), 10, "-")
    if fmnist_root(None):
        data = plugins.datasets.get("fashion-mnist").build(FashionMNISTConfig(), loaded)
        what = "Fashion-MNIST test (10,000 images)"
    else:
        data = plugins.datasets.get("random").build(RandomConfig(n=10000), loaded)
        what = "10,000 random 1x28x28 inputs"
    batch = 256

    @torch.inference_mode()
    def plain() -> None:  # the usual hand-written evaluation loop: accuracy on the fly
        correct = 0
        for x, y in data.eval_batches(batch):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())

    def ours() -> None:  # the runner's pass: keep all logits (every metric reads them), then top-1
        logits, labels = run_model(model, data, device, batch)
        int((logits.argmax(1) == labels).sum())

    plain(), ours()  # warm-up
    t_plain, t_ours = [], []
    for _ in range(repeats):  # interleaved, so drifting load hits both alike
        t0 = time.perf_counter()
        plain()
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t0)
    p, o = statistics.median(t_plain), statistics.median(t_ours)
    print(
        f"[eval] {what}, FashionCNN, batch {batch}, {device}: plain loop {data.num_examples / p:,.0f} img/s, "
        f"b2s-bench {data.num_examples / o:,.0f} img/s, ratio {p / o:.3f} (target >= 0.95)"
    )


def fifty_cell_suite(folder: Path) -> Path:
    (folder / "noop.py").write_text(NOOP_PLUGIN)
    suite = folder / "fifty.yaml"
    suite.write_text(
        textwrap.dedent("""
        suite: fifty
        models: [tiny:cnn]
        dataset: {name: random, n: 32}
        compressors:
          - name: quantize
            grid: {bits: [2, 3, 4, 5, 6, 7, 8], granularity: [tensor, channel, group], symmetric: [true, false]}
          - name: prune
            grid: {sparsity: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]}
        metrics: [agreement, bits, ratio]
        """)
    )
    return suite


def resume(folder: Path) -> None:
    plugins = load_plugins()
    suite = load_suite(fifty_cell_suite(folder), plugins)
    out = folder / "run"
    t0 = time.perf_counter()
    first = Runner(
        prepare_run(suite, plugins=plugins, device="cpu", models=True), RunOptions(out_dir=out, progress=False, executor="inline")
    ).run()
    t_first = time.perf_counter() - t0
    from b2s_bench.reporting import write_report

    write_report(out, plugins)
    t0 = time.perf_counter()
    second = Runner(
        prepare_run(folder / "fifty.yaml", plugins=plugins, device="cpu", models=True),
        RunOptions(out_dir=out, progress=False, executor="inline"),
    ).run()
    t_second = time.perf_counter() - t0
    assert first.computed == 50 and second.computed == 0, (first, second)
    cli = [sys.executable, "-m", "b2s_bench", "run", str(folder / "fifty.yaml"), "--out", str(out), "--quiet", "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cli, capture_output=True, text=True)
    t_cli = time.perf_counter() - t0
    assert "0 computed, 50 skipped" in proc.stderr, proc.stderr
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    t_torch = time.perf_counter() - t0
    print(
        f"[resume] 50-cell suite: first run {t_first:.1f} s; second run in process {t_second * 1000:.0f} ms "
        f"(only reads records; {t_first / max(t_second, 1e-9):.0f}x faster than the first); whole CLI "
        f"`b2s-bench run` {t_cli:.2f} s, of which `python -c 'import torch'` alone takes {t_torch:.2f} s "
        f"(target < 2 s)"
    )


def overhead(folder: Path, cells: int = 30) -> None:
    (folder / "noop.py").write_text(NOOP_PLUGIN)
    plugins = load_plugins(files=[str(folder / "noop.py")])
    for save in (False, True):
        suite_path = folder / f"noop-{save}.yaml"
        suite_path.write_text(
            textwrap.dedent(f"""
            suite: noop
            models: [tiny:cnn]
            baseline: false
            compressors:
              - name: noop
                grid: {{tag: {list(range(cells))}}}
            metrics: [bits]
            runtime: {{save_artifacts: {str(save).lower()}}}
            """)
        )
        suite = load_suite(suite_path, plugins)
        runner = Runner(
            prepare_run(suite, plugins=plugins, device="cpu", models=True),
            RunOptions(out_dir=folder / f"noop-run-{save}", progress=False, executor="inline"),
        )
        runner.cell_runner.model(runner.cells[0].model.request)  # build the baseline outside the timing
        t0 = time.perf_counter()
        summary = runner.run()
        per_cell = (time.perf_counter() - t0) / summary.computed
        print(
            f"[overhead] no-op compressor, tiny model, save_artifacts={save}: {per_cell * 1000:.1f} ms per cell "
            f"(copy, compress, evaluate, record, hooks; target < 50 ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    eval_throughput(torch.device(args.device), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        resume(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        overhead(Path(tmp))


if __name__ == "__main__":
    main()
