"""The house rules, checked: the core knows no plugin, plugins use only the public API, no circles."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import tomllib

import b2s_bench as b2s

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "b2s_bench"
PLUGINS = ROOT / "plugins"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in a file, relative ones as written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


#: the public faces: modules with their own ``__all__``, beside the top level
FACES = tuple(f"b2s_bench.{face}" for face in b2s._FACES)
#: the specs, which the top level and their kind's face both offer
SPECS = {"CompressorSpec", "ModelSource", "DatasetSpec", "TaskSpec", "MetricSpec", "ReporterSpec", "ExecutorSpec"}


def _public_import_problems(path: Path) -> list[str]:
    """Every use of the core in ``path`` that is not the public API, in any form: ``import b2s_bench.X``,
    ``from b2s_bench import x``, ``from b2s_bench.X import x`` and ``b2s.x`` / ``b2s.X.x`` attributes."""
    import importlib

    problems = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("b2s_bench.") and a.name not in FACES:
                    problems.append(f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("b2s_bench"):
            if node.module.startswith("b2s_bench_"):
                continue
            if node.module != "b2s_bench" and node.module not in FACES:
                problems.append(f"from {node.module} import ...")
                continue
            exported = set(importlib.import_module(node.module).__all__)
            problems += [f"from {node.module} import {a.name}" for a in node.names if a.name not in exported]
    code = _code_only(path)
    for face, name in re.findall(r"(?<![\w.])b2s\s*\.\s*(?:(" + "|".join(b2s._FACES) + r")\s*\.\s*)?(\w+)", code):
        module = importlib.import_module(f"b2s_bench.{face}" if face else "b2s_bench")
        if name not in module.__all__:
            problems.append(f"b2s.{face + '.' if face else ''}{name}")
    return problems


def test_plugins_use_only_the_public_api_in_every_form() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {problem}"
        for path in [*PLUGINS.rglob("*.py"), *(ROOT / "examples").rglob("src/**/*.py")]
        for problem in _public_import_problems(path)
    ]
    assert offenders == []


def test_the_guard_catches_every_form(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import b2s_bench as b2s\nimport b2s_bench.store\nfrom b2s_bench import leaderboards, Code, reporting\n"
        "from b2s_bench.store import records\nfrom b2s_bench.reporting import RunStore, Record\n"
        "x = b2s.fit_network\ny = b2s.fitting.train_loop\nz = b2s.fitting.nothing\n"
    )
    assert _public_import_problems(bad) == [
        "import b2s_bench.store",
        "from b2s_bench import leaderboards",
        "from b2s_bench.store import ...",
        "from b2s_bench.reporting import RunStore",
        "b2s.fit_network",
        "b2s.fitting.nothing",
    ]


def test_the_faces_share_no_names_but_the_specs() -> None:
    import importlib

    owners: dict[str, list[str]] = {}
    for module in ("b2s_bench", *FACES):
        for name in importlib.import_module(module).__all__:
            owners.setdefault(name, []).append(module)
    shared = {name: where for name, where in owners.items() if len(where) > 1 and name not in SPECS}
    assert shared == {}
    assert len(b2s.__all__) - len(b2s._FACES) - 1 <= 46  # the contract stays small: about 40 names and a spec per kind


def test_moved_names_still_answer_with_a_warning_that_names_their_new_home() -> None:
    import warnings

    for name, home in b2s._MOVED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(b2s, name)
        assert value is not None
        assert [str(w.message) for w in caught] == [
            f"b2s_bench.{name} has moved: use {home} (the old name goes in the next release)"
        ], name
        assert name not in dir(b2s)


def test_importing_the_api_or_a_face_loads_neither_torch_nor_pandas() -> None:
    import subprocess
    import sys

    for module in ("b2s_bench", *(face for face in FACES if face != "b2s_bench.testing")):  # its tiny models are torch
        code = f"import sys, {module}; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]", module


def test_the_core_imports_no_plugin_module() -> None:
    # the executors (process, inline, Ray, Slurm) included: the core reaches plugins only through the registry
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in CORE.rglob("*.py")
        for module, level in _imports(path)
        if level == 0 and module.split(".")[0] in ("plugins", "b2s_bench_plugins")
    ]
    assert offenders == []


def test_every_public_name_resolves() -> None:
    missing = [name for name in b2s.__all__ if not hasattr(b2s, name)]
    assert missing == []


def _code_only(path: Path) -> str:
    """A file without comments and docstrings: names in prose are examples, names in code are knowledge."""
    text = path.read_text()
    docstrings = {
        (n.value.lineno, n.value.col_offset)
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
    }
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start in docstrings):
            continue
        out.append(tok.string)
    return " ".join(out)


def test_no_core_file_names_a_built_in_plugin_or_metric() -> None:
    names = [
        "top1",
        "top5",
        "agreement",
        "kl",
        "weight_rel_error",
        "weight_psnr",
        "solver_gap",
        "imagenet",
        "quantize",
        "prune",
        "hypercompress",
        "big2small",
        "nern",
        "distill",
        # the entropy stage's coders ("entropy" itself is also a generic family name, in tracks.py)
        "huffman",
        "constriction",
        "fashion-mnist",
        "fmnist",
        "photos",
        "zoo",
        "timm",
        "torchvision",
        "efficientnet",
        # the executors are plugins too: the core passes their settings and flags through unread
        "ray",
        "slurm",
        "submitit",
        "ray_executor",
        "slurm_executor",
        "inline",
        "pool",
        "address",
    ]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)
    offenders = []
    for path in CORE.rglob("*.py"):
        found = pattern.findall(_code_only(path))
        if found:
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(set(found))}")
    assert offenders == []


def _module_graph(package_root: Path, package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in package_root.rglob("*.py"):
        rel = path.relative_to(package_root).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        is_pkg = path.name == "__init__.py"
        deps = set()
        tree = ast.parse(path.read_text())
        type_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:  # imports for type checkers only never run
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
                deps.add(target)
                if not node.module:
                    deps.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
                deps.add(node.module)
        graph[name] = deps
    return {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_circles_in_core_or_plugins() -> None:
    # a package's __init__ importing its own modules is how a package is assembled, not a circle
    for root, name in ((CORE, "b2s_bench"), (PLUGINS, "b2s_bench_plugins")):
        graph = _module_graph(root, name)
        cycles = [c for c in _cycles(graph) if not any(c[i + 1].startswith(c[i] + ".") for i in range(len(c) - 1))]
        assert cycles == [], f"import circles in {name}: {cycles}"


def test_every_package_folder_is_listed_for_installation() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        "b2s_bench." + ".".join(p.parent.relative_to(CORE).parts) if p.parent != CORE else "b2s_bench"
        for p in CORE.rglob("__init__.py")
    }
    folders |= {
        "b2s_bench_plugins" + "".join("." + x for x in p.parent.relative_to(PLUGINS).parts) for p in PLUGINS.rglob("__init__.py")
    }
    assert folders - listed == set()


#: The AST (docstrings and comments aside) of the core code that decides sizes, as of CORE_VERSION.
#: When this test fails, a change touched that code: if it can change any record's numbers, bump
#: b2s_bench.suites.cells.CORE_VERSION (every cell is then recomputed); either way, paste the new hash here.
SIZE_CODE = (
    "compression/sizes.py",
    "compression/contract.py",
    "compression/compressed.py",
    "compression/codes.py",
    "compression/packing.py",
)
# contract.py's stored-decode and baseline checks fail only cells whose code decodes what it does not store or whose
# compressor names its own fp32 baseline: no ok record's numbers change
SIZE_CODE_HASH = "21ece4002244ca30"  # the checks share each code's tensors() (StoredTensors): the same checks, no record changes; conform_shapes: top-level parameters and attention widths; per-layer activation bits (8 bits of metadata each, only where the activations stage sets them); per-token activation quantizers (token_activations, only smoothquant dynamic, whose version moved) and activation quantizers installed after a deployed replacement (only a deployed model's latency): no record's sizes or scores change


def _ast_hash(paths: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # docstrings are prose
            body = getattr(node, "body", None)
            if (
                isinstance(body, list)
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body[0] = ast.Pass()
        h.update(ast.dump(tree).encode())
    return h.hexdigest()[:16]


def test_the_core_version_moves_with_the_code_that_decides_sizes() -> None:
    from b2s_bench.suites.cells import CORE_VERSION

    current = _ast_hash([CORE / name for name in SIZE_CODE])
    assert (CORE_VERSION, current) == ("2", SIZE_CODE_HASH), (
        f"the size-accounting code changed (hash {current}); bump CORE_VERSION if results can change, then set "
        f"SIZE_CODE_HASH = {current!r} in tests/core/test_architecture.py"
    )
