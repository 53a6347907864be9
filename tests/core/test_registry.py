"""Plugins: entry points, duplicates, did-you-mean, broken plugins, local files, disabling."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest

import b2s_bench as b2s
from b2s_bench.errors import UnknownNameError
from b2s_bench.plugins import load_plugins
from b2s_bench.registry import DuplicateNameError, Registry

BUILTIN_COMPRESSORS = {"quantize", "prune"}


def test_builtins_come_through_the_entry_point_group(plugins: b2s.plugins.Plugins) -> None:
    names = {i.name for i in plugins.infos}
    assert {"b2s-quantize", "b2s-prune", "b2s-metrics", "b2s-models", "b2s-datasets", "b2s-reporters"} <= names
    assert all(i.origin.startswith("entry point") for i in plugins.infos)
    assert BUILTIN_COMPRESSORS <= set(plugins.compressors.names())
    assert plugins.compressors.origin("quantize") == "b2s-quantize"


def test_core_never_imports_plugins() -> None:
    core = Path(b2s.__file__).parent
    pattern = re.compile(r"^\s*(from|import)\s+(b2s_bench_plugins|plugins)\b|import_module\(.b2s_bench_plugins", re.M)
    offenders = [p for p in core.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_unknown_name_suggests_near_ones(plugins: b2s.plugins.Plugins) -> None:
    with pytest.raises(UnknownNameError) as err:
        plugins.compressors.get("quantise")
    assert "did you mean 'quantize'" in str(err.value)
    assert "available:" in str(err.value)


def test_duplicate_name_names_both_plugins() -> None:
    class A:
        @b2s.hookimpl
        def b2s_register_metrics(self, register):  # noqa: ANN001, ANN201
            register(b2s.MetricSpec("top1", "%", True, lambda ev: 0.0))

    plugins = load_plugins(extra=[("my-plugin", A())])
    with pytest.raises(DuplicateNameError) as err:  # the clashing name is unusable, naming both plugins
        plugins.metrics.get("top1")
    assert "b2s-metrics" in str(err.value) and "my-plugin" in str(err.value)
    assert "agreement" in plugins.metrics  # every other name still works
    assert any("registered twice" in f.error for f in plugins.failures)  # and `ls plugins` shows it


def test_registry_match_and_freeze() -> None:
    reg: Registry = Registry("thing")

    class S:
        def __init__(self, name: str):
            self.name = name

    for n in ("beta", "alpha", "alpine"):
        reg.register(S(n), "p")
    assert [s.name for s in reg.match("al*")] == ["alpha", "alpine"]
    assert [s.name for s in reg.match("pin")] == ["alpine"]
    assert reg.names() == ["alpha", "alpine", "beta"]
    reg.freeze()
    with pytest.raises(RuntimeError):
        reg.register(S("gamma"), "p")


def add_entry_point(monkeypatch: pytest.MonkeyPatch, name: str, module: str) -> None:
    """Make the b2s_bench entry-point group list one more entry point, as if another distribution had it."""
    real = md.entry_points

    def fake(**kw):  # noqa: ANN003, ANN202
        eps = list(real(**kw))
        if kw.get("group") == "b2s_bench":
            eps.append(md.EntryPoint(name, module, "b2s_bench"))
        return eps

    monkeypatch.setattr(md, "entry_points", fake)


def test_broken_entry_point_is_reported_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    add_entry_point(monkeypatch, "broken-plugin", "no_such_module_xyz")
    plugins = load_plugins()
    assert [f.name for f in plugins.failures if f.name == "broken-plugin"] == ["broken-plugin"]
    assert "No module named 'no_such_module_xyz'" in plugins.warnings()[-1] or any(
        "no_such_module_xyz" in w for w in plugins.warnings()
    )
    with pytest.raises(UnknownNameError) as err:
        plugins.compressors.get("nothing")
    assert "broken-plugin" in str(err.value)


def test_an_entry_point_name_taken_by_another_distribution_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    add_entry_point(monkeypatch, "b2s-quantize", "some_other_package")  # the built-in quantize plugin's name
    plugins = load_plugins()
    clash = [f for f in plugins.failures if f.name == "b2s-quantize"]
    # both are named, and neither loads: which one won would depend on sys.path order
    assert len(clash) == 2 and all("b2s-bench" in f.error and "some_other_package" in f.error for f in clash)
    assert "quantize" not in plugins.compressors and "prune" in plugins.compressors


LOCAL_PLUGIN = """
import b2s_bench as b2s

@b2s.hookimpl
def b2s_register_metrics(register):
    register(b2s.MetricSpec("answer", "", True, lambda ev: 42.0, description="a local metric"))
"""


def test_local_plugin_file_by_flag_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "myplugin.py"
    path.write_text(LOCAL_PLUGIN)
    assert "answer" in load_plugins(files=[str(path)]).metrics
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    plugins = load_plugins()
    assert "answer" in plugins.metrics
    assert any(i.name == "myplugin" and i.distribution == "local file" for i in plugins.infos)


def test_missing_or_broken_local_plugin_file_is_reported_like_an_installed_one(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_xyz\n")
    plugins = load_plugins(files=[str(tmp_path / "nope.py"), str(broken)])
    errors = {f.name: f.error for f in plugins.failures}
    assert "does not exist" in errors["nope"] and "no_such_module_xyz" in errors["broken"]
    assert "quantize" in plugins.compressors  # the other plugins are loaded


def test_disable_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "prune" not in load_plugins(disable=["b2s-prune"]).compressors
    monkeypatch.setenv("B2S_BENCH_DISABLE", "b2s-quantize")
    plugins = load_plugins()
    assert "quantize" not in plugins.compressors and "b2s-quantize" in plugins.disabled
