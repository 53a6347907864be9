"""One way through a run: ``prepare_run`` sets a run up for the CLI, workers and batch jobs alike,
prepares the models' weights before the cell ids are made, and the runner's constructor does no I/O."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

from b2s_bench.execution import worker
from b2s_bench.execution.executors import RunPlan
from b2s_bench.execution.prepare import prepare_run
from b2s_bench.execution.runner import Runner, RunOptions
from b2s_bench.plugins import load_plugins

# a model source whose weights exist only once `prepare` made them, and whose fingerprint (part of
# every cell id) tells made weights from missing ones
SOURCE = """
import os
from pathlib import Path
import torch
import b2s_bench as b2s
from b2s_bench.testing import tiny_model

def weights(request):
    return Path(os.environ["MADE_DIR"]) / f"{request.arch}.txt"

def prepare(request):
    with open(Path(os.environ["MADE_DIR"]) / "prepared.log", "a") as log:
        log.write(request.arch + "\\n")
    weights(request).write_text("made")

def fingerprint(request):
    return weights(request).read_text() if weights(request).exists() else "missing"

def build(request):
    torch.manual_seed(0)
    return b2s.sources.LoadedModel(tiny_model(), (1, 28, 28), 10, "made")

@b2s.hookimpl
def b2s_register_models(register):
    register(b2s.ModelSource("made", build, lambda pattern: ["a", "b"], fingerprint=fingerprint, prepare=prepare))
"""

SUITE = """
suite: made
models: [made:a, made:b]
dataset: {name: random, n: 8}
compressors:
  - name: quantize
    grid: {bits: [8, 4]}
metrics: [bits]
runtime: {save_artifacts: false}
"""


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_suite: Callable[..., Path]) -> Path:
    (tmp_path / "made.py").write_text(SOURCE)
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("MADE_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(tmp_path / "made.py"))
    return write_suite(SUITE)


def _prepared(tmp_path: Path) -> list[str]:
    log = tmp_path / "weights" / "prepared.log"
    return log.read_text().split() if log.exists() else []


def test_models_are_prepared_before_the_cell_ids_are_made_and_only_when_asked(made: Path, tmp_path: Path) -> None:
    plugins = load_plugins()
    before = prepare_run(made, plugins=plugins, device="cpu")
    assert _prepared(tmp_path) == []  # validate's way: nothing is made
    run = prepare_run(made, plugins=plugins, device="cpu", skip_models=["made:b"], models=True)
    assert _prepared(tmp_path) == ["a"]  # a skipped model is not prepared
    assert {c.model.label for c in run.cells} == {"made:a"} and len(run.all_cells) == 6  # 2 models x (dense + 2)
    changed = {c.id for c in run.all_cells} - {c.id for c in before.all_cells}
    assert {c.model.label for c in run.all_cells if c.id in changed} == {"made:a"}  # ids hash the made weights


def test_the_runner_s_constructor_does_no_io(made: Path, tmp_path: Path) -> None:
    run = prepare_run(made, device="cpu", pattern="bits=8")
    out = tmp_path / "run"
    runner = Runner(run, RunOptions(out_dir=out, progress=False, executor="inline"))
    assert not out.exists() and _prepared(tmp_path) == []  # no folder made, no model prepared
    assert [c.id for c in runner.cells] == [c.id for c in run.cells] and len(runner.cells) == 2
    summary = runner.run()
    assert (summary.computed, summary.failed) == (2, [])
    assert sorted(p.stem for p in (out / "cells").glob("*.json")) == sorted(c.id for c in run.cells)


def test_cli_run_validate_and_a_worker_agree_on_the_cells(made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli("run", str(made), "--out", str(out), "--quiet", "--device", "cpu", "--executor", "inline", "-k", "bits=4") == 0
    assert sorted(_prepared(tmp_path)) == ["a", "b"]  # `run` prepared each model once
    ran = sorted(p.stem for p in (out / "cells").glob("*.json"))
    capsys.readouterr()
    assert run_cli("validate", str(made), "--device", "cpu", "-k", "bits=4") == 0
    listed = capsys.readouterr().out
    assert len(ran) == 2 and all(cid in listed for cid in ran)
    plan = RunPlan(str(made), str(out), "cpu", (str(tmp_path / "made.py"),))
    _, cells = worker.setup(plan)  # a worker process's view of the same run
    assert set(ran) <= set(cells) and len(cells) == 6
    assert sorted(_prepared(tmp_path)) == ["a", "b"]  # workers read the weights, never make them
