"""Every hookspec is documented in docs/hooks.md and exercised by a test (as datasette does), and
the complete examples of docs/hooks.md load as plugin files and register what they say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS_MD = ROOT / "docs" / "hooks.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
HOOKS = sorted(n for n in vars(hookspecs) if n.startswith("b2s_") and callable(getattr(hookspecs, n)))


def _headings() -> list[str]:
    text = FENCE.sub("", HOOKS_MD.read_text())  # a '## x' inside a code block is not a heading
    return re.findall(r"^##\s+(\S.*?)\s*$", text, re.M)


def test_the_hookspecs_are_found() -> None:
    # the checks below must have something to check (an empty list would pass them all)
    assert len(HOOKS) >= 8 and "b2s_after_cell" in HOOKS


def test_every_hook_is_documented_and_nothing_else() -> None:
    headings = _headings()
    missing = [h for h in HOOKS if h not in headings]
    assert not missing, f"docs/hooks.md has no '## NAME' section for {missing}; add one per hook"
    unknown = [h for h in headings if h.startswith("b2s_") and h not in HOOKS]
    assert not unknown, f"docs/hooks.md documents {unknown}, which b2s_bench/hookspecs.py does not declare"
    assert len(headings) == len(set(headings)), "docs/hooks.md documents a hook twice"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook: str) -> None:
    here = Path(__file__).resolve()
    users = [p.name for p in sorted((ROOT / "tests").rglob("*.py")) if p.resolve() != here and hook in p.read_text()]
    assert users, f"no test under tests/ mentions {hook}; add one that calls it through a plugin"


# Each complete example of docs/hooks.md (one that imports what it uses) and what it must register.
REGISTERS = {
    "b2s_register_models": lambda p: "mynets" in p.models,
    "b2s_register_datasets": lambda p: "noise" in p.datasets,
    "b2s_register_tasks": lambda p: "multilabel" in p.tasks,
    "b2s_register_metrics": lambda p: "top5_error" in p.metrics,
    "b2s_register_reporters": lambda p: "statuses" in p.reporters,
    "b2s_register_cli_options": lambda p: "--noise-seed" in [o.flag for o in p.cli_options.for_command("run")],
    "b2s_after_cell": lambda p: p.manager.hook.b2s_after_cell.get_hookimpls() != [],
}


def _examples() -> dict[str, str]:
    """hook name -> its complete example (a block that starts with an import)."""
    found: dict[str, str] = {}
    for section in re.split(r"^## ", HOOKS_MD.read_text(), flags=re.M)[1:]:
        name = section.split("\n", 1)[0].strip()
        for lang, block in FENCE.findall(section):
            if lang.strip() == "python" and block.startswith("import"):
                found[name] = block
    return found


@pytest.mark.parametrize("hook", sorted(REGISTERS))
def test_the_complete_examples_load_and_register(hook: str, tmp_path: Path) -> None:
    example = _examples().get(hook)
    assert example is not None, f"docs/hooks.md has no complete example under '## {hook}'"
    path = tmp_path / f"example_{hook}.py"
    path.write_text(example)
    plugins = b2s.execution.load_plugins(files=[str(path)])
    assert not [f.error for f in plugins.failures if f.name == path.stem]
    assert REGISTERS[hook](plugins), f"the example of {hook} did not register what docs/hooks.md says"


def test_the_complete_examples_run_a_suite_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The examples are real: a suite on their model, dataset, metric and reporter runs, and the
    --noise-seed option reaches the dataset (its fingerprint, in the records)."""
    monkeypatch.setenv("B2S_NOISE_SEED", "0")  # the option's apply sets it: restored after the test
    monkeypatch.chdir(tmp_path)
    flags: list[str] = []
    for hook, example in sorted(_examples().items()):
        (tmp_path / f"{hook}.py").write_text(example)
        flags += ["--plugin", f"{hook}.py"]
    (tmp_path / "s.yaml").write_text(
        "suite: hooksdoc\nmodels: [{name: 'mynets:small'}]\ndataset: {name: noise, n: 16}\n"
        "compressors: [{name: quantize, bits: 4}]\nmetrics: [top1, top5_error]\n"
        "report: {formats: [markdown, statuses]}\n"
    )
    assert run_cli(*flags, "run", "s.yaml", "--out", "run", "--no-progress", "--quiet", "--noise-seed", "3") == 0
    assert (tmp_path / "run" / "statuses.txt").read_text() == "ok: 2\n"
    assert "top5_error" in (tmp_path / "run" / "leaderboard.md").read_text()
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "cells").glob("*.json"))]
    assert [r["dataset"]["data_fingerprint"] for r in records] == ["noise-16-seed3"] * 2
    assert "ended" not in capsys.readouterr().out  # the after-cell example prints only cells that failed
