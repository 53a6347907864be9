"""Executor settings cross the core untouched: ``runtime.executor.NAME`` in a suite, checked by the
executor's own settings dataclass (file, line, key), and the executors' own flags (``--address``,
``--slurm KEY=VALUE``), registered by their plugins."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from b2s_bench_plugins.executors import ray_executor, slurm_executor
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench.cli.main import build_parser, plugin_option_values
from b2s_bench.errors import SuiteError
from b2s_bench.plugins import Plugins
from b2s_bench.suites.load import load_suite

BASE = """
suite: exec
models: [tiny:cnn]
dataset: {name: random, n: 8}
compressors: [{name: quantize, bits: 8}]
metrics: [bits]
"""


@pytest.fixture(autouse=True)
def _no_flags() -> Iterator[None]:
    """The executors keep their flags' values in their modules: every test starts and ends without any."""
    slurm_executor._apply_flags(None)
    ray_executor._apply_address(None)
    yield
    slurm_executor._apply_flags(None)
    ray_executor._apply_address(None)


def test_an_executor_section_is_checked_by_its_plugin_with_file_line_and_key(
    write_suite: Callable[..., Path], plugins: Plugins
) -> None:
    path = write_suite(BASE + "runtime:\n  executor:\n    slurm: {partition: gpu, jobs: 0}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path, plugins)
    assert info.value.key == "runtime.executor.slurm.jobs" and info.value.line == 8
    assert "jobs must be >= 1, got 0" in str(info.value)
    path = write_suite(BASE + "runtime:\n  executor:\n    ray: {adress: auto}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path, plugins)
    assert info.value.key == "runtime.executor.ray.adress" and "did you mean 'address'?" in str(info.value)


def test_an_unknown_executor_section_is_an_error_naming_the_known_ones(
    write_suite: Callable[..., Path], plugins: Plugins
) -> None:
    path = write_suite(BASE + "runtime: {executor: {slrum: {jobs: 2}}}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path, plugins)
    assert info.value.key == "runtime.executor.slrum" and "slurm" in str(info.value)


def test_the_section_reaches_the_executor_as_written_frozen_and_hashable(
    write_suite: Callable[..., Path], plugins: Plugins
) -> None:
    path = write_suite(BASE + "runtime: {executor: {slurm: {partition: gpu, submitit: {slurm_qos: [a, b]}}}}\n")
    runtime = load_suite(path, plugins).runtime
    section = runtime.executor["slurm"]
    assert dict(section) == {"partition": "gpu", "submitit": {"slurm_qos": ("a", "b")}}
    with pytest.raises(TypeError):
        section["partition"] = "cpu"  # type: ignore[index]
    assert hash(runtime) == hash(load_suite(path, plugins).runtime)  # no hand-written __hash__ needed
    assert copy.deepcopy(runtime) == runtime and hash(copy.deepcopy(runtime)) == hash(runtime)
    assert runtime.executor.thaw() == {"slurm": {"partition": "gpu", "submitit": {"slurm_qos": ["a", "b"]}}}  # type: ignore[attr-defined]
    settings = slurm_executor.settings_of(
        b2s.execution.ExecutorOptions(settings=b2s.build_config(slurm_executor.SlurmSettings, dict(section)))
    )
    assert settings.partition == "gpu" and dict(settings.submitit) == {"slurm_qos": ("a", "b")}


def test_the_old_spelling_still_works_with_a_deprecation_warning(write_suite: Callable[..., Path], plugins: Plugins) -> None:
    old = write_suite(BASE + "runtime:\n  slurm: {partition: gpu, jobs: 4}\n")
    with pytest.warns(
        FutureWarning,
        match=r"suite\.yaml:7: runtime\.slurm is deprecated.*runtime: \{executor: "
        r"\{slurm: \{\.\.\.\}\}\}",
    ):
        suite = load_suite(old, plugins)
    new = write_suite(BASE + "runtime: {executor: {slurm: {partition: gpu, jobs: 4}}}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns of nothing
        assert load_suite(new, plugins).runtime == suite.runtime


def test_slurm_flags_repeat_and_win_over_the_suite(plugins: Plugins) -> None:
    args = build_parser(plugins).parse_args(
        ["run", "--slurm", "partition=gpu", "--slurm", "time=600", "--slurm", "slurm_qos=high", "--address", "ray://head:10001"]
    )
    values = plugin_option_values(args, plugins)
    assert values["--slurm"] == ("partition=gpu", "time=600", "slurm_qos=high")  # a tuple: it travels in run plans
    slurm_executor._apply_flags(values["--slurm"])
    suite = slurm_executor.SlurmSettings(partition="cpu", jobs=3)
    settings = slurm_executor.settings_of(b2s.execution.ExecutorOptions(settings=suite))
    assert (settings.partition, settings.time, settings.jobs) == ("gpu", 600, 3)  # numbers stay numbers
    assert dict(settings.submitit) == {"slurm_qos": "high"}  # not a setting of ours: submitit's own
    ray_executor._apply_address(values["--address"])
    assert ray_executor.address_of(b2s.execution.ExecutorOptions(settings=ray_executor.RaySettings("auto"))) == "ray://head:10001"
    ray_executor._apply_address(None)
    assert ray_executor.address_of(b2s.execution.ExecutorOptions(settings=ray_executor.RaySettings("auto"))) == "auto"


def test_a_bad_slurm_flag_is_a_usage_error(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("run", str(tiny_suite), "--out", str(tmp_path / "run"), "--slurm", "partition") == 2
    assert "--slurm takes KEY=VALUE (e.g. --slurm partition=gpu), got 'partition'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_executor_options_and_run_options_are_keyword_only() -> None:
    from b2s_bench.execution.runner import RunOptions

    with pytest.raises(TypeError):
        b2s.execution.ExecutorOptions(2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        RunOptions(Path("out"), True)  # type: ignore[misc]
    with pytest.raises(ValueError, match="cannot repeat"):
        b2s.CliOption("--x", ("run",), print, switch=True, repeat=True)
