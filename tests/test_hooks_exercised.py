"""The hooks no other test calls, called through a plugin on a fresh plugin manager, with their effect."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import b2s_bench as b2s


def test_b2s_register_reporters_reporter_writes_from_records(tmp_path: Path) -> None:
    def write(context: b2s.ReportContext) -> list[Path]:
        path = context.out_dir / "n.txt"
        b2s.write_atomic(path, f"{len(context.frame)} in {context.suite}\n")
        return [path]

    class Plugin:
        @b2s.hookimpl
        def b2s_register_reporters(self, register):  # noqa: ANN001, ANN201
            register(b2s.ReporterSpec(name="count_test", write=write))

    plugins = b2s.load_plugins(entry_points=False, extra=[("count-plugin", Plugin())])
    spec = plugins.reporters.get("count_test")
    context = b2s.ReportContext(out_dir=tmp_path, frame=pd.DataFrame({"status": ["ok", "ok"]}), metrics=[],
                                settings={}, suite="s")
    assert spec.write(context) == [tmp_path / "n.txt"]
    assert (tmp_path / "n.txt").read_text() == "2 in s\n"
    assert plugins.reporters.origin("count_test") == "count-plugin"


def test_b2s_register_executors_creates_with_the_run_options() -> None:
    made: list[b2s.ExecutorOptions] = []

    class Plugin:
        @b2s.hookimpl
        def b2s_register_executors(self, register):  # noqa: ANN001, ANN201
            register(b2s.ExecutorSpec(name="recording", create=lambda o: made.append(o) or o, rank=999))

    plugins = b2s.load_plugins(entry_points=False, extra=[("exec-plugin", Plugin())])
    options = b2s.ExecutorOptions(workers=3)
    assert plugins.executors.get("recording").create(options) is options
    assert made == [options]


def test_b2s_register_cli_options_registers_and_applies() -> None:
    seen: list[str | None] = []

    class Plugin:
        @b2s.hookimpl
        def b2s_register_cli_options(self, register):  # noqa: ANN001, ANN201
            register(b2s.CliOption("--test-flag", ("run",), seen.append))

    plugins = b2s.load_plugins(entry_points=False, extra=[("opt-plugin", Plugin())])
    options = {o.flag: o for o in plugins.cli_options.for_command("run")}
    assert "--test-flag" not in {o.flag for o in plugins.cli_options.for_command("report")}
    options["--test-flag"].apply("7")
    assert seen == ["7"]
