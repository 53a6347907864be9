"""The runner: decides which cells run, hands them to an executor, and records every outcome.

It resumes (a cell with a valid record is skipped; an invalid one is set aside and recomputed),
claims each cell before running it so that several runs can share one folder without computing a
cell twice (a claim whose owner stopped its heartbeat is taken over), writes one record per cell
(atomically), and records a cell whose worker died or timed out as failed with the cause. Where
the cells run is the executor's business (:mod:`b2s_bench.execution.executors`): in this process, in worker
processes, on Ray or on Slurm; this file is the same for all of them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .._lazy import lazy_face
from ..config import build_config
from ..errors import CannotWrite, UserError
from ..plugins import Plugins
from ..store.folder import DEFAULT_CLAIM_TIMEOUT, HEARTBEAT_SECONDS, RunStore
from ..store.records import CELLS, DONE_STATUSES, SKIPPED_STATUSES, Record, load_json
from ..suites.cells import Cell
from .executors import CellOutcome, CellTask, Executor, ExecutorOptions, RunPlan
from .prepare import PreparedRun, prepare_run, resolve_device

__all__ = [
    "RunOptions",
    "RunSummary",
    "Runner",
    "resolve_device",
    "seed_everything",
    "DEFAULT_CELL_TIMEOUT",
    "longest_first",
    "expected_seconds",
    "run_cells",
    "suite_finished",
]

if TYPE_CHECKING:
    import torch

    from .cell import CellRunner, seed_everything

# the cell machinery (torch) loads only when a cell runs: a resumed run whose cells are all done needs none
__getattr__, __dir__ = lazy_face(__name__, globals(), {"seed_everything": ".cell"})

#: A cell that runs longer than this is stopped and recorded "timed out" (``runtime.cell_timeout``,
#: ``--cell-timeout``). Six hours fits a paper-scale INR fit on one GPU; raise it for longer cells.
DEFAULT_CELL_TIMEOUT = 6 * 3600.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run the cells that :func:`~b2s_bench.execution.prepare.prepare_run` selected (which cells, on which
    device, is settled there); an executor's own settings come from its plugin (options, suite)."""

    out_dir: Path
    force: bool = False
    progress: bool | None = None  # None: only when stderr is a terminal
    command: str | None = None  # the command line that ran the suite (kept in run.json)
    executor: str | None = None  # None: the registered executor with the lowest rank
    workers: int | None = None  # None: the executor's "auto"
    cell_timeout: float | None = None  # None: the suite's runtime.cell_timeout, else the default
    claim_timeout: float | None = None  # None: the suite's runtime.claim_timeout, else the default
    detach: bool = False


@dataclasses.dataclass
class RunSummary:
    out_dir: Path
    total: int
    computed: int
    skipped: int
    failed: list[str]  # cell names
    seconds: float
    by_others: int = 0  # cells another run sharing the folder computed meanwhile
    detached: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


