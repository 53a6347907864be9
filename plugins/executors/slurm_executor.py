"""The Slurm executor, through submitit: a job array whose tasks share the run folder.

``pip install 'b2s-bench[slurm]'``. Each array task is a cooperating run of the same suite: it
claims cells in the shared run folder, computes them in an isolated worker process (crashes and
timeouts are recorded per cell), writes their records and, when it finishes the last cell, rebuilds
the reports. So tasks need no fixed share of the cells, a task that dies leaves its claims to go
stale and be taken over, and the driver may wait (the default) or ``--detach`` and leave; then
``b2s-bench status DIR`` follows the run.

Settings (:class:`SlurmSettings`) come from the suite's ``runtime: {executor: {slurm: {...}}}``, and
``--slurm KEY=VALUE`` (repeatable) overrides them; a key that is not a setting of its own is one of
submitit's parameters (``slurm_additional_parameters`` ...), which the suite writes under
``submitit:``. The core passes these settings through without reading them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import b2s_bench as b2s

#: Our names of submitit's parameters.
KNOWN = {
    "partition": "slurm_partition",
    "time": "timeout_min",
    "gpus_per_node": "gpus_per_node",
    "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb",
    "array_parallelism": "slurm_array_parallelism",
}


@dataclasses.dataclass(frozen=True)
class SlurmSettings:
    """``runtime: {executor: {slurm: {...}}}`` of a suite."""

    cluster: str | None = None  # slurm (default: what submitit finds), or local: the tasks as local processes
    partition: str | None = None
    time: int | None = None  # minutes per array task
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    jobs: int | None = None  # array tasks (default: the cells, at most 8)
    array_parallelism: int | None = None  # array tasks running at once
    submitit: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # submitit's parameters, by its names

    def __post_init__(self) -> None:
        for key in ("time", "gpus_per_node", "cpus_per_task", "mem_gb", "jobs", "array_parallelism"):
            value = getattr(self, key)
            if value is not None and value < (0 if key == "gpus_per_node" else 1):
                raise b2s.ConfigError(f"slurm {key} must be {'>= 0' if key == 'gpus_per_node' else '>= 1'}, got {value}", key)
        unknown = set(self.submitit) & {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise b2s.ConfigError(
                f"slurm submitit: {sorted(unknown)} are settings of their own; write them next to submitit:, not under it",
                "submitit",
            )


_FLAGS: dict[str, Any] = {}  # `--slurm KEY=VALUE` of this command (see _apply_flags)


def _apply_flags(values: tuple[str, ...] | None) -> None:
    """``--slurm KEY=VALUE`` (repeatable), values read as YAML scalars (numbers stay numbers); kept here
    and laid over the suite's settings when the executor is created. A new command starts over."""
    import yaml

    _FLAGS.clear()
    for pair in values or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise b2s.UserError(f"--slurm takes KEY=VALUE (e.g. --slurm partition=gpu), got {pair!r}")
        _FLAGS[key.strip()] = yaml.safe_load(value) if value else ""


def settings_of(options: b2s.execution.ExecutorOptions) -> SlurmSettings:
    """The suite's settings with the ``--slurm`` flags over them (a flag that names no setting of ours
    is a submitit parameter)."""
    ours = {f.name for f in dataclasses.fields(SlurmSettings)} - {"submitit"}
    base = (
        options.settings
        if isinstance(options.settings, SlurmSettings)
        else b2s.build_config(SlurmSettings, dict(options.settings), owner="slurm")
    )
    values = {
        **{k: v for k, v in dataclasses.asdict(base).items() if k != "submitit"},
        **{k: v for k, v in _FLAGS.items() if k in ours},
        "submitit": {**base.submitit, **{k: v for k, v in _FLAGS.items() if k not in ours}},
    }
    try:
        return b2s.build_config(SlurmSettings, values, owner="slurm")
    except b2s.ConfigError as e:
        raise b2s.UserError(f"--slurm: {e}") from None


def cooperate(plan: b2s.execution.RunPlan, cell_ids: list[str], environment: dict[str, str]) -> dict[str, Any]:
    """One array task: run the given cells of the plan with claims, in a worker process, and rebuild the
    reports when the whole suite is done."""
    import os

    os.environ.update(environment)
    return b2s.execution.run_cells(plan, cell_ids, executor="process", workers=1)  # a crash or a timeout fails only its cell


