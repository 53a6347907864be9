"""Untrusted suite input is refused cleanly: exit 2, the file (and key) named, no traceback, in bounded
time and memory. Binary and non-UTF-8 files, alias bombs, deep nesting, duplicate keys, grids past
``runtime.max_cells``, suite names that would escape the results folder, run folders that cannot
be written, a ``claim_timeout`` under three heartbeats, an include that is not a mapping, an unknown
model of a known source, an unregistered weights package and a ``weights:`` file that is not a checkpoint."""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

from b2s_bench.errors import SuiteError, UserError
from b2s_bench.execution.prerequisites import check_writable
from b2s_bench.plugins import Plugins
from b2s_bench.suites.cells import expand
from b2s_bench.suites.load import count_cells, load_suite
from b2s_bench.suites.source import MAX_BYTES, MAX_DEPTH, MAX_FILES, load_located

Write = Callable[..., Path]

BASE = """
suite: s
models: [tiny:cnn]
dataset: random
compressors:
  - name: prune
"""


def refused(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run `validate` on a bad suite: exit 2 and one clean line naming the file."""
    assert run_cli("validate", str(path)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and path.name in err, err
    return err


def error_of(path: Path, plugins: Plugins) -> SuiteError:
    with pytest.raises(SuiteError) as err:
        load_suite(path, plugins)
    return err.value


# -- bytes that are not a suite -----------------------------------------------------------------------------
def test_a_binary_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "suite.yaml"
    path.write_bytes(b"suite: s\n\x00\x01\x02\xff" * 10)
    assert "a binary file, not a YAML suite" in refused(path, capsys)


def test_utf16_text_is_refused_as_binary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(BASE, encoding="utf-16")
    assert "save the suite as UTF-8" in refused(path, capsys)


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path, plugins: Plugins) -> None:
    path = tmp_path / "suite.yaml"
    path.write_bytes((BASE + "description: café\n").encode("latin-1"))
    err = error_of(path, plugins)
    assert "not UTF-8 text (byte 0xe9 at line 7)" in err.message and err.line == 7


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path, plugins: Plugins) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(BASE + "#" * MAX_BYTES)
    assert "larger than 1 MiB" in error_of(path, plugins).message


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_path_that_is_not_a_regular_file(tmp_path: Path, plugins: Plugins, kind: str) -> None:
    path = tmp_path / "suite.yaml"
    if kind == "folder":
        path.mkdir()
    else:
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(path)  # opening it would block until a writer came
    assert "not a regular file" in error_of(path, plugins).message


# -- YAML that would exhaust time, memory or the stack ---------------------------------------------------------
def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_and_in_little_memory(
    write_suite: Write, plugins: Plugins, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_suite(BASE + _bomb())  # a billion "lol"s once expanded
    tracemalloc.start()
    start = time.perf_counter()
    try:
        err = error_of(path, plugins)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 50 * 2**20
    assert "aliases expand this YAML past 100,000 nodes" in err.message
    assert err.line == 10 and err.key == "a4"  # the first anchor that expands past the limit
    assert "alias bomb" in refused(path, capsys)


def test_a_few_aliases_are_fine(write_suite: Write, plugins: Plugins) -> None:
    path = write_suite(
        BASE + "  - {name: lowrank, grid: &ratios {target_ratio: [2.0, 4.0]}}\n"
        "  - {name: hypercompress, variant: released, <<: {}}\n"
    )
    assert count_cells(load_suite(path, plugins)) == 5


def test_merge_keys_override_without_being_duplicates(write_suite: Write, plugins: Plugins) -> None:
    path = write_suite(BASE.replace("  - name: prune\n", "  - &p {name: prune, sparsity: 0.5}\n  - <<: *p\n    sparsity: 0.8\n"))
    suite = load_suite(path, plugins)
    assert [c.stages[0].config.sparsity for c in expand(suite, plugins, "cpu")[1:]] == [0.5, 0.8]


def test_a_recursive_alias_is_refused(write_suite: Write, plugins: Plugins) -> None:
    err = error_of(write_suite(BASE + "extra: &x [1, *x]\n"), plugins)
    assert "recursive alias" in err.message and err.key == "extra" and err.line == 6


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_refused_before_the_stack_runs_out(
    write_suite: Write, plugins: Plugins, opener: str, capsys: pytest.CaptureFixture[str]
) -> None:
    closer = "]" if opener == "[" else "}"
    path = write_suite(BASE + "runtime: " + opener * 50_000 + closer * 50_000 + "\n")  # past Python's recursion limit
    err = error_of(path, plugins)
    assert f"nests deeper than {MAX_DEPTH} levels" in err.message and err.line == 6
    assert err.key.startswith("runtime")
    refused(path, capsys)


def test_non_scalar_keys_are_refused(write_suite: Write, plugins: Plugins) -> None:
    err = error_of(write_suite(BASE + "? [a, b]\n: 1\n"), plugins)
    assert "a key must be a plain name" in err.message and err.line == 6


def test_includes_are_bounded(write_suite: Write, plugins: Plugins) -> None:
    write_suite("seed: 1\n", name="leaf.yaml")
    path = write_suite(BASE + "include: [" + ", ".join(["leaf.yaml"] * MAX_FILES) + "]\n")
    err = error_of(path, plugins)
    assert f"more than {MAX_FILES} files" in err.message and err.key == "include"
    load_located(write_suite(BASE + "include: [leaf.yaml, leaf.yaml]\n", name="ok.yaml"))  # a few are fine


# -- duplicate keys --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        (BASE + "compressors:\n  - name: lowrank\n", 6, "compressors", 4),
        (BASE + "    sparsity: 0.5\n    sparsity: 0.8\n", 7, "compressors[0].sparsity", 6),
        (BASE + "runtime: {batch_size: 8, batch_size: 16}\n", 6, "runtime.batch_size", 6),
        (BASE.replace("models: [tiny:cnn]", "models:\n  - name: tiny:cnn\n    name: tiny:mlp"), 4, "models[0].name", 3),
    ],
)
def test_duplicate_keys_are_refused_at_the_second_one(
    write_suite: Write, plugins: Plugins, capsys: pytest.CaptureFixture[str], text: str, line: int, key: str, first: int
) -> None:
    path = write_suite(text)
    err = error_of(path, plugins)
    assert err.line == line and err.key == key
    assert f"duplicate key {key.split('.')[-1]!r}, already given on line {first}" in err.message
    assert f"suite.yaml:{line} {key}: duplicate key" in refused(path, capsys)


# -- grids past runtime.max_cells ------------------------------------------------------------------------------
def test_a_grid_past_max_cells_is_refused_before_configs_are_built(
    write_suite: Write, plugins: Plugins, monkeypatch: pytest.MonkeyPatch
) -> None:
    import b2s_bench.suites.cells

    def no_config(*args: object, **kwargs: object) -> None:
        raise AssertionError("a config was built")

    monkeypatch.setattr(b2s_bench.suites.cells, "build_config", no_config)
    values = ", ".join(str(i / 100) for i in range(60))
    path = write_suite(
        BASE + f"    grid: {{sparsity: [{values}], scope: [global, layer]}}\n"
        f"  - pipeline: [{{name: prune, grid: {{sparsity: [{values}]}}}}, "
        f"{{name: lowrank, grid: {{target_ratio: [{values}], energy: [{values}]}}}}]\n"
    )
    start = time.perf_counter()
    err = error_of(path, plugins)
    assert time.perf_counter() - start < 5
    assert err.key == "runtime.max_cells" and err.line == 7  # no max_cells in the file: the largest entry's line
    assert (
        "the grid makes 216,121 cells, more than runtime.max_cells (100,000); the largest entry, compressors[1] "
        "(line 7), makes 216,000"
    ) in err.message and "`runtime: {max_cells: 216121}`" in err.message


def test_max_cells_is_a_runtime_setting(write_suite: Write, plugins: Plugins) -> None:
    grid = BASE + "    grid: {sparsity: [0.1, 0.2, 0.3], scope: [global, layer]}\n"
    err = error_of(write_suite(grid + "runtime: {max_cells: 6}\n"), plugins)
    assert err.key == "runtime.max_cells" and err.line == 7 and "the grid makes 7 cells" in err.message
    suite = load_suite(write_suite(grid + "runtime: {max_cells: 7}\n"), plugins)
    assert suite.runtime.max_cells == 7 and suite.grid_size() == 7 == len(expand(suite, plugins, "cpu"))
    err = error_of(write_suite(grid + "runtime: {max_cells: 0}\n"), plugins)
    assert err.key == "runtime.max_cells" and "max_cells must be >= 1, got 0" in err.message


def test_the_count_follows_model_filters_seeds_and_the_baseline(write_suite: Write, plugins: Plugins) -> None:
    text = BASE.replace("models: [tiny:cnn]", "models: [tiny:cnn, {name: tiny:mlp, label: mlp}]") + (
        "    grid: {sparsity: [0.2, 0.4]}\n    seeds: 3\n  - {name: lowrank, models: [mlp], grid: {target_ratio: [2.0, 4.0]}}\n"
    )
    suite = load_suite(write_suite(text), plugins)
    assert count_cells(suite) == 2 + 2 * 2 * 3 + 2 == len(expand(suite, plugins, "cpu"))
    no_baseline = load_suite(write_suite(text + "baseline: false\n", name="b.yaml"), plugins)
    assert count_cells(no_baseline) == 14


# -- suite names -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape", "/etc/cron.d/x", "a/b", "a\\\\b", ".hidden", "..", "two words", "x" * 101, "''"])
def test_suite_names_cannot_leave_the_results_folder(
    write_suite: Write, plugins: Plugins, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_suite(BASE.replace("suite: s", f"suite: {name}"))
    err = error_of(path, plugins)
    assert err.key == "suite" and err.line == 1 and "may hold only letters, digits" in err.message
    refused(path, capsys)


def test_plain_suite_names_pass(write_suite: Write, plugins: Plugins) -> None:
    assert load_suite(write_suite(BASE.replace("suite: s", "suite: my_suite-1.0")), plugins).name == "my_suite-1.0"
    err = error_of(write_suite(BASE.replace("suite: s", "suite: my suite/v2")), plugins)
    assert "did you mean 'my-suite-v2'?" in err.message


# -- run folders -----------------------------------------------------------------------------------------------
def test_check_writable_accepts_new_and_existing_folders_and_leaves_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []  # nothing made, no probe left


def test_check_writable_refuses_a_file_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(UserError, match=f"cannot make the run folder {out}: {tmp_path / 'file'} is a file"):
            check_writable(out)


def test_check_writable_refuses_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match="is a broken link"):
        check_writable(tmp_path / "link" / "run")


def test_check_writable_refuses_a_folder_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def read_only(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(UserError) as err:
        check_writable(tmp_path / "run")
    assert f"cannot write the run folder {tmp_path / 'run'}: {tmp_path} is not writable (Permission denied)" in str(err.value)
    assert "choose another --out" in str(err.value)


def test_run_refuses_a_cache_that_is_a_file_before_it_starts(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("B2S_BENCH_CACHE", str(tmp_path / "cache"))
    assert run_cli("run", str(tiny_suite), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"cannot make the cache folder {tmp_path / 'cache'}: {tmp_path / 'cache'} is a file, not a folder" in err
    assert "set $B2S_BENCH_CACHE to a folder you can write" in err
    assert not (tmp_path / "run").exists()  # no cell ran, nothing was written


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_check_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(UserError, match="is not writable"):
            check_writable(locked / "run")
    finally:
        locked.chmod(0o755)


def test_report_primary_must_be_a_metric_of_the_suite(write_suite, plugins) -> None:  # noqa: ANN001
    from b2s_bench.errors import SuiteError
    from b2s_bench.suites.load import load_suite

    path = write_suite("""
        suite: primary
        models: [tiny:cnn]
        compressors: [prune]
        metrics: [bits]
        report: {primary: top1}
        """)
    with pytest.raises(SuiteError, match="report.primary: primary must be one of the suite's metrics"):
        load_suite(path, plugins)


def test_a_claim_timeout_under_three_heartbeats_is_refused(write_suite: Write, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(write_suite(BASE + "runtime:\n  batch_size: 8\n  claim_timeout: 2\n"), capsys)
    assert "suite.yaml:8 runtime.claim_timeout: claim_timeout must be at least 15 seconds (3 heartbeats" in err
    assert "got 2" in err
    assert run_cli("validate", str(write_suite(BASE + "runtime: {claim_timeout: 15}\n", name="ok.yaml"))) == 0


# -- mistakes that used to pass for missing prerequisites (exit 3) or crash the cells ----------------------------
def test_an_included_file_that_is_not_a_mapping_names_both_files(write_suite: Write, capsys: pytest.CaptureFixture[str]) -> None:
    write_suite("dataset: random\n", name="base.yaml")
    write_suite("- tiny:cnn\n- tiny:mlp\n", name="models.yaml")
    err = refused(write_suite("suite: s\ninclude:\n  - base.yaml\n  - models.yaml\n" + BASE.replace("suite: s\n", "")), capsys)
    assert "suite.yaml:4 include[1]: included file " in err and "models.yaml holds a list, not a mapping of suite keys" in err
    assert "or drop it from include:" in err
    err = refused(write_suite("include: models.yaml\n" + BASE, name="short.yaml"), capsys)
    assert "short.yaml:1 include: included file " in err and "models.yaml holds a list" in err


def test_an_unknown_model_of_a_known_source_is_a_suite_error(
    write_suite: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_suite(BASE.replace("tiny:cnn", "tiny:cnm"))
    err = refused(path, capsys)
    assert "suite.yaml:2 models[0].name: unknown tiny model 'cnm'; did you mean 'cnn'?" in err
    assert run_cli("run", str(path), "--out", str(tmp_path / "run")) == 2  # and `run` stops before any cell
    assert "unknown tiny model 'cnm'" in capsys.readouterr().err and not (tmp_path / "run" / "cells").exists()
    assert run_cli("run", str(path), "--out", str(tmp_path / "run"), "--keep-going") == 2  # nothing to skip to


def test_an_unregistered_weights_package_is_a_suite_error(write_suite: Write, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("timm")
    path = write_suite(BASE.replace("[tiny:cnn]", "[{name: timm:tf_efficientnet_lite0, weights: 'package:lite0_weights'}]"))
    err = refused(path, capsys)
    assert "suite.yaml:2 models[0].weights: unknown weights package 'lite0_weights'" in err


def _safetensors(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(tiny_state(), str(path))
    return path


def tiny_state() -> dict[str, object]:
    from b2s_bench.testing import tiny_model

    return dict(tiny_model(0).state_dict())


def _torch(path: Path, legacy: bool = False) -> Path:
    import torch

    torch.save(tiny_state(), path, _use_new_zipfile_serialization=not legacy)
    return path


def _zip_without_pickle(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda d: d / "passwd",
            "is not a checkpoint: expected a PyTorch checkpoint (torch.save: a zip archive holding "
            "data.pkl, or a pickle) or a safetensors file named *.safetensors, but it starts with "
            "b'root:x:0:0:root:'; fix `weights:`",
        ),
        (lambda d: d / "empty.pth", "is not a checkpoint: expected a PyTorch checkpoint"),
        (lambda d: _zip_without_pickle(d / "other.zip"), "is not a checkpoint: expected a PyTorch checkpoint"),
        (
            lambda d: _safetensors(d / "model.pth"),
            "holds safetensors data, but only a name ending in .safetensors is read as "
            "safetensors; rename it to model.safetensors",
        ),
        (
            lambda d: _torch(d / "model.safetensors"),
            "is a PyTorch checkpoint (torch.save), not safetensors; rename it to model.pth",
        ),
    ],
    ids=["text", "empty", "zip", "safetensors-as-pth", "torch-as-safetensors"],
)
def test_a_weights_file_that_is_not_a_checkpoint_is_refused_by_validate(
    write_suite: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], expected: str
) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    weights = make(tmp_path)
    path = write_suite(BASE.replace("[tiny:cnn]", f"[{{name: tiny:cnn, weights: {weights}}}]"))
    err = refused(path, capsys)
    assert f"suite.yaml:2 models[0].weights: weights file {str(weights)!r} " in err and expected in err, err
    assert run_cli("run", str(path), "--out", str(tmp_path / "run")) == 2  # no cell fails with an IndexError
    assert not (tmp_path / "run" / "cells").exists()


@pytest.mark.skipif(not os.path.isfile("/etc/passwd"), reason="no /etc/passwd here")
def test_etc_passwd_as_weights_is_refused(write_suite: Write, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(write_suite(BASE.replace("[tiny:cnn]", "[{name: tiny:cnn, weights: /etc/passwd}]")), capsys)
    assert "models[0].weights: weights file '/etc/passwd' is not a checkpoint" in err


def test_real_checkpoints_pass_the_format_check_and_load(
    write_suite: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from b2s_bench_plugins.sources.models import checkpoint_problem, load_checkpoint

    files = [
        _torch(tmp_path / "zip.pth"),
        _torch(tmp_path / "legacy.pt", legacy=True),
        _safetensors(tmp_path / "model.safetensors"),
    ]
    for weights in files:
        assert checkpoint_problem(str(weights)) is None, weights
        assert sorted(load_checkpoint(str(weights))) == sorted(tiny_state())
        assert (
            run_cli(
                "validate",
                str(
                    write_suite(
                        BASE.replace("[tiny:cnn]", f"[{{name: tiny:cnn, weights: {weights}}}]"), name=f"{weights.stem}.yaml"
                    )
                ),
            )
            == 0
        )
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(UserError, match="is not a checkpoint"):  # a file swapped after validate: the cell says why
        load_checkpoint(str(tmp_path / "passwd"))


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999", "2147483648"])
def test_a_seed_no_generator_takes_is_refused_before_the_run(
    write_suite: Write, capsys: pytest.CaptureFixture[str], seed: str
) -> None:
    """torch.manual_seed overflows past 2**64 and numpy's default_rng refuses negative seeds: such a seed passed
    validation and then failed every cell of the run; now it is exit 2 at its line."""
    err = refused(write_suite(f"seed: {seed}\n" + BASE), capsys)
    assert "suite.yaml:1 seed: seed must be an integer in 0..2147483647" in err and f"got {seed}" in err
    assert run_cli("validate", str(write_suite("seed: 2147483647\n" + BASE, name="ok.yaml"))) == 0


def test_two_different_models_under_one_label_are_refused(write_suite: Write, capsys: pytest.CaptureFixture[str]) -> None:
    """Reports key methods by the model's label: tiny:cnn and tiny:mlp both labelled x were pooled as two seeds of
    one method (sizes averaged across the models). Two entries of one label must be the same model."""
    err = refused(
        write_suite("""
suite: s
models: [{name: tiny:cnn, label: x}, {name: tiny:mlp, label: x}]
dataset: random
compressors: [prune]
"""),
        capsys,
    )
    assert "suite.yaml:2 models[1].label: label 'x' is already models[0]'s (tiny:cnn)" in err and "give each its own" in err
    same = write_suite("suite: s\nmodels: [tiny:cnn, tiny:cnn]\ndataset: random\ncompressors: [prune]\n", name="same.yaml")
    assert run_cli("validate", str(same)) == 0  # the same model twice is one model


def test_an_empty_grid_axis_gets_a_fix_that_is_valid_yaml(write_suite: Write, capsys: pytest.CaptureFixture[str]) -> None:
    """`grid: {bits: []}` was told "e.g. `bits: [[]]`", a list holding an empty list: no fix at all."""
    err = refused(write_suite(BASE + "    grid: {sparsity: []}\n"), capsys)
    assert "grid values must be a non-empty list, e.g. `sparsity: [VALUE, ...]`" in err and "[[]]" not in err
    err = refused(write_suite(BASE + "    grid: {sparsity: 0.5}\n", name="scalar.yaml"), capsys)
    assert "e.g. `sparsity: [0.5]`" in err