class Runner:
    """Runs the selected cells of a prepared run (:func:`~b2s_bench.execution.prepare.prepare_run`) into
    ``options.out_dir``. Building one does no I/O; :meth:`run` does the work."""

    def __init__(self, prepared: PreparedRun, options: RunOptions, log: Callable[[str], None] | None = None):
        self.prepared = prepared
        self.suite = prepared.suite
        self.plugins = prepared.plugins
        self.all_cells = list(prepared.all_cells)
        self.cells = list(prepared.cells)
        self.options = options
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.store = RunStore(options.out_dir, warn=self.log)
        self.show_progress = sys.stderr.isatty() if options.progress is None else options.progress

    @property
    def device(self) -> torch.device:
        return self.prepared.device

    @functools.cached_property
    def cell_runner(self) -> CellRunner:
        """What computes a cell here (built on first use: it loads torch)."""
        from .cell import CellRunner

        return CellRunner(self.suite, self.plugins, self.device, self.store, self.show_progress, self.log)

    # -- settings -----------------------------------------------------------------------------------
    @property
    def cell_timeout(self) -> float | None:
        value = next(
            (v for v in (self.options.cell_timeout, self.suite.runtime.cell_timeout) if v is not None), DEFAULT_CELL_TIMEOUT
        )
        return None if value <= 0 else float(value)

    @property
    def claim_timeout(self) -> float:
        return float(self.options.claim_timeout or self.suite.runtime.claim_timeout or DEFAULT_CLAIM_TIMEOUT)

    def plan(self) -> RunPlan:
        sel = self.plugins.selection
        return RunPlan(
            str(Path(self.suite.file).resolve()),
            str(self.options.out_dir.resolve()),
            self.prepared.device_type,
            tuple(str(Path(f).resolve()) for f in sel.files),
            tuple(sel.disable),
            self.prepared.plugin_options,
            self.suite.runtime.threads,
            self.cell_timeout,
        )

    def executor(self) -> Executor:
        registry = self.plugins.executors
        name = self.options.executor or os.environ.get("B2S_BENCH_EXECUTOR")
        if not name:
            ranked = sorted(registry, key=lambda s: (s.rank, s.name))
            if not ranked:
                raise UserError("no executor is registered (is the b2s-bench installation complete?)")
            name = ranked[0].name
        spec = registry.get(name)
        section = self.suite.runtime.executor.get(spec.name, {})  # the plugin's own: passed through untouched
        settings = build_config(spec.settings, dict(section), owner=f"executor {spec.name}") if spec.settings else section
        opts = ExecutorOptions(
            workers=self.options.workers,
            device=self.prepared.device_type,
            threads=self.suite.runtime.threads,
            settings=settings,
            detach=self.options.detach,
            log=self.log,
        )
        if self.options.detach and not spec.detaches:
            raise UserError(f"executor {name!r} cannot detach; --detach needs one that can (e.g. a cluster executor)")
        try:
            return spec.create(opts)
        except ImportError as e:
            raise UserError(f"executor {name!r} needs a package that is not installed ({e}); {spec.requires}") from None

    # -- the suite -----------------------------------------------------------------------------------
    def pending(self) -> tuple[list[Cell], list[Cell]]:
        """(cells to compute, cells already done with a valid ok record)."""
        todo: list[Cell] = []
        done: list[Cell] = []
        for cell in self.cells:
            rec = None if self.options.force else self.store.record(cell.id)
            (done if rec is not None and rec.get("status") in DONE_STATUSES else todo).append(cell)
        return todo, done

    def manifest(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "suite": self.suite.name,
            "description": self.suite.description,
            "file": self.suite.file,
            "command": self.options.command,
            "report": dataclasses.asdict(self.suite.report),
            "metrics": list(dict.fromkeys([*self.suite.metrics, *(m for e in self.suite.models for m in e.metrics or ())])),
            "cells": [c.id for c in self.all_cells],  # the whole suite, also under -k: reports show every cell
            "names": {c.id: c.name for c in self.all_cells},  # model and method, for `status`
            **(extra or {}),
        }

    def write_manifest(self, computing: bool, extra: dict[str, Any] | None = None) -> None:
        """Write run.json. A run that computes nothing keeps the file (and its command and timings), so
        reports stay current; one that computes writes its command, wall time and peak memory."""
        old = self.store.manifest()
        manifest = self.manifest(extra)
        if manifest.get("command") is None and old is not None:  # a batch task keeps the command that started the run
            manifest["command"] = old.get("command")
        if not computing and old is not None:
            manifest = {**old, **{k: v for k, v in manifest.items() if k not in ("command",)}}
            for key in ("command", "wall_seconds", "peak_rss_mb", "computed", "finished_at", "host", "executor"):
                if key in old:
                    manifest[key] = old[key]
        if old != json.loads(json.dumps(manifest)):  # unchanged: keep its mtime (reports stay current)
            self.store.write_manifest(manifest)

    def run(self) -> RunSummary:
        start = time.perf_counter()
        self.store.prepare()
        self.store.clean_leftovers(self.claim_timeout)
        todo, done = self.pending()
        self.write_manifest(computing=bool(todo))
        if not todo:
            return RunSummary(self.options.out_dir, len(self.cells), 0, len(done), [], time.perf_counter() - start)
        todo = longest_first(todo, self.store.root, self.plugins)
        executor = self.executor()
        describe = getattr(executor, "describe", None)
        if callable(describe):
            self.log(f"running {len(todo)} cells longest first on {describe()}")
        from . import worker

        dispatch = _Dispatch(self, executor, todo)
        worker.adopt(dispatch.plan, self.cell_runner, {c.id: c for c in self.all_cells})
        try:
            dispatch.loop()
        finally:
            executor.close()
            dispatch.release_all()
        seconds = time.perf_counter() - start
        from .cell import utc_now

        if dispatch.computed and not self.options.detach:
            self.write_manifest(
                True,
                {
                    "wall_seconds": round(seconds, 1),
                    "peak_rss_mb": _peak_rss_mb(),
                    "computed": dispatch.computed,
                    "finished_at": utc_now(),
                    "host": socket.gethostname(),
                    "executor": type(executor).__name__,
                },
            )
        return RunSummary(
            self.options.out_dir,
            len(self.cells),
            dispatch.computed,
            len(done),
            dispatch.failed,
            seconds,
            dispatch.by_others,
            self.options.detach,
        )

    # -- outcomes ------------------------------------------------------------------------------------
    def finish(self, cell: Cell, outcome: CellOutcome) -> Record:
        """Turn an outcome into the cell's record and write it (the one place records are written)."""
        record = outcome.record
        if record is not None and record.get("cannot_write"):  # a full or read-only folder: no record, stop
            raise CannotWrite(str(record["cannot_write"]))
        if outcome.stored and record is not None:  # a batch job wrote it in the shared folder
            return record  # type: ignore[return-value]
        if record is None or "schema" not in record:
            cause = outcome.failure or "the worker returned no record"
            error = (record or {}).get("error") or {"type": "WorkerFailure", "message": cause, "traceback": ""}
            from .cell import utc_now

            record = self.cell_runner.base_record(cell)
            record["error"] = dict(error)
            record["timings"] = {"total": outcome.seconds}
            record["finished_at"] = utc_now()
            record["environment"] = {**record["environment"], "host": outcome.host}
        self.store.write(record)  # type: ignore[arg-type]
        try:  # an observer plugin's failure must not stop the suite
            self.plugins.manager.hook.b2s_after_cell(record=record)
        except Exception as e:
            self.log(f"warning: a b2s_after_cell hook failed on {cell.id}: {type(e).__name__}: {e}")
        return record  # type: ignore[return-value]


