"""The house rules, checked: the core knows no plugin, plugins use only the public API, no circles."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import tomllib

import b2s_bench as b2s

ROOT = Path(__file__).resolve().parents[1]
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


#: the public faces: sub-packages with their own ``__all__``, which plugins may import from
FACES = ("b2s_bench.fitting", "b2s_bench.execution")


def test_plugins_import_nothing_from_the_core_but_its_public_api() -> None:
    offenders = []
    for path in [*PLUGINS.rglob("*.py"), *(ROOT / "examples").rglob("src/**/*.py")]:
        for module, level in _imports(path):
            if level == 0 and module.startswith("b2s_bench.") and module not in FACES:
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert offenders == []


def test_the_core_imports_no_plugin_module() -> None:
    # the executors (process, inline, Ray, Slurm) included: the core reaches plugins only through the registry
    offenders = [f"{path.relative_to(ROOT)}: {module}" for path in CORE.rglob("*.py")
                 for module, level in _imports(path) if level == 0 and module.split(".")[0] in ("plugins", "b2s_bench_plugins")]
    assert offenders == []


def test_every_public_name_resolves() -> None:
    missing = [name for name in b2s.__all__ if not hasattr(b2s, name)]
    assert missing == []


def _code_only(path: Path) -> str:
    """A file without comments and docstrings: names in prose are examples, names in code are knowledge."""
    text = path.read_text()
    docstrings = {(n.value.lineno, n.value.col_offset) for n in ast.walk(ast.parse(text))
                  if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start in docstrings):
            continue
        out.append(tok.string)
    return " ".join(out)


def test_no_core_file_names_a_built_in_plugin_or_metric() -> None:
    names = ["top1", "top5", "agreement", "kl", "weight_rel_error", "weight_psnr", "solver_gap", "imagenet", "quantize",
             "prune", "hypercompress", "big2small", "nern", "distill", "fashion-mnist", "fmnist", "photos",
             "zoo", "timm", "torchvision", "efficientnet",
             # the executors are plugins too: the core passes their settings and flags through unread
             "ray", "slurm", "submitit", "ray_executor", "slurm_executor", "inline", "pool", "address"]
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
        type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                     for stmt in block.body for n in ast.walk(stmt)}
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
                cycles.append([*stack[stack.index(dep):], dep])
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
    folders = {"b2s_bench." + ".".join(p.parent.relative_to(CORE).parts) if p.parent != CORE else "b2s_bench"
               for p in CORE.rglob("__init__.py")}
    folders |= {"b2s_bench_plugins" + "".join("." + x for x in p.parent.relative_to(PLUGINS).parts)
                for p in PLUGINS.rglob("__init__.py")}
    assert folders - listed == set()


#: The AST (docstrings and comments aside) of the core code that decides sizes, as of CORE_VERSION.
#: When this test fails, a change touched that code: if it can change any record's numbers, bump
#: b2s_bench.suites.cells.CORE_VERSION (every cell is then recomputed); either way, paste the new hash here.
SIZE_CODE = ("compression/sizes.py", "compression/contract.py", "compression/compressed.py", "compression/nested.py",
             "compression/artifact.py", "compression/packing.py")
SIZE_CODE_HASH = "c12ea4c1500a4f60"  # the move into compression/ (imports only): no record's numbers change


def _ast_hash(paths: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # docstrings are prose
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                body[0] = ast.Pass()
        h.update(ast.dump(tree).encode())
    return h.hexdigest()[:16]


def test_the_core_version_moves_with_the_code_that_decides_sizes() -> None:
    from b2s_bench.suites.cells import CORE_VERSION

    current = _ast_hash([CORE / name for name in SIZE_CODE])
    assert (CORE_VERSION, current) == ("2", SIZE_CODE_HASH), (
        f"the size-accounting code changed (hash {current}); bump CORE_VERSION if results can change, then set "
        f"SIZE_CODE_HASH = {current!r} in tests/test_architecture.py")
