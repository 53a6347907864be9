"""The hooks no other test calls, called through a plugin on a fresh plugin manager, with their effect."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import run_cli

import b2s_bench as b2s


def test_b2s_register_reporters_reporter_writes_from_records(tmp_path: Path) -> None:
    def write(context: b2s.reporting.ReportContext) -> list[Path]:
        path = context.out_dir / "n.txt"
        b2s.write_atomic(path, f"{len(context.frame)} in {context.suite}\n")
        return [path]

    class Plugin:
        @b2s.hookimpl
        def b2s_register_reporters(self, register):  # noqa: ANN001, ANN201
            register(b2s.ReporterSpec(name="count_test", write=write))

    plugins = b2s.execution.load_plugins(entry_points=False, extra=[("count-plugin", Plugin())])
    spec = plugins.reporters.get("count_test")
    context = b2s.reporting.ReportContext(
        out_dir=tmp_path, frame=pd.DataFrame({"status": ["ok", "ok"]}), metrics=[], settings={}, suite="s"
    )
    assert spec.write(context) == [tmp_path / "n.txt"]
    assert (tmp_path / "n.txt").read_text() == "2 in s\n"
    assert plugins.reporters.origin("count_test") == "count-plugin"


def test_b2s_register_executors_creates_with_the_run_options() -> None:
    made: list[b2s.execution.ExecutorOptions] = []

    class Plugin:
        @b2s.hookimpl
        def b2s_register_executors(self, register):  # noqa: ANN001, ANN201
            register(b2s.ExecutorSpec(name="recording", create=lambda o: made.append(o) or o, rank=999))

    plugins = b2s.execution.load_plugins(entry_points=False, extra=[("exec-plugin", Plugin())])
    options = b2s.execution.ExecutorOptions(workers=3)
    assert plugins.executors.get("recording").create(options) is options
    assert made == [options]


OPTION_PLUGIN = """
import pathlib
import b2s_bench as b2s


@b2s.hookimpl
def b2s_register_cli_options(register):
    out = pathlib.Path({out!r})
    register(b2s.CliOption("--test-flag", ("validate",), lambda value: out.write_text(repr(value))))
"""


def test_b2s_register_cli_options_adds_a_flag_whose_value_reaches_apply(tiny_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "applied.txt"
    plugin = tmp_path / "option_plugin.py"
    plugin.write_text(OPTION_PLUGIN.format(out=str(out)))
    assert run_cli("--plugin", str(plugin), "validate", str(tiny_suite), "--test-flag", "7") == 0
    assert out.read_text() == "'7'"
    assert run_cli("--plugin", str(plugin), "validate", str(tiny_suite)) == 0
    assert out.read_text() == "None"  # apply is called when the flag is not given, too
    with pytest.raises(SystemExit):  # only the subcommands the plugin names take it
        run_cli("--plugin", str(plugin), "ls", "compressors", "--test-flag", "7")
