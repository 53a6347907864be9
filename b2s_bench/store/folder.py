"""A run folder: its records, the claims that let several runs share it, and what is set aside.

Layout of ``DIR`` (``runs/<suite>`` by default)::

    run.json              the suite's cells, the command, wall time and peak memory
    cells/<id>.json       one record per cell (written atomically)
    claims/<id>.json      a cell being computed: who (host, pid and its start, run) and since when; its mtime is the heartbeat
    set-aside/            records that failed validation, moved here (never deleted) and recomputed
    artifacts/<id>/       each cell's compressed model (safetensors + manifest), when kept

Dense reference outputs live outside it, in the user's cache (``$B2S_BENCH_CACHE/reference``): they
are computed once per model, data and torch version, and shared by every worker, cell and run.

Every writer of records, claims and reports goes through here, whatever executor ran the cell.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..sources import cache_dir
from .records import (
    WRITE_ERRNOS,
    Record,
    cannot_write,
    cell_path,
    host_name,
    load_json,
    record_problems,
    temp_tag,
    write_atomic,
    write_record,
)

__all__ = [
    "RunStore",
    "Claim",
    "OwnedLock",
    "DEFAULT_CLAIM_TIMEOUT",
    "HEARTBEAT_SECONDS",
    "MIN_CLAIM_TIMEOUT",
    "LOCK_STALE_SECONDS",
]

HEARTBEAT_SECONDS = 10.0
#: a claim from another host whose heartbeat is older than this is taken over (its owner is presumed dead)
DEFAULT_CLAIM_TIMEOUT = 120.0
#: the shortest ``runtime.claim_timeout``: three heartbeats (the runner refreshes its claims every
#: ``HEARTBEAT_SECONDS / 2`` = 5 s), so one late beat of a busy machine never looks like a dead run
MIN_CLAIM_TIMEOUT = 3 * HEARTBEAT_SECONDS / 2
#: an :class:`OwnedLock` whose heartbeat (mtime) is older than this is taken over; its holder
#: refreshes it every ``LOCK_STALE_SECONDS / 6`` s, so only a dead or frozen holder goes stale
LOCK_STALE_SECONDS = 60.0


class Claim(dict):
    """A claim file's content: host, pid, run, started (UTC), plus ``age`` (seconds since the heartbeat)."""


