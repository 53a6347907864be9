"""The Ray executor: each cell is a Ray task, on a local Ray instance or a cluster (``--address``, or
the suite's ``runtime: {executor: {ray: {address: ...}}}``; the flag wins).

``pip install 'b2s-bench[ray]'``. A task asks for ``num_gpus=1`` when the run is on CUDA and for
``runtime.threads`` CPUs (1 when unset). Ray reuses its worker processes, so a worker loads the
plugins and the suite once. Records come back to the driver, which writes them into the run folder
(the folder need not be shared). A task whose worker dies is recorded with Ray's reason; one that
runs past the cell timeout is cancelled (force) and recorded "timed out".
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable
from typing import Any

import b2s_bench as b2s


@dataclasses.dataclass(frozen=True)
class RaySettings:
    """``runtime: {executor: {ray: {...}}}`` of a suite."""

    address: str | None = None  # a cluster (ray://head:10001, auto); None: a Ray instance started here


_ADDRESS: list[str | None] = [None]  # `--address` of this command (see _apply_address)


def _apply_address(value: str | None) -> None:
    """``--address``: kept here, in the CLI's process and in every worker; it wins over the suite's."""
    _ADDRESS[0] = value


def address_of(options: b2s.execution.ExecutorOptions) -> str | None:
    settings = options.settings
    suite = settings.address if isinstance(settings, RaySettings) else dict(settings).get("address")
    return _ADDRESS[0] or suite


def _execute(plan: b2s.execution.RunPlan, cell_id: str) -> tuple[dict[str, Any], str]:
    return b2s.execution.execute_cell(plan, cell_id), socket.gethostname()


class RayExecutor:
    def __init__(self, options: b2s.execution.ExecutorOptions):
        import ray

        self.ray = ray
        self.options = options
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            init: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": b2s.execution.b2s_environment()},
            }
            address = address_of(options)
            if address:
                init["address"] = address
            elif options.workers:
                init["num_cpus"] = options.workers * (options.threads or 1)
            ray.init(**init)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        per_task = options.threads or 1
        self.capacity = options.workers or max(1, gpus if options.device == "cuda" and gpus else cpus // per_task)
        self._remote = ray.remote(_execute)
        self._tasks: dict[Any, tuple[b2s.execution.CellTask, float]] = {}

    def submit(self, task: b2s.execution.CellTask) -> None:
        ref = self._remote.options(
            num_cpus=self.options.threads or 1, num_gpus=1 if task.wants_cuda else 0, max_retries=0
        ).remote(task.plan, task.cell_id)
        self._tasks[ref] = (task, time.time())

    def poll(self, timeout: float) -> list[b2s.execution.CellOutcome]:
        if not self._tasks:
            return []
        ready, _ = self.ray.wait(list(self._tasks), num_returns=len(self._tasks), timeout=max(timeout, 0.0))
        outcomes = [self._outcome(ref) for ref in ready]
        now = time.time()
        for ref, (task, started) in list(self._tasks.items()):
            if task.cell_timeout and now - started > task.cell_timeout:
                self.ray.cancel(ref, force=True)
                del self._tasks[ref]
                outcomes.append(
                    b2s.execution.CellOutcome(task.cell_id, None, f"timed out after {task.cell_timeout:g} s", "", now - started)
                )
        return outcomes

    def _outcome(self, ref: Any) -> b2s.execution.CellOutcome:
        task, started = self._tasks.pop(ref)
        seconds = time.time() - started
        try:
            record, host = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the worker died (a signal, sys.exit, out of memory)
            cause = " ".join(str(e).split())[:400]
            return b2s.execution.CellOutcome(
                task.cell_id, None, f"the Ray worker failed: {type(e).__name__}: {cause}", "", seconds
            )
        return b2s.execution.CellOutcome(task.cell_id, record, None, host, seconds)

    def active(self) -> list[b2s.execution.ActiveCell]:
        return [b2s.execution.ActiveCell(t.cell_id, t.name, "ray", s) for t, s in self._tasks.values()]

    def cancel(self, cell_id: str) -> None:
        for ref, (task, _) in list(self._tasks.items()):
            if task.cell_id == cell_id:
                self.ray.cancel(ref, force=True)
                del self._tasks[ref]

    def close(self) -> None:
        for ref in list(self._tasks):
            self.ray.cancel(ref, force=True)
        self._tasks.clear()
        if self._owns_ray:
            self.ray.shutdown()


def _create(options: b2s.execution.ExecutorOptions) -> RayExecutor:
    return RayExecutor(options)


@b2s.hookimpl
def b2s_register_executors(register: Callable[[b2s.ExecutorSpec], None]) -> None:
    register(
        b2s.ExecutorSpec(
            "ray",
            _create,
            "each cell a Ray task, on a local Ray or a cluster (--address); records come back to this process",
            rank=50,
            requires="install it with `pip install 'b2s-bench[ray]'`",
            settings=RaySettings,
        )
    )


@b2s.hookimpl
def b2s_register_cli_options(register: Callable[[b2s.CliOption], None]) -> None:
    register(
        b2s.CliOption(
            "--address",
            ("run",),
            _apply_address,
            "a Ray cluster's address (--executor ray), over runtime.executor.ray.address",
            metavar="ADDRESS",
        )
    )
