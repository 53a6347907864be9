"""Registering without importing (issue 20): ``b2s.lazy`` references, and the commands that compute nothing
(``validate``, a resumed run whose cells are all done) never importing torch or pandas."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench.execution import prepare
from b2s_bench.plugins import load_plugins


def _fresh_python(code: str, *argv: str) -> str:
    """What ``code`` printed, run in a new interpreter (a test process has torch loaded already)."""
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_lazy_reference_imports_its_module_on_the_first_call_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lazy_pkg").mkdir()
    (tmp_path / "lazy_pkg" / "__init__.py").write_text("")
    (tmp_path / "lazy_pkg" / "heavy.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = b2s.lazy(".heavy:double", "lazy_pkg")
    assert ref.ref == "lazy_pkg.heavy:double" and not ref.loaded
    assert "lazy_pkg.heavy" not in sys.modules
    assert ref(21) == 42 and ref.loaded and "lazy_pkg.heavy" in sys.modules
    assert ref == b2s.lazy("lazy_pkg.heavy:double") and repr(ref) == "lazy('lazy_pkg.heavy:double')"


def test_lazy_exports_import_a_re_exported_name_when_first_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "exports_pkg"
    pkg.mkdir()
    line = "import b2s_bench as b2s\n__getattr__, __dir__ = b2s.lazy_exports(__name__, globals(), {{'double': '{}'}})\n"
    (pkg / "__init__.py").write_text(line.format(".heavy"))  # a package: relative to itself
    (pkg / "facade.py").write_text(line.format(".heavy"))  # a module: relative to its package
    (pkg / "heavy.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import exports_pkg  # type: ignore[import-not-found]
    import exports_pkg.facade  # type: ignore[import-not-found]

    assert "exports_pkg.heavy" not in sys.modules and "double" in dir(exports_pkg)
    assert exports_pkg.facade.double(2) == exports_pkg.double(2) == 4 and "exports_pkg.heavy" in sys.modules
    with pytest.raises(AttributeError, match="has no attribute 'triple'"):
        exports_pkg.triple  # noqa: B018


def test_a_bad_lazy_reference_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="'package.module:name'"):
        b2s.lazy("json.dumps")
    with pytest.raises(ValueError, match="needs package="):
        b2s.lazy(".decoder:JSONDecoder")
    with pytest.raises(ImportError, match="'json:no_such_name' does not resolve"):
        b2s.lazy("json:no_such_name")("x")
    assert b2s.lazy(".decoder:JSONDecoder", "json").resolve().__name__ == "JSONDecoder"


@dataclasses.dataclass(frozen=True)
class _Cfg:
    pass


def _spec(**kwargs: object) -> b2s.CompressorSpec:
    return b2s.CompressorSpec("mine", "other", "data-free", _Cfg, b2s.lazy("json:dumps"), **kwargs)  # type: ignore[arg-type]


def test_a_lazily_named_code_declares_its_kind_and_the_class_must_agree() -> None:
    with pytest.raises(TypeError, match="needs its kind"):
        _spec(codes=(b2s.lazy("b2s_bench_plugins.compressors.quantize.codes:UniformCode"),))
    wrong = _spec(codes=(b2s.lazy("b2s_bench_plugins.compressors.quantize.codes:UniformCode", kind="mine.uniform"),))
    assert wrong.code_kinds() == ("mine.uniform",)  # read without importing the class
    with pytest.raises(TypeError, match="registered with kind 'mine.uniform' but the class says 'quantize.uniform'"):
        wrong.code_classes()


def test_every_built_in_code_kind_declared_lazily_is_its_class_kind() -> None:
    plugins = load_plugins()
    for spec in plugins.compressors:
        assert tuple(c.kind for c in spec.code_classes()) == spec.code_kinds(), spec.name
    assert plugins.code_types()["quantize.uniform"].__name__ == "UniformCode"  # classes, not references
    quantize = plugins.compressors.get("quantize")
    uniform = {c.kind: c for c in quantize.codes}["quantize.uniform"]  # a reference answers for its class
    assert uniform.restore == quantize.code_classes()[0].restore and uniform.wraps_codes is False


def test_loading_every_plugin_imports_no_torch_nor_pandas() -> None:
    code = (
        "import sys\nfrom b2s_bench.plugins import load_plugins\nplugins = load_plugins()\n"
        "print([f.error for f in plugins.failures])\n"
        "print(len(plugins.compressors), sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))"
    )
    failures, loaded = _fresh_python(code).strip().splitlines()
    assert failures == "[]"
    count, modules = loaded.split(" ", 1)
    assert int(count) >= 14 and modules == "[]"


CPU_SUITE = """
suite: lazy
device: cpu
models:
  - tiny:cnn
dataset: {name: random, n: 16}
compressors:
  - {name: quantize, bits: 4}
  - {name: prune, sparsity: 0.5}
"""

_CLI = (
    "import sys\nimport b2s_bench.cli.main as m\nrc = m.main(sys.argv[1:])\n"
    "print('LOADED', sorted(n for n in ('torch', 'pandas') if n in sys.modules))\nsys.exit(rc)"
)


def test_validate_and_a_resumed_finished_run_import_neither_torch_nor_pandas(
    write_suite: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite, out = write_suite(CPU_SUITE), tmp_path / "run"
    printed = _fresh_python(_CLI, "validate", str(suite))
    assert "lazy" in printed and "| ready" in printed and printed.endswith("LOADED []\n")
    assert run_cli("run", str(suite), "--out", str(out)) == 0  # computes the cells, writes the reports
    first = capsys.readouterr().out
    resumed = _fresh_python(_CLI, "run", str(suite), "--out", str(out))
    assert resumed == first + "LOADED []\n"  # the kept summary, word for word
    (out / ".summary.txt").unlink()  # without it the summary is made again (pandas loads then)
    assert _fresh_python(_CLI, "run", str(suite), "--out", str(out)) == first + "LOADED ['pandas']\n"


def test_auto_resolves_to_cpu_without_torch_where_no_gpu_can_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (sys.platform.startswith("linux") or sys.platform == "darwin"):
        pytest.skip("the GPU device files are known on Linux; macOS has no CUDA")
    monkeypatch.setattr(prepare, "GPU_DEVICE_FILES", (str(tmp_path / "nvidia*"),))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` would raise
    assert prepare.resolve_device_type("auto") == "cpu" and prepare.resolve_device_type("cpu") == "cpu"
    with pytest.raises(b2s.UserError, match="CUDA is not available here"):
        prepare.resolve_device_type("cuda")
    with pytest.raises(b2s.UserError, match="must be auto, cpu or cuda"):
        prepare.resolve_device_type("gpu")
    if sys.platform.startswith("linux"):  # a GPU's device file here: torch is asked (and, blocked, raises)
        (tmp_path / "nvidia0").touch()
        with pytest.raises(ImportError):
            prepare.resolve_device_type("auto")
