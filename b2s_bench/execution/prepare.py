"""Setting a run up, written once: load the plugins, apply their options, load the suite, resolve the
device, make the models' weights exist (when asked), expand the grid and select the cells.

``b2s-bench run`` and ``validate``, every worker process (:func:`b2s_bench.execution.worker.setup`) and a batch
job's cooperating run (:func:`b2s_bench.execution.runner.run_cells`) all go through :func:`prepare_run`, so
they agree on the cells (and so on the cell ids). The :class:`~b2s_bench.execution.runner.Runner` takes the
result and only runs it.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..plugins import Plugins, load_plugins
from ..suites.cells import Cell, expand, select
from ..suites.load import Suite, load_suite

if TYPE_CHECKING:
    import torch

__all__ = ["PreparedRun", "prepare_run", "prepare_models", "resolve_device", "resolve_device_type"]

#: the device files (glob patterns) a GPU that torch.cuda could use needs on Linux: NVIDIA's (nvidiactl,
#: nvidia0, ...), AMD ROCm's, WSL2's GPU. Any of them present means "ask torch".
GPU_DEVICE_FILES = ("/dev/nvidia*", "/dev/kfd", "/dev/dxg")


def _no_gpu_here() -> bool:
    """True when no GPU can be here, known without importing torch (1.3 s): on Linux, none of the device
    files a CUDA or ROCm GPU needs; on macOS, always (torch.cuda is never available there). False means
    "ask torch", never "there is one"."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    if sys.platform == "darwin":
        return True
    return sys.platform.startswith("linux") and not any(glob.glob(pattern) for pattern in GPU_DEVICE_FILES)


def _cuda_available() -> bool:
    if _no_gpu_here():
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device_type(requested: str) -> str:
    """``"cpu"`` or ``"cuda"`` for ``requested`` (auto, cpu or cuda); torch is imported only where a GPU
    might be present (a machine without GPU device files resolves auto to cpu without it)."""
    if requested not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    available = _cuda_available()
    if requested == "cuda" and not available:
        raise UserError("device cuda was asked for, but CUDA is not available here; use --device cpu or auto")
    return "cuda" if available else "cpu"


def resolve_device(requested: str) -> torch.device:
    import torch

    return torch.device(resolve_device_type(requested))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedRun:
    """A run, set up: what the runner runs and what a worker computes cells of.

    Attributes:
        plugins: the loaded plugins (their options applied).
        suite: the loaded suite.
        device_type: the resolved device's type, "cpu" or "cuda" (:attr:`device`: the torch.device).
        all_cells: every cell of the suite, in suite order (run.json lists them all, also under ``-k``).
        cells: the cells selected to run (``-k``, ``only``, less the skipped models' cells).
        plugin_options: ``(flag, value)`` of the plugin-owned command-line options, which travel to
            worker processes with the run plan.
    """

    plugins: Plugins
    suite: Suite
    device_type: str
    all_cells: tuple[Cell, ...]
    cells: tuple[Cell, ...]
    plugin_options: tuple[tuple[str, Any], ...] = ()

    @property
    def device(self) -> torch.device:
        """The resolved device (imports torch; :attr:`device_type` does not)."""
        import torch

        return torch.device(self.device_type)


def prepare_models(suite: Suite, plugins: Plugins, skip: Iterable[str] = (), log: Callable[[str], None] | None = None) -> None:
    """Make every model's weights exist here (a zoo-like source trains a model once, in this process),
    so that the cell ids, expanded afterwards, hash the weights that will be loaded. A model that cannot
    be prepared is only warned about: its cells fail with the full message when they build it."""
    say = log or (lambda msg: print(msg, file=sys.stderr))
    skipped = set(skip)
    for model in suite.models:
        if model.label in skipped:
            continue
        source = plugins.models.get(model.request.source)
        if source.prepare is not None:
            try:
                source.prepare(model.request)
            except Exception as e:
                say(f"warning: could not prepare {model.label}: {type(e).__name__}: {e}")


def prepare_run(
    suite: Suite | str | os.PathLike[str] | None,
    *,
    plugins: Plugins | None = None,
    plugin_files: Iterable[str] = (),
    plugin_disable: Iterable[str] = (),
    plugin_options: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    device: str = "auto",
    pattern: str | None = None,
    only: Iterable[str] | None = None,
    skip_models: Iterable[str] = (),
    models: bool = False,
    log: Callable[[str], None] | None = None,
) -> PreparedRun:
    """Set a run up (see the module's docstring).

    Args:
        suite: a suite file, a shipped suite's name, None for the embedded suite, or a loaded suite.
        plugins: plugins already loaded, whose options the caller applied (the CLI); None: load
            ``plugin_files`` less ``plugin_disable`` here and apply ``plugin_options`` to them.
        plugin_options: the plugin-owned options' values by flag, kept in the result either way.
        device: auto (the suite's device; CUDA when present), cpu or cuda.
        pattern: ``-k``: only cells whose "model method id" matches.
        only: only these cell ids.
        skip_models: model labels whose cells do not run (and whose weights are not prepared).
        models: prepare the models' weights (:func:`prepare_models`) before the grid is expanded;
            the process that runs a suite does, a worker computing cells of it does not.

    Raises:
        UserError: a plugin, the suite or the device cannot be used (SuiteError names the file and line).
    """
    options = tuple(sorted(dict(plugin_options).items()))
    if plugins is None:
        plugins = load_plugins(files=list(plugin_files), disable=list(plugin_disable))
        for flag, value in options:  # the plugin keeps each value where its own code reads it
            plugins.cli_options.registry.get(flag).option.apply(value)
    loaded = suite if isinstance(suite, Suite) else load_suite(suite, plugins)
    resolved = resolve_device_type(device if device != "auto" else loaded.device)
    skipped = set(skip_models)
    if models:
        prepare_models(loaded, plugins, skipped, log)
    all_cells = tuple(expand(loaded, plugins, resolved))
    cells = select(list(all_cells), pattern)
    if only is not None:
        wanted = set(only)
        cells = [c for c in cells if c.id in wanted]
    cells = [c for c in cells if c.model.label not in skipped]
    return PreparedRun(
        plugins=plugins, suite=loaded, device_type=resolved, all_cells=all_cells, cells=tuple(cells), plugin_options=options
    )
