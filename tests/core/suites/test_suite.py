"""Suites: every error names the file, the line, the key path and a fix; includes; grids to cells."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

from b2s_bench.errors import SuiteError
from b2s_bench.plugins import Plugins
from b2s_bench.suites.cells import expand, select
from b2s_bench.suites.load import load_suite

Write = Callable[..., Path]


def error_of(path: Path, plugins: Plugins) -> SuiteError:
    with pytest.raises(SuiteError) as err:
        suite = load_suite(path, plugins)
        expand(suite, plugins, "cpu")
    return err.value


BASE = """
suite: s
models: [tiny:cnn]
dataset: random
compressors:
  - name: quantize
"""


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        (BASE + "metricz: [top1]\n", 6, "metricz", "did you mean 'metrics'"),
        ("suite: s\nmodels: [tiny:cnn]\n", None, "", "missing required key 'compressors'"),
        (BASE.replace("name: quantize", "name: quantise"), 5, "compressors[0].name", "did you mean 'quantize'"),
        (BASE + "    grid: {bits: [8, 99]}\n", 6, "compressors[0].grid.bits", "bits must be in 2..8, 16 or 32, got 99"),
        (
            BASE + "    bitz: 4\n",
            6,
            "compressors[0].bitz",
            "unknown setting 'bitz' of compressor 'quantize'; did you mean 'bits'",
        ),
        (BASE + "    settings: {bits: four}\n", 6, "compressors[0].settings.bits", "bits must be an integer, got 'four'"),
        (BASE + "    grid: {bits: 4}\n", 6, "compressors[0].grid.bits", "grid values must be a non-empty list"),
        (BASE + "    granularity: chanel\n", 6, "compressors[0].granularity", "did you mean 'channel'"),
        (BASE + "metrics: [top1, accuracy]\n", 6, "metrics[1]", "unknown metric 'accuracy'"),
        (BASE.replace("dataset: random", "dataset: fashion-mnit"), 3, "dataset.name", "did you mean 'fashion-mnist'"),
        (BASE.replace("dataset: random", "dataset: {name: random, n: 0}"), 3, "dataset.n", "n must be >= 1, got 0"),
        (BASE.replace("models: [tiny:cnn]", "models: [resnet18]"), 2, "models[0].name", "SOURCE:NAME"),
        (BASE.replace("models: [tiny:cnn]", "models: [tim:resnet18]"), 2, "models[0].name", "did you mean 'timm'"),
        (BASE + "device: gpu\n", 6, "device", "device must be one of auto, cpu, cuda"),
        (BASE + "seed: zero\n", 6, "seed", "expected an integer seed"),
        (BASE + "report: {sort_by: latency_ms}\n", 6, "report.sort_by", "sort_by must be one of the suite's metrics"),
        (BASE + "report: {formats: [markdwn]}\n", 6, "report.formats[0]", "did you mean 'markdown'"),
        (BASE + "runtime: {batch_size: 0}\n", 6, "runtime.batch_size", "batch_size must be >= 1"),
        (BASE + "  - pipeline: [quantize]\n", 6, "compressors[1].pipeline", "at least two compressors"),
        ("suite: s\nmodels: [tiny:cnn]\ncompressors:\n  - name: quantize\n   bits: 4\n", 5, "", "invalid YAML"),
        ("- just\n- a list\n", 1, "", "a suite must be a YAML mapping"),
        (
            BASE.replace("models: [tiny:cnn]", "models: [{name: tiny:cnn, pretrained: true, weights: w.pt}]"),
            2,
            "models[0].weights",
            "give either pretrained: true or weights:, not both",
        ),
        (
            BASE.replace("models: [tiny:cnn]", "models: [{name: tiny:cnn, pretrainde: true}]"),
            2,
            "models[0].pretrainde",
            "unknown key in a model entry; did you mean 'pretrained'",
        ),
        (
            BASE.replace("models: [tiny:cnn]", "models: [{name: tiny:cnn, colour: red}]"),
            2,
            "models[0].colour",
            "unknown key in a model entry; allowed keys: name, pretrained, weights, dataset, options, label",
        ),
        (
            BASE + "    bits: 4\n    grid: {bits: [8, 4]}\n",
            7,
            "compressors[0].grid.bits",
            "'bits' is both a fixed setting and a grid axis; keep one",
        ),
        (
            BASE + "    settings: {bits: 4}\n    grid: {bits: [8, 4]}\n",
            7,
            "compressors[0].grid.bits",
            "'bits' is both a fixed setting and a grid axis",
        ),
        (
            BASE + "  - pipeline: [quantize, distill]\n",
            6,
            "compressors[1].pipeline[1]",
            "compressor 'distill' cannot follow another in a pipeline (it has no per-tensor form); put it first",
        ),
        (
            BASE + "  - pipeline: [prune, nern]\n",
            6,
            "compressors[1].pipeline[1]",
            "compressor 'nern' cannot follow another in a pipeline",
        ),
        ("include: nope.yaml\n" + BASE, 1, "include[0]", "included file 'nope.yaml' not found (paths are relative to "),
        (
            BASE + "    device_settings: {gpu: {bits: 4}}\n",
            6,
            "compressors[0].device_settings.gpu",
            "unknown key in device_settings; did you mean 'cpu'",
        ),
        (
            BASE + "    device_settings: {cpu: {bits: 99}}\n",
            6,
            "compressors[0].device_settings.cpu.bits",
            "bits must be in 2..8, 16 or 32, got 99",
        ),
        (
            BASE + "    device_settings: {cpu: {bitz: 4}}\n",
            6,
            "compressors[0].device_settings.cpu.bitz",
            "unknown setting 'bitz' of compressor 'quantize'; did you mean 'bits'",
        ),
        (
            BASE + "    device_settings: {cpu: 4}\n",
            6,
            "compressors[0].device_settings.cpu",
            "expected a mapping of settings, got int 4",
        ),
        (BASE + "report: {group_by: model}\n", 6, "report.group_by", "group_by must be track, family or none, got 'model'"),
        (BASE + "runtime: {threads: 0}\n", 6, "runtime.threads", "threads must be >= 1, got 0"),
        (BASE + "runtime: {threads: two}\n", 6, "runtime.threads", "threads must be an integer, got 'two'"),
    ],
)
def test_suite_errors_are_located(
    write_suite: Write, plugins: Plugins, text: str, line: int | None, key: str, fragment: str
) -> None:
    path = write_suite(text)
    err = error_of(path, plugins)
    assert fragment in err.message, err.message
    assert err.key == key
    assert err.line == line
    assert err.file is not None and err.file.endswith("suite.yaml")
    assert str(err).startswith(f"{err.file}{':' + str(line) if line else ''} ")


def test_missing_suite_file(tmp_path: Path, plugins: Plugins) -> None:
    err = error_of(tmp_path / "nope.yaml", plugins)
    assert "no such suite file" in err.message


def test_cli_prints_suite_errors_without_traceback(write_suite: Write, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(BASE.replace("name: quantize", "name: big2smal"))
    assert run_cli("validate", str(path)) == 2
    err = capsys.readouterr().err
    assert "suite.yaml:5 compressors[0].name: unknown compressor 'big2smal'" in err
    assert "Traceback" not in err


def test_include_shares_defaults_and_locates_errors(write_suite: Write, plugins: Plugins) -> None:
    write_suite("seed: 7\ndataset: {name: random, n: 32}\nreport: {sort_by: ratio}\nmetrics: [ratio, bits]\n", name="base.yaml")
    path = write_suite("include: base.yaml\nsuite: s\nmodels: [tiny:cnn]\ncompressors: [quantize]\nseed: 3\n")
    suite = load_suite(path, plugins)
    assert suite.seed == 3 and suite.dataset is not None and suite.dataset.config.n == 32
    assert suite.report.sort_by == "ratio" and suite.metrics == ("ratio", "bits")
    write_suite("dataset: {name: random, n: -1}\n", name="base.yaml")
    err = error_of(path, plugins)
    assert err.file.endswith("base.yaml") and err.line == 1 and err.key == "dataset.n"


def test_include_cycle(write_suite: Write, plugins: Plugins) -> None:
    write_suite("include: b.yaml\n", name="a.yaml")
    path = write_suite("include: a.yaml\nsuite: s\n", name="b.yaml")
    assert "include cycle" in error_of(path, plugins).message


def test_grid_expands_with_stable_ids(tiny_suite: Path, plugins: Plugins) -> None:
    suite = load_suite(tiny_suite, plugins)
    cells = expand(suite, plugins, "cpu")
    assert [c.label for c in cells] == ["dense", "quantize(bits=8)", "quantize(bits=4)", "prune(sparsity=0.5)"]
    assert [c.id for c in cells] == [c.id for c in expand(load_suite(tiny_suite, plugins), plugins, "cpu")]
    assert len({c.id for c in cells}) == 4
    assert [c.id for c in expand(suite, plugins, "cuda")] != [c.id for c in cells]  # the device is part of the id
    assert [c.label for c in select(cells, "bits=4")] == ["quantize(bits=4)"]
    assert [c.label for c in select(cells, "*prune*")] == ["prune(sparsity=0.5)"]


def test_defaults_are_part_of_the_id_and_labels_show_what_was_set(write_suite: Write, plugins: Plugins) -> None:
    a = write_suite(BASE, name="a.yaml")
    b = write_suite(BASE + "    bits: 8\n", name="b.yaml")  # 8 is the default: the same cell
    ca, cb = expand(load_suite(a, plugins), plugins, "cpu"), expand(load_suite(b, plugins), plugins, "cpu")
    assert ca[1].id == cb[1].id
    assert ca[1].label == "quantize" and cb[1].label == "quantize(bits=8)"


def test_device_settings_apply_per_device(write_suite: Write, plugins: Plugins) -> None:
    path = write_suite(BASE + "    device_settings: {cpu: {bits: 4}, cuda: {bits: 8}}\n")
    suite = load_suite(path, plugins)
    assert expand(suite, plugins, "cpu")[1].stages[0].config.bits == 4
    assert expand(suite, plugins, "cuda")[1].stages[0].config.bits == 8


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_cuda_device_settings_are_checked_on_every_device(write_suite: Write, plugins: Plugins, device: str) -> None:
    suite = load_suite(write_suite(BASE + "    device_settings: {cuda: {bits: 99}}\n"), plugins)
    with pytest.raises(SuiteError) as err:  # a CPU machine's validate catches what would fail on a GPU
        expand(suite, plugins, device)
    assert err.value.key == "compressors[0].device_settings.cuda.bits" and err.value.line == 6
    assert "bits must be in 2..8, 16 or 32, got 99" in err.value.message


def test_a_device_setting_that_is_also_a_grid_axis_is_an_error(write_suite: Write, plugins: Plugins) -> None:
    err = error_of(
        write_suite(
            BASE.replace("name: quantize", "name: quantize\n    grid: {bits: [8, 4]}") + "    device_settings: {cpu: {bits: 2}}\n"
        ),
        plugins,
    )
    assert err.key == "compressors[0].device_settings.cpu.bits" and "both a grid axis" in err.message


def test_pipeline_cells(write_suite: Write, plugins: Plugins) -> None:
    path = write_suite(BASE + "  - pipeline: [{name: prune, sparsity: 0.5}, {name: quantize, grid: {bits: [8, 4]}}]\n")
    cells = expand(load_suite(path, plugins), plugins, "cpu")
    assert [c.label for c in cells[2:]] == ["prune(sparsity=0.5) > quantize(bits=8)", "prune(sparsity=0.5) > quantize(bits=4)"]
    assert cells[2].family == "pruning+quantization"


def test_compressor_entries_can_target_some_models(write_suite: Write, plugins: Plugins) -> None:
    text = BASE.replace("models: [tiny:cnn]", "models: [tiny:cnn, {name: tiny:mlp, label: mlp}]")
    path = write_suite(text + "  - {name: prune, models: [mlp]}\n")
    cells = expand(load_suite(path, plugins), plugins, "cpu")
    assert [(c.model.label, c.label) for c in cells] == [
        ("tiny:cnn", "dense"),
        ("tiny:cnn", "quantize"),
        ("mlp", "dense"),
        ("mlp", "quantize"),
        ("mlp", "prune"),
    ]
    err = error_of(write_suite(text + "  - {name: prune, models: [mpl]}\n"), plugins)
    assert err.key == "compressors[1].models[0]" and "did you mean 'mlp'" in err.message


def test_embedded_and_shipped_suites_validate(plugins: Plugins) -> None:
    suite = load_suite(None, plugins)
    assert suite.name == "embedded"
    assert expand(suite, plugins, "cpu")
    for path in sorted(Path(__file__).resolve().parents[3].glob("suites/*.yaml")):
        expand(load_suite(path, plugins), plugins, "cpu")
