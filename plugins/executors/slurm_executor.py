"""The Slurm executor, through submitit: a job array whose tasks share the run folder.

``pip install 'b2s-bench[slurm]'``. Each array task is a cooperating run of the same suite: it
claims cells in the shared run folder, computes them in an isolated worker process (crashes and
timeouts are recorded per cell), writes their records and, when it finishes the last cell, rebuilds
the reports. So tasks need no fixed share of the cells, a task that dies leaves its claims to go
stale and be taken over, and the driver may wait (the default) or ``--detach`` and leave; then
``b2s-bench status DIR`` follows the run.

Settings come from the suite's ``runtime: {slurm: {...}}`` (``partition``, ``time`` in minutes,
``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``jobs``: array size, ``array_parallelism``,
``cluster``: ``slurm``, or ``local`` to run the tasks as local processes, as the tests do), with
submitit's own names for anything else (``slurm_additional_parameters`` ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import b2s_bench as b2s

KNOWN = {"partition": "slurm_partition", "time": "timeout_min", "gpus_per_node": "gpus_per_node",
         "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "array_parallelism": "slurm_array_parallelism"}


def cooperate(plan: b2s.RunPlan, cell_ids: list[str], environment: dict[str, str]) -> dict[str, Any]:
    """One array task: run the given cells of the plan with claims, in a worker process, and rebuild the
    reports when the whole suite is done."""
    import os

    os.environ.update(environment)
    return b2s.run_cells(plan, cell_ids, executor="process", workers=1)  # a crash or a timeout fails only its cell


class SlurmExecutor:
    claims_cells = True  # the array tasks claim cells and write records in the shared folder

    def __init__(self, options: b2s.ExecutorOptions):
        import submitit

        self.options = options
        self.settings = dict(options.slurm)
        self.capacity = 10**9  # everything is handed to the array at once
        self._submitit = submitit
        self._tasks: dict[str, b2s.CellTask] = {}
        self._jobs: list[Any] = []
        self._submitted = False
        self._started = time.time()

    def submit(self, task: b2s.CellTask) -> None:
        self._tasks[task.cell_id] = task

    def _submit_array(self) -> None:
        tasks = list(self._tasks.values())
        plan = tasks[0].plan
        folder = Path(plan.out_dir) / "slurm"
        cluster = self.settings.pop("cluster", None)
        jobs = int(self.settings.pop("jobs", min(len(tasks), 8)))
        executor = self._submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"name": f"b2s-{Path(plan.suite_file).stem}"}
        for key, value in self.settings.items():
            params[KNOWN.get(key, key)] = value
        executor.update_parameters(**params)
        ids = [t.cell_id for t in tasks]
        env = b2s.b2s_environment()
        self._jobs = executor.map_array(cooperate, [plan] * jobs, [ids] * jobs, [env] * jobs)
        self.options.log(f"submitted {len(self._jobs)} array tasks ({', '.join(j.job_id for j in self._jobs[:3])}"
                         f"{' ...' if len(self._jobs) > 3 else ''}); logs in {folder}")
        self._submitted = True

    def poll(self, timeout: float) -> list[b2s.CellOutcome]:
        if not self._tasks:
            return []
        if not self._submitted:
            self._submit_array()
            return []
        outcomes = self._recorded()
        if not outcomes and self._tasks and all(job.done() for job in self._jobs):
            outcomes = self._lost()
        if not outcomes:
            time.sleep(min(max(timeout, 0.0), 2.0))
        return outcomes

    def _recorded(self) -> list[b2s.CellOutcome]:
        found = []
        for cell_id, task in list(self._tasks.items()):
            record = b2s.read_record(b2s.cell_path(task.plan.out_dir, cell_id), cell_id)
            if record is not None and record.get("finished_at", "") >= _iso(self._started):
                del self._tasks[cell_id]
                found.append(b2s.CellOutcome(cell_id, record, None, record["environment"].get("host", ""),
                                             record["timings"].get("total", 0.0), stored=True))
        return found

    def _lost(self) -> list[b2s.CellOutcome]:
        """Every task ended and these cells have no record: say why the jobs ended."""
        reasons = []
        for job in self._jobs:
            try:
                job.result()
            except Exception as e:
                reasons.append(f"job {job.job_id}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        why = "; ".join(reasons[:3]) or "the array ended without computing it"
        lost = [b2s.CellOutcome(cid, None, f"Slurm array task failed: {why}", "", 0.0) for cid in self._tasks]
        self._tasks.clear()
        return lost

    def active(self) -> list[b2s.ActiveCell]:
        return []

    def cancel(self, cell_id: str) -> None:
        self._tasks.pop(cell_id, None)

    def close(self) -> None:
        if not self._submitted or self.options.detach:
            return  # detached: the array runs on
        for job in self._jobs:
            if self._tasks:  # stopped early (Ctrl-C, an error): the array must not run on unwatched
                job.cancel(check=False)
            try:  # reap the tasks (a task finishing its report after the last record)
                job.result()
            except Exception:  # its failure was reported through the cells it did not compute
                pass


def _iso(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds - 1, dt.timezone.utc).isoformat(timespec="seconds")


def _create(options: b2s.ExecutorOptions) -> SlurmExecutor:
    return SlurmExecutor(options)


@b2s.hookimpl
def b2s_register_executors(register: Callable[[b2s.ExecutorSpec], None]) -> None:
    register(b2s.ExecutorSpec("slurm", _create, "a Slurm job array through submitit (runtime.slurm: partition, time, "
                              "gpus_per_node, mem_gb, jobs); tasks share the run folder; --detach to leave",
                              rank=60, detaches=True, requires="install it with `pip install 'b2s-bench[slurm]'`"))
