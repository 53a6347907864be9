"""The order in which a run starts its cells: the longest expected first."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import b2s_bench as b2s
from b2s_bench.execution.prepare import prepare_run
from b2s_bench.execution.runner import Runner, RunOptions, expected_seconds, longest_first
from b2s_bench.plugins import Plugins
from b2s_bench.store.records import cell_path
from b2s_bench.suites.cells import expand
from b2s_bench.suites.load import load_suite

SUITE = """
suite: order
seed: 0
models:
  - name: tiny:cnn
dataset: {name: random, n: 32}
compressors:
  - name: quantize
    grid: {bits: [8, 4]}
  - name: big2small
    settings: {steps: 5}
  - name: prune
    grid: {sparsity: [0.5]}
metrics: [top1]
"""


def _cells(path: Path, plugins: Plugins) -> list:
    return expand(load_suite(path, plugins), plugins, "cpu")


def _fake_record(out: Path, cell: object, seconds: float) -> None:
    """A finished cell's timing as a run leaves it (only the fields the schedule reads are real)."""
    path = cell_path(out, cell.id)  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "cell_id": cell.id,
                "timings": {"total": seconds},  # type: ignore[attr-defined]
                "model": {"label": cell.model.label},  # type: ignore[attr-defined]
                "compressor": {"pipeline": [{"name": s.name} for s in cell.stages]},
            }
        )
    )  # type: ignore[attr-defined]


def test_a_fit_starts_before_rounding_when_nothing_was_measured(
    write_suite: Callable[..., Path], plugins: Plugins, tmp_path: Path
) -> None:
    cells = _cells(write_suite(SUITE), plugins)
    assert [c.stages[0].name if c.stages else "dense" for c in cells][:3] != ["big2small", "big2small", "big2small"]
    ordered = longest_first(cells, tmp_path / "run", plugins)
    assert ordered[0].stages[0].name == "big2small"  # the inr family's estimate is the largest
    assert ordered[1:] == [c for c in cells if c is not ordered[0]]  # ties keep the suite's order


def test_the_last_run_timings_decide_and_a_sibling_setting_borrows_them(
    write_suite: Callable[..., Path], plugins: Plugins, tmp_path: Path
) -> None:
    cells = _cells(write_suite(SUITE), plugins)
    out = tmp_path / "run"
    quant8 = next(c for c in cells if c.label.startswith("quantize") and "8" in c.label)
    prune = next(c for c in cells if c.label.startswith("prune"))
    _fake_record(out, quant8, 40.0)  # measured: rounding took long on this machine
    _fake_record(out, prune, 2.0)
    seconds = expected_seconds(cells, out, plugins)
    quant4 = next(c for c in cells if c.label.startswith("quantize") and c is not quant8)
    assert seconds[quant8.id] == 40.0
    assert seconds[quant4.id] == 40.0  # a sibling setting of the same model and method
    assert seconds[prune.id] == 2.0
    ordered = longest_first(cells, out, plugins)
    assert ordered.index(quant8) < ordered.index(prune)


def test_a_run_hands_cells_to_the_executor_longest_first(
    write_suite: Callable[..., Path], plugins: Plugins, tmp_path: Path
) -> None:
    runner = Runner(
        prepare_run(write_suite(SUITE), plugins=plugins, models=True), RunOptions(out_dir=tmp_path / "run", progress=False)
    )
    seen: list[str] = []
    plugins.manager.register(_Observer(seen), name="order-observer")
    summary = runner.run()
    assert summary.exit_code == 0
    big2small = [c.id for c in runner.cells if c.stages and c.stages[0].name == "big2small"]
    assert seen[0] in big2small


class _Observer:
    def __init__(self, seen: list[str]):
        self.seen = seen

    @b2s.hookimpl
    def b2s_after_cell(self, record: dict) -> None:
        self.seen.append(record["cell_id"])


def test_the_embedded_suite_starts_its_three_fits_first_longest_first(plugins: Plugins, tmp_path: Path) -> None:
    """With no timings yet (a fresh run), distillation's epoch, then the INR fits, then the rest: the
    order their times take on the embedded suite's CNN (23 s, 15 s and 4.5 s; rounding cells 2–4 s)."""
    from b2s_bench.suites.source import resolve_suite_path

    ordered = longest_first(_cells(Path(resolve_suite_path(None)), plugins), tmp_path / "run", plugins)
    first = [c.stages[0].name for c in ordered[:3]]
    assert first[0] == "distill" and sorted(first[1:]) == ["big2small", "nern"], first