def _utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _host() -> str:
    return host_name()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process from /proc, or None where /proc does not tell."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name, in parentheses, may hold spaces
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _process_start(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _owner_alive(pid: int, started: Any) -> bool:
    """Whether the process ``pid`` of this host that wrote a claim still runs: not gone, not a zombie,
    and (where the claim recorded it) started at the same tick, so a recycled pid is not taken for it."""
    if not _pid_alive(pid):
        return False
    stat = _proc_stat(pid)
    if stat is None:  # no /proc (macOS): the pid's existence is all there is
        return True
    state, start = stat
    return state not in ("Z", "X") and not (isinstance(started, int) and started != start)


class RunStore:
    """One run folder. ``run_id`` tells this process's claims from other runs' claims."""

    def __init__(self, out_dir: str | os.PathLike[str], run_id: str | None = None, warn: Callable[[str], None] | None = None):
        self.root = Path(out_dir)
        self.run_id = run_id or f"{_host()}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        self.warn = warn or (lambda msg: None)
        self.manifest_problem: str | None = None  # why run.json was set aside, when it was

    # -- places -----------------------------------------------------------------------------------
    @property
    def cells(self) -> Path:
        return self.root / "cells"

    @property
    def claims(self) -> Path:
        return self.root / "claims"

    @property
    def aside(self) -> Path:
        return self.root / "set-aside"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def reference_cache(self) -> Path:
        """Dense outputs, shared by every run on this machine (keyed by weights, data and torch)."""
        return cache_dir() / "reference"

    def prepare(self) -> None:
        for folder in (self.cells, self.claims):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                if e.errno in WRITE_ERRNOS:
                    raise cannot_write(folder, e) from e
                raise

    # -- records ----------------------------------------------------------------------------------
    def record(self, cell_id: str) -> Record | None:
        """The valid record of a cell, or None. A file that is there but not valid (incomplete,
        of another cell, of another schema) is set aside with a warning, so it is recomputed."""
        path = cell_path(self.root, cell_id)
        data, why = load_json(path)
        if why == "no such file":
            return None
        problems = [why] if why else record_problems(data, path.stem, cell_id)
        if problems:
            self.set_aside(path, "; ".join(problems))
            return None
        return data

    def set_aside(self, path: Path, why: str, then: str = "the cell will be recomputed") -> Path | None:
        """Move an invalid record (or run.json) into ``set-aside/`` (never delete it) and say so."""
        target = self.aside / f"{path.stem}.{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}.json"
        try:
            self.aside.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except FileNotFoundError:  # another run set it aside first
            return None
        except OSError as e:  # a read-only folder (a mounted published run): it is still not used
            self.warn(f"warning: {path} is not valid ({why}) and is not used; it could not be moved aside ({e.strerror or e})")
            return None
        self.warn(f"warning: set aside {path} ({why}); moved to {target}; {then}")
        return target

    def write(self, record: Record) -> Path:
        return write_record(self.root, record)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.root / "run.json", json.dumps(manifest, indent=1))

    def manifest(self) -> dict[str, Any] | None:
        """run.json, or None. One that cannot be read (truncated, nested too deep, not an object) is set
        aside like an invalid record and ``manifest_problem`` says why; the next ``run`` rebuilds it."""
        path = self.root / "run.json"
        if self.root.exists() and not self.root.is_dir():  # a file given as a run folder: nothing to read or set aside
            return None
        data, why = load_json(path)
        if why == "no such file":
            return None
        if why is None and isinstance(data, dict):
            return data
        self.manifest_problem = why or f"not a JSON object but {type(data).__name__}"
        self.set_aside(
            path, self.manifest_problem, "`b2s-bench run` on its suite with the same --out rebuilds it (finished cells are kept)"
        )
        return None

    def require_manifest(self) -> dict[str, Any]:
        """run.json, or a UserError that tells a folder without one from one whose run.json is unreadable."""
        manifest = self.manifest()
        if manifest is not None:
            return manifest
        if self.manifest_problem is not None:
            raise UserError(
                f"{self.root / 'run.json'} could not be read ({self.manifest_problem}); it is set aside "
                f"in {self.aside}; run its suite again with --out {self.root} to rebuild it (finished "
                "cells are kept)"
            )
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root} is not a run folder (a file, not a folder); give the folder a run wrote")
        raise UserError(f"{self.root} is not a run folder (no run.json inside); run a suite first")

    # -- claims -----------------------------------------------------------------------------------
    def _claim_path(self, cell_id: str) -> Path:
        return self.claims / f"{cell_id}.json"

    def claim(self, cell_id: str, stale_after: float = DEFAULT_CLAIM_TIMEOUT) -> bool:
        """Claim a cell for this run: True when it is ours now.

        Another run's claim is taken over only when its owner is dead: on this host, when its process
        is gone (at once, however fresh its heartbeat; and never while it lives, however old: a busy
        machine can delay a beat, and a live run's cell must not run twice); from another host, whose
        processes cannot be seen, when its heartbeat stopped more than ``stale_after`` seconds ago.
        Only one taker can win (atomic rename).
        """
        path = self._claim_path(cell_id)
        if self._create_claim(path):
            return True
        info = self.claim_info(cell_id)
        if info is None:  # released between the two calls
            return self._create_claim(path)
        if info.get("run") == self.run_id:
            return True
        alive = self.owner_alive(info)
        # an unreadable claim (left empty by a writer that died, e.g. on a full disk) has no owner to ask:
        # a live owner would have written it at once and keeps touching it, so a few beats of silence do
        limit = min(stale_after, HEARTBEAT_SECONDS) if "unreadable" in info else stale_after
        if alive or (alive is None and info["age"] <= limit):
            return False
        grave = path.with_name(f"{path.name}.{self.run_id}.stale")
        try:
            os.replace(path, grave)  # whoever renames it first takes the cell over
        except FileNotFoundError:
            return False
        grave.unlink(missing_ok=True)
        why = "its process is gone" if alive is False else f"no heartbeat for {info['age']:.0f} s"
        owner = (
            f"an unreadable claim ({info['unreadable']})" if "unreadable" in info else f"{info.get('host')} pid {info.get('pid')}"
        )
        self.warn(f"warning: taking over cell {cell_id} from {owner} ({why})")
        return self._create_claim(path)

    @staticmethod
    def owner_alive(info: dict[str, Any]) -> bool | None:
        """Whether a claim's owner process still runs: True or False for a claim of this host, None for
        one of another host (or one that names no pid), whose heartbeat alone tells."""
        pid = info.get("pid")
        if info.get("host") != _host() or not isinstance(pid, int) or isinstance(pid, bool):
            return None
        return _owner_alive(pid, info.get("pid_start"))

    def _create_claim(self, path: Path) -> bool:
        text = json.dumps(
            {"host": _host(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()), "run": self.run_id, "started": _utc()}
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask decides, as for records
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                raise cannot_write(path, e, len(text)) from e
            raise
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except BaseException as e:  # a full disk fails the write or the close: no empty claim is left
            path.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
                raise cannot_write(path, e, len(text)) from e
            raise
        return True

    def claim_info(self, cell_id: str) -> Claim | None:
        """The claim on a cell, or None. One whose file cannot be parsed has only ``age`` and ``unreadable``."""
        path = self._claim_path(cell_id)
        try:
            age = time.time() - path.stat().st_mtime
            data = json.loads(path.read_text())
        except OSError:
            return None
        except (ValueError, RecursionError) as e:
            data = {"unreadable": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'empty'}"}
        if not isinstance(data, dict):
            data = {"unreadable": f"not a JSON object but {type(data).__name__}"}
        return Claim({**data, "age": max(age, 0.0)})

    def heartbeat(self, cell_ids: Iterable[str]) -> None:
        now = time.time()
        for cid in cell_ids:
            with contextlib.suppress(OSError):
                os.utime(self._claim_path(cid), (now, now))

    def release(self, cell_id: str) -> None:
        info = self.claim_info(cell_id)
        if info is not None and info.get("run") == self.run_id:
            try:
                self._claim_path(cell_id).unlink(missing_ok=True)
            except OSError as e:  # a folder gone read-only: the claim goes stale and is taken over
                self.warn(f"warning: could not release the claim {self._claim_path(cell_id)} ({e.strerror or e})")

    def active_claims(self) -> dict[str, Claim]:
        found = {}
        if self.claims.is_dir():
            for p in self.claims.glob("*.json"):
                info = self.claim_info(p.stem)
                if info is not None and "unreadable" not in info:
                    found[p.stem] = info
        return found

    # -- leftovers of killed runs -------------------------------------------------------------------
    def clean_leftovers(self, older_than: float = DEFAULT_CLAIM_TIMEOUT) -> list[Path]:
        """Remove temporary files, half-written artifact folders and dead locks that a killed process left.

        Their names carry the writer's host and pid (``records.temp_tag``): one of a dead process on
        this host is removed at once, any other only once it is older than ``older_than`` seconds
        (another live run may be writing it). A lock of the dense-outputs cache is removed when its holder
        is dead (:meth:`OwnedLock.dead`).
        """
        removed = []
        candidates = [
            *self.root.glob(".*.tmp"),
            *self.cells.glob(".*.tmp"),
            *self.claims.glob("*.stale"),
            *self.reference_cache.glob(".*.tmp"),
        ]
        if self.artifacts.is_dir():
            candidates += [p for p in self.artifacts.iterdir() if p.name.startswith(".")]
        for path in self.reference_cache.glob("*.lock"):
            if OwnedLock(path).break_if_dead() is not None:
                removed.append(path)
        for path in candidates:
            if not self._leftover(path, older_than):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def _leftover(self, path: Path, older_than: float) -> bool:
        host, pid = _writer(path.name)
        if host == _host() and pid is not None and pid != os.getpid():
            return not _owner_alive(pid, None)  # a zombie (killed, not yet reaped by its run) is dead
        try:
            return time.time() - path.stat().st_mtime > older_than
        except OSError:
            return False


class OwnedLock:
    """A lock file that names its holder (host, pid, since when) and keeps a heartbeat (its mtime).

    Only one process can create it (``O_EXCL``). A waiter takes it over at once when the holder's
    pid is dead on this host (a worker killed by a signal leaves its lock behind; a zombie or a
    recycled pid counts as dead, as for claims). A holder on another host, or a lock that does not
    name its holder, is dead when its heartbeat is older than ``stale_after`` seconds. While held, a
    thread refreshes the mtime, so a long computation never looks dead.
    """

    def __init__(self, path: Path, stale_after: float = LOCK_STALE_SECONDS):
        self.path, self.stale_after = Path(path), stale_after
        self._stop: threading.Event | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free: True when it is ours now (and its heartbeat runs)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"host": _host(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()), "started": _utc()}, f)
        except BaseException:  # a full disk: no empty lock left behind for others to wait on
            self.path.unlink(missing_ok=True)
            raise
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(self._stop,), daemon=True, name=f"heartbeat {self.path.name}").start()
        return True

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.stale_after / 6):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        self.path.unlink(missing_ok=True)

    def holder(self) -> dict[str, Any] | None:
        """The holder's host, pid and start, plus ``age`` (s since its heartbeat); None when there is no lock."""
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text()
        except OSError:
            return None
        try:
            data = json.loads(text)
        except ValueError:  # created, its content not written yet (or a lock of an older version)
            data = {}
        return {**(data if isinstance(data, dict) else {}), "age": max(age, 0.0)}

    def dead(self, info: dict[str, Any]) -> bool:
        pid = info.get("pid")
        if info.get("host") == _host() and isinstance(pid, int) and pid != os.getpid():
            return not _owner_alive(pid, info.get("pid_start"))
        return bool(info["age"] > self.stale_after)

    def break_if_dead(self) -> dict[str, Any] | None:
        """Remove the lock if its holder is dead; returns that holder (None: no lock, or a live one).
        Only one of several waiters wins the removal (an atomic rename). Two waiters that both judged
        the same dead lock can, rarely, remove a fresh lock as well: the cost is the work computed
        twice, each copy written atomically, never a wrong result."""
        info = self.holder()
        if info is None or not self.dead(info):
            return None
        grave = self.path.with_name(f".{self.path.name}.{temp_tag()}.tmp")
        try:
            os.replace(self.path, grave)
        except FileNotFoundError:  # another waiter broke it first
            return None
        grave.unlink(missing_ok=True)
        return info


def _writer(name: str) -> tuple[str | None, int | None]:
    """(host, pid) from a temporary name ``.NAME.HOST-PID.XXXX.tmp`` (see records.temp_tag)."""
    for part in name.split("."):
        host, sep, pid = part.rpartition("-")
        if sep and pid.isdigit() and host:
            return host, int(pid)
    return None, None