#: How much longer than a rounding pass a cell of each family is expected to take, where the run folder
#: has no timing of it yet: fitting families (INR fits, distillation) run for minutes, the rest for
#: seconds. Only the order of cells depends on it, never a result. A compressor's own ``cost`` wins.
FAMILY_COST = {"inr": 100.0, "distillation": 50.0, "ergodic": 5.0}


def _sibling_key(cell: Cell) -> tuple[str, tuple[str, ...]]:
    return cell.model.label, tuple(s.name for s in cell.stages)


def expected_seconds(cells: list[Cell], out_dir: Path, plugins: Plugins) -> dict[str, float]:
    """Each cell's expected run time: its own last timing in the run folder; else the median of the
    cells there with the same model and method (other settings); else the compressor's cost estimate
    (``CompressorSpec.cost``, or :data:`FAMILY_COST`), in units of the median measured second per
    estimated unit (1 s where nothing was measured)."""
    own: dict[str, float] = {}
    siblings: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    for path in sorted((out_dir / CELLS).glob("*.json")):  # only timings are read: any record will do
        rec, _ = load_json(path)
        if not isinstance(rec, dict) or not isinstance(rec.get("cell_id"), str):
            continue
        total = (rec.get("timings") or {}).get("total")
        if not isinstance(total, (int, float)) or total <= 0:
            continue
        own[rec["cell_id"]] = float(total)
        names = tuple(s.get("name", "") for s in (rec.get("compressor") or {}).get("pipeline", []))
        siblings.setdefault(((rec.get("model") or {}).get("label", ""), names), []).append(float(total))

    def estimate(cell: Cell) -> float:
        units = 0.0
        for stage in cell.stages:
            spec = plugins.compressors.get(stage.name)
            units += spec.cost(stage.config) if spec.cost is not None else FAMILY_COST.get(stage.family, 1.0)
        return max(units, 1.0)  # the dense baseline: one evaluation pass

    measured = {c.id: own[c.id] for c in cells if c.id in own}
    for c in cells:
        found = siblings.get(_sibling_key(c))
        if c.id not in measured and found:
            measured[c.id] = float(np.median(found))
    per_unit = [measured[c.id] / estimate(c) for c in cells if c.id in measured]
    unit = float(np.median(per_unit)) if per_unit else 1.0
    return {c.id: measured.get(c.id, estimate(c) * unit) for c in cells}


def longest_first(cells: list[Cell], out_dir: Path, plugins: Plugins) -> list[Cell]:
    """The cells, longest expected first (ties keep suite order): with several workers the longest
    cell no longer starts last and leaves the others idle at the end."""
    seconds = expected_seconds(cells, out_dir, plugins)
    return sorted(cells, key=lambda c: -seconds[c.id])


def _stamp(record: Record | None) -> str | None:
    return None if record is None else f"{record.get('started_at')}|{record.get('finished_at')}"


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024.0, 1)  # KiB on Linux