class SlurmExecutor:
    claims_cells = True  # the array tasks claim cells and write records in the shared folder

    def __init__(self, options: b2s.execution.ExecutorOptions):
        import submitit

        self.options = options
        self.settings = settings_of(options)
        self.capacity = 10**9  # everything is handed to the array at once
        self._submitit = submitit
        self._tasks: dict[str, b2s.execution.CellTask] = {}
        self._jobs: list[Any] = []
        self._submitted = False
        self._started = time.time()

    def submit(self, task: b2s.execution.CellTask) -> None:
        self._tasks[task.cell_id] = task

    def _submit_array(self) -> None:
        tasks = list(self._tasks.values())
        plan = tasks[0].plan
        folder = Path(plan.out_dir) / "slurm"
        jobs = self.settings.jobs or min(len(tasks), 8)
        executor = self._submitit.AutoExecutor(folder=str(folder), cluster=self.settings.cluster)
        params: dict[str, Any] = {"name": f"b2s-{Path(plan.suite_file).stem}"}
        for key, name in KNOWN.items():
            if getattr(self.settings, key) is not None:
                params[name] = getattr(self.settings, key)
        params.update(self.settings.submitit)
        executor.update_parameters(**params)
        ids = [t.cell_id for t in tasks]
        env = b2s.execution.b2s_environment()
        self._jobs = executor.map_array(cooperate, [plan] * jobs, [ids] * jobs, [env] * jobs)
        self.options.log(
            f"submitted {len(self._jobs)} array tasks ({', '.join(j.job_id for j in self._jobs[:3])}"
            f"{' ...' if len(self._jobs) > 3 else ''}); logs in {folder}"
        )
        self._submitted = True

    def poll(self, timeout: float) -> list[b2s.execution.CellOutcome]:
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

    def _recorded(self) -> list[b2s.execution.CellOutcome]:
        found = []
        for cell_id, task in list(self._tasks.items()):
            record = b2s.execution.read_record(b2s.execution.cell_path(task.plan.out_dir, cell_id), cell_id)
            if record is not None and record.get("finished_at", "") >= _iso(self._started):
                del self._tasks[cell_id]
                found.append(
                    b2s.execution.CellOutcome(
                        cell_id,
                        record,
                        None,
                        record["environment"].get("host", ""),
                        record["timings"].get("total", 0.0),
                        stored=True,
                    )
                )
        return found

    def _lost(self) -> list[b2s.execution.CellOutcome]:
        """Every task ended and these cells have no record: say why the jobs ended."""
        reasons = []
        for job in self._jobs:
            try:
                job.result()
            except Exception as e:
                reasons.append(f"job {job.job_id}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        why = "; ".join(reasons[:3]) or "the array ended without computing it"
        lost = [b2s.execution.CellOutcome(cid, None, f"Slurm array task failed: {why}", "", 0.0) for cid in self._tasks]
        self._tasks.clear()
        return lost

    def active(self) -> list[b2s.execution.ActiveCell]:
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


def _create(options: b2s.execution.ExecutorOptions) -> SlurmExecutor:
    return SlurmExecutor(options)


@b2s.hookimpl
def b2s_register_executors(register: Callable[[b2s.ExecutorSpec], None]) -> None:
    register(
        b2s.ExecutorSpec(
            "slurm",
            _create,
            "a Slurm job array through submitit (--slurm KEY=VALUE or "
            "runtime.executor.slurm: partition, time, gpus_per_node, mem_gb, jobs); tasks share the "
            "run folder; --detach to leave",
            rank=60,
            detaches=True,
            requires="install it with `pip install 'b2s-bench[slurm]'`",
            settings=SlurmSettings,
        )
    )


@b2s.hookimpl
def b2s_register_cli_options(register: Callable[[b2s.CliOption], None]) -> None:
    register(
        b2s.CliOption(
            "--slurm",
            ("run",),
            _apply_flags,
            "a Slurm setting (partition, time, gpus_per_node, "
            "mem_gb, jobs, ... or a submitit parameter) over runtime.executor.slurm; repeatable "
            "(--executor slurm)",
            metavar="KEY=VALUE",
            repeat=True,
        )
    )
