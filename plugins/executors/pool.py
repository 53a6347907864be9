"""The process executor: cells run in long-lived worker processes, isolated from the CLI's process.

Each worker is a fresh interpreter (the ``spawn`` start method: safe with CUDA and with threads),
started once and reused for cell after cell, so imports and model building are paid once per
worker. A worker that dies (a segfault, ``os._exit``, the kernel's out-of-memory killer) or that
runs past the cell timeout is recorded with the cause, and a new worker takes the next cell.

``workers="auto"`` (the default): one worker per visible GPU (``CUDA_VISIBLE_DEVICES`` set to its
GPU) on CUDA; on a CPU, the cores divided by ``runtime.threads`` when set, else :func:`cpu_workers`
with the cores split between them. The run says the split when it starts (:meth:`describe`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

import b2s_bench as b2s

HOST = socket.gethostname()


def _worker_main(conn: Connection, env: dict[str, str], parent: int) -> None:
    """A worker's life: set its environment, then compute cells until told to stop."""
    os.environ.update(env)
    # Ctrl-C and SIGTERM reach the whole process group; they are the driver's: it stops the workers
    # itself (and keeps the records of finished cells). A worker never outlives the driver.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import b2s_bench as b2s  # after the environment is set (CUDA, threads)
    from b2s_bench.execution import die_with_parent, set_log

    die_with_parent(parent)
    sending = threading.Lock()  # a plugin may log from its own threads

    def send(*message: Any) -> None:
        with sending:
            conn.send(message)

    set_log(lambda text: send("log", None, text))  # the driver prints a cell's messages
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        plan, cell_id = message
        send("done", cell_id, b2s.execution.execute_cell(plan, cell_id))


def describe_exit(code: int | None) -> str:
    """Why a worker process ended, in words: "killed by SIGSEGV", "exit 3", ..."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return f"killed by {name} (out of memory, or killed from outside)"
        return f"killed by {name}"
    return f"exit {code}"


class _Worker:
    def __init__(self, ctx: Any, env: dict[str, str], slot: int):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, env, os.getpid()), daemon=False, name=f"b2s-bench-worker-{slot}"
        )
        self.process.start()
        child.close()
        self.slot = slot
        self.task: b2s.execution.CellTask | None = None
        self.started = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


class ProcessExecutor:
    """Long-lived worker processes, a cell at a time each, with a per-cell timeout."""

    def __init__(self, options: b2s.execution.ExecutorOptions):
        self.options = options
        self.envs = worker_envs(options)
        self.capacity = len(self.envs)
        self._ctx = mp.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._queue: list[b2s.execution.CellTask] = []
        self._done: list[b2s.execution.CellOutcome] = []

    def describe(self) -> str:
        """How the cells run, for the run's header: workers, and threads or GPU each."""
        n = len(self.envs)
        each = self.envs[0] if self.envs else {}
        where = (
            f"GPU {', '.join(sorted({e['CUDA_VISIBLE_DEVICES'] for e in self.envs}))}"
            if "CUDA_VISIBLE_DEVICES" in each
            else f"{each.get('OMP_NUM_THREADS', 'all')} CPU thread(s) each"
        )
        return f"{n} worker process{'es' if n != 1 else ''}, {where}"

    def submit(self, task: b2s.execution.CellTask) -> None:
        self._queue.append(task)

    def _assign(self) -> None:
        for slot, env in enumerate(self.envs):
            if not self._queue:
                return
            worker = self._workers.get(slot)
            if worker is not None and worker.task is not None:
                continue
            if worker is None or not worker.process.is_alive():
                worker = self._workers[slot] = _Worker(self._ctx, env, slot)
            task = self._queue.pop(0)
            worker.task, worker.started = task, time.time()
            worker.conn.send((task.plan, task.cell_id))

    def poll(self, timeout: float) -> list[b2s.execution.CellOutcome]:
        self._assign()
        busy = [w for w in self._workers.values() if w.task is not None]
        if busy and not self._done:
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=self._wait(busy, timeout))
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    self._collect(worker)
        for worker in busy:
            if worker.task is not None:
                self._check_timeout(worker)
        done, self._done = self._done, []
        return done

    def _wait(self, busy: list[_Worker], timeout: float) -> float:
        deadlines = [w.started + w.task.cell_timeout - time.time() for w in busy if w.task and w.task.cell_timeout]
        return max(0.0, min([timeout, *deadlines]))

    def _collect(self, worker: _Worker) -> None:
        task = worker.task
        assert task is not None
        seconds = time.time() - worker.started
        try:
            while worker.conn.poll():
                kind, cell_id, payload = worker.conn.recv()
                if kind == "log":  # a message of the running cell, already prefixed by its name
                    self.options.log(payload)
                    continue
                worker.task = None
                self._done.append(b2s.execution.CellOutcome(cell_id, payload, None, HOST, seconds))
                return
            if worker.process.is_alive():
                return  # only messages: the cell is still computing
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=5)  # no record: the process died in the cell
        cause = describe_exit(worker.process.exitcode)
        worker.task = None
        worker.conn.close()
        del self._workers[worker.slot]
        self._done.append(b2s.execution.CellOutcome(task.cell_id, None, f"the worker process died: {cause}", HOST, seconds))

    def _check_timeout(self, worker: _Worker) -> None:
        task = worker.task
        if task is None or not task.cell_timeout or time.time() - worker.started <= task.cell_timeout:
            return
        worker.stop(kill=True)
        del self._workers[worker.slot]
        worker.task = None
        self._done.append(
            b2s.execution.CellOutcome(
                task.cell_id, None, f"timed out after {task.cell_timeout:g} s", HOST, time.time() - worker.started
            )
        )

    def active(self) -> list[b2s.execution.ActiveCell]:
        return [
            b2s.execution.ActiveCell(w.task.cell_id, w.task.name, HOST, w.started)
            for w in self._workers.values()
            if w.task is not None
        ]

    def cancel(self, cell_id: str) -> None:
        self._queue = [t for t in self._queue if t.cell_id != cell_id]
        for worker in list(self._workers.values()):
            if worker.task is not None and worker.task.cell_id == cell_id:
                worker.stop(kill=True)
                del self._workers[worker.slot]

    def close(self) -> None:
        for worker in list(self._workers.values()):
            worker.stop(kill=worker.task is not None)
        self._workers.clear()
        self._queue.clear()


def cpu_workers(cores: int) -> int:
    """``--workers auto`` on a CPU: one single-thread worker per core on small machines (cells of small
    models run side by side: 1.53x on 2 cores against one worker with 2 threads, bench_executors),
    and workers of 4 threads on larger ones (a large model's cell still gets intra-op parallelism)."""
    return cores if cores <= 4 else max(4, cores // 4)


def worker_envs(options: b2s.execution.ExecutorOptions) -> list[dict[str, str]]:
    """One environment per worker: which GPU it sees, how many CPU threads it may use (the cores
    split between the workers unless ``runtime.threads`` says)."""
    threads = options.threads
    if options.device == "cuda":
        import torch

        env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        gpus = torch.cuda.device_count()
        count = options.workers or gpus
        return [{**env, "CUDA_VISIBLE_DEVICES": str(i % max(gpus, 1))} for i in range(count)]
    cores = os.cpu_count() or 1
    if options.workers:
        count = options.workers
    elif threads:
        count = max(1, cores // threads)
    else:
        count = cpu_workers(cores)
    env = {"OMP_NUM_THREADS": str(threads or max(1, cores // count))}
    return [dict(env) for _ in range(count)]