class _Dispatch:
    """The loop of one run: claim, submit, collect, heartbeat, and wait on cells other runs hold."""

    def __init__(self, runner: Runner, executor: Executor, todo: list[Cell]):
        self.runner, self.executor = runner, executor
        self.store = runner.store
        self.queue: deque[Cell] = deque(todo)
        # the record each cell had when the run was planned (a failed one is retried): a different one
        # found later was written by another run sharing the folder
        self.planned = {c.id: _stamp(runner.store.record(c.id)) for c in todo}
        self.in_flight: dict[str, Cell] = {}
        self.waiting: dict[str, Cell] = {}  # claimed by another live run
        self.failed: list[str] = []
        self.computed = 0
        self.by_others = 0
        self.plan = runner.plan()
        self.last_beat = 0.0
        self.claims = not getattr(executor, "claims_cells", False)  # batch jobs claim for themselves
        self.bar = tqdm(
            total=len(todo), desc=runner.suite.name, unit="cell", disable=not runner.show_progress, dynamic_ncols=True
        )

    def loop(self) -> None:
        try:
            while self.queue or self.in_flight or self.waiting:
                self.submit_ready()
                for outcome in self.executor.poll(0.5 if self.in_flight else 0.0):
                    self.collect(outcome)
                if self.runner.options.detach and not self.queue:
                    return  # submitted: the cells run on without this process
                self.beat()
                if not self.in_flight and not self.queue and self.waiting:
                    time.sleep(min(1.0, HEARTBEAT_SECONDS))
                    self.recheck_waiting()
                self.show()
        finally:
            self.bar.close()

    def submit_ready(self) -> None:
        while self.queue and len(self.in_flight) < self.executor.capacity:
            cell = self.queue.popleft()
            if self.done_elsewhere(cell.id):
                self.by_others += 1
                self.bar.update(1)
                continue
            if self.claims and not self.store.claim(cell.id, self.runner.claim_timeout):
                self.waiting[cell.id] = cell
                continue
            task = CellTask(
                self.plan,
                cell.id,
                cell.name,
                wants_cuda=self.runner.prepared.device_type == "cuda",
                cell_timeout=self.runner.cell_timeout,
            )
            self.executor.submit(task)
            self.in_flight[cell.id] = cell

    def done_elsewhere(self, cell_id: str) -> bool:
        """Whether another run wrote this cell's record since this run was planned."""
        stamp = _stamp(self.store.record(cell_id))
        return stamp is not None and stamp != self.planned.get(cell_id)

    def collect(self, outcome: CellOutcome) -> None:
        cell = self.in_flight.pop(outcome.cell_id, None)
        if cell is None:
            return
        try:
            record = self.runner.finish(cell, outcome)
        finally:  # also when the record could not be written: the cell stays pending, unclaimed
            if self.claims:
                self.store.release(cell.id)
        self.computed += 1
        self.bar.update(1)
        if record["status"] in SKIPPED_STATUSES:  # computed, not a failure: its reason, and on
            reason = (record.get("details") or {}).get("status_reason", "")
            self.runner.log(f"{record['status'].upper()} {cell.name} [{cell.id}]: {reason}")
        elif record["status"] != "ok":
            self.failed.append(cell.name)
            error = record.get("error") or {}
            first = (error.get("message") or "").splitlines()[:1]
            self.runner.log(f"FAILED {cell.name} [{cell.id}]: {error.get('type')}: {first[0] if first else ''}")

    def beat(self) -> None:
        now = time.time()
        if self.in_flight and now - self.last_beat >= HEARTBEAT_SECONDS / 2:
            self.store.heartbeat(self.in_flight)
            self.last_beat = now

    def recheck_waiting(self) -> None:
        for cid, cell in list(self.waiting.items()):
            if self.done_elsewhere(cid):
                del self.waiting[cid]
                self.by_others += 1
                self.bar.update(1)
            elif self.store.claim(cid, self.runner.claim_timeout):  # its owner died: ours now
                del self.waiting[cid]
                self.queue.append(cell)

    def show(self) -> None:
        running = len(self.in_flight)
        extra = f", {len(self.waiting)} in other runs" if self.waiting else ""
        self.bar.set_postfix_str(f"{running} running, {len(self.failed)} failed{extra}", refresh=False)

    def release_all(self) -> None:
        for cid in list(self.in_flight):
            self.store.release(cid)


def suite_finished(out_dir: Path) -> bool:
    """Every cell of the suite has a record, and no run holds a claim."""
    from ..store.folder import RunStore

    store = RunStore(out_dir)
    manifest = store.manifest() or {}
    cells = manifest.get("cells", [])
    return bool(cells) and not store.active_claims() and all((out_dir / "cells" / f"{c}.json").is_file() for c in cells)


def run_cells(plan: RunPlan, cell_ids: list[str], executor: str | None = None, workers: int = 1) -> dict[str, Any]:
    """Run ``cell_ids`` of ``plan`` here; returns counts for the job's log."""
    from ..reporting.files import write_report

    run = prepare_run(
        plan.suite_file,
        plugin_files=plan.plugin_files,
        plugin_disable=plan.plugin_disable,
        plugin_options=plan.plugin_options,
        device=plan.device,
        only=cell_ids,
        models=True,
    )
    options = RunOptions(
        out_dir=Path(plan.out_dir), progress=False, executor=executor, workers=workers, cell_timeout=plan.cell_timeout
    )
    summary = Runner(run, options).run()
    reported = False
    if suite_finished(Path(plan.out_dir)):
        write_report(plan.out_dir, run.plugins)
        reported = True
    return {"computed": summary.computed, "failed": len(summary.failed), "by_others": summary.by_others, "reported": reported}
