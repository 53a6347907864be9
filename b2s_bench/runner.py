"""The runner: executes cells in isolation, resumes finished work, and writes one record per cell.

Each model's baseline is built once and every cell gets a fresh deep copy. An exception in a cell
becomes a ``status: error`` record with its traceback, and the suite goes on. A cell whose valid
``ok`` record exists is skipped, so re-running a finished suite computes nothing, and an
interrupted run resumes where it stopped (records are written atomically).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .cells import Cell, expand, select
from .compressed import Compressed
from .errors import UserError
from .interface import Context
from .metrics import Evaluation, NotApplicable, run_model
from .pipeline import apply_stage
from .plugins import Plugins
from .records import Record, cell_path, environment, read_record, write_atomic, write_record
from .sources import LoadedData, LoadedModel, ModelRequest
from .suite import Suite

__all__ = ["RunOptions", "RunSummary", "Runner", "resolve_device", "seed_everything"]

DATA_TRACKS = {"calibration", "training"}  # tracks that may read real inputs


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for, but CUDA is not available here; use --device cpu or auto")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {requested!r}")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    device: str = "auto"
    pattern: str | None = None
    force: bool = False
    progress: bool | None = None  # None: only when stderr is a terminal
    command: str | None = None  # the command line that ran the suite (kept in run.json)


@dataclasses.dataclass
class RunSummary:
    out_dir: Path
    total: int
    computed: int
    skipped: int
    failed: list[str]  # cell names
    seconds: float

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


class Runner:
    """Runs the cells of one suite into ``options.out_dir``."""

    def __init__(self, suite: Suite, plugins: Plugins, options: RunOptions, log: Callable[[str], None] | None = None):
        self.suite = suite
        self.plugins = plugins
        self.options = options
        self.device = resolve_device(options.device if options.device != "auto" else suite.device)
        self.all_cells = expand(suite, plugins, self.device.type)
        self.cells = select(self.all_cells, options.pattern)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.show_progress = sys.stderr.isatty() if options.progress is None else options.progress
        self._models: dict[str, LoadedModel | BaseException] = {}
        self._data: dict[tuple[str, str], LoadedData] = {}
        self._baseline_out: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._env: dict[str, Any] | None = None

    # -- caches: each baseline model, dataset and dense output is built once per run --------------
    @staticmethod
    def _key(obj: Any) -> str:
        return json.dumps(obj, sort_keys=True, default=str)

    def _model(self, request: ModelRequest) -> LoadedModel:
        key = self._key(dataclasses.asdict(request))
        if key not in self._models:
            seed_everything(self.suite.seed)  # random-init models are reproducible
            try:
                loaded = self.plugins.models.get(request.source).build(request)
                loaded.module.eval()
                self._models[key] = loaded
            except Exception as e:  # every cell of this model fails with the same message
                self._models[key] = e
        found = self._models[key]
        if isinstance(found, BaseException):
            raise found
        return found

    def _dataset(self, cell: Cell, model: LoadedModel) -> LoadedData | None:
        if cell.dataset is None:
            return None
        key = (self._key(dataclasses.asdict(cell.model.request)), self._key(cell.fingerprint["dataset"]))
        if key not in self._data:
            spec = self.plugins.datasets.get(cell.dataset.name)
            self._data[key] = spec.build(cell.dataset.config, model)
        return self._data[key]

    def _baseline_outputs(self, cell: Cell, model: LoadedModel, data: LoadedData) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (self._key(dataclasses.asdict(cell.model.request)), self._key(cell.fingerprint["dataset"]))
        if key not in self._baseline_out:
            dense = copy.deepcopy(model.module).to(self.device)
            self._baseline_out[key] = run_model(dense, data, self.device, self.suite.runtime.batch_size)
            del dense
        return self._baseline_out[key]

    def _progress(self, total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, leave=False, disable=not self.show_progress, dynamic_ncols=True)

    def environment(self) -> dict[str, Any]:
        if self._env is None:
            self._env = environment(self.device, {i.name: f"{i.distribution} {i.version}" for i in self.plugins.infos})
        return self._env

    # -- one cell --------------------------------------------------------------------------------
    def _compress(self, cell: Cell, model: LoadedModel, data: LoadedData | None) -> Compressed:
        module = copy.deepcopy(model.module).to(self.device).eval()
        if cell.is_baseline:
            return Compressed.from_codes(module, {})
        track = cell.track
        ctx = Context(
            device=self.device,
            seed=cell.seed,
            track=track,
            input_shape=tuple(model.input_shape),
            num_classes=model.num_classes,
            calibration=data.calibration if data is not None and track in DATA_TRACKS else None,
            training=data.training if data is not None and track == "training" else None,
            build_model=self._build_other_model,
            progress=self._progress,
            log=self.log,
        )
        first = cell.stages[0]
        compressed = self.plugins.compressors.get(first.name).compress(module, first.config, ctx)
        for stage in cell.stages[1:]:
            compressed = apply_stage(compressed, self.plugins.compressors.get(stage.name), stage.config, ctx)
        return compressed

    def _build_other_model(self, name: str) -> torch.nn.Module:
        request = ModelRequest(name)
        source = self.plugins.models.get(request.source)
        if source.build_architecture is not None:
            return source.build_architecture(request.arch)
        return source.build(request).module

    def _base_record(self, cell: Cell) -> Record:
        return Record(
            schema="b2s-bench/record/1",
            cell_id=cell.id,
            suite=cell.suite,
            status="error",
            label=cell.label,
            track=cell.track,
            family=cell.family,
            seed=cell.seed,
            model={"name": cell.model.request.name, "label": cell.model.label,
                   "pretrained": cell.model.request.pretrained, "weights": cell.model.request.weights},
            dataset=cell.fingerprint["dataset"],
            compressor={"pipeline": [
                {"name": s.name, "version": s.version, "family": s.family, "track": s.track, "config": s.settings}
                for s in cell.stages
            ], "identity": self._is_identity(cell)},
            metrics={},
            size={},
            timings={},
            details={},
            environment=self.environment(),
            error=None,
            started_at=utc_now(),
        )

    def _is_identity(self, cell: Cell) -> bool:
        if cell.is_baseline:
            return False
        for stage in cell.stages:
            ident = self.plugins.compressors.get(stage.name).identity
            if ident is None or any(stage.settings.get(k) != v for k, v in ident.items()):
                return False
        return True

    def run_cell(self, cell: Cell) -> Record:
        record = self._base_record(cell)
        t0 = time.perf_counter()
        try:
            model = self._model(cell.model.request)
            record["model"].update(checkpoint=model.checkpoint,
                                   params=sum(p.numel() for p in model.module.parameters()))
            data = self._dataset(cell, model)
            if data is not None:
                record["dataset"] = {**record["dataset"], "examples": data.num_examples, "data_fingerprint": data.fingerprint}
            t1 = time.perf_counter()
            seed_everything(cell.seed)
            compressed = self._compress(cell, model, data)
            t2 = time.perf_counter()
            evaluated = compressed.module(fresh=False).to(self.device).eval()
            size = compressed.size()
            record["size"] = size.as_dict()
            if self.suite.runtime.save_artifacts:
                record["size"]["disk_bytes"] = compressed.save(str(self.options.out_dir / "artifacts" / cell.id))
            ev = Evaluation(
                evaluated, model, compressed, data, self.device, self.suite.runtime.batch_size,
                (lambda: self._baseline_outputs(cell, model, data)) if data is not None else _no_data,
                {"compress": t2 - t1}, latency_repeats=self.suite.runtime.latency_repeats,
            )
            not_applicable = {}
            for name in cell.metrics:
                spec = self.plugins.metrics.get(name)
                try:
                    value = float(spec.compute(ev))
                except NotApplicable as e:
                    value, not_applicable[name] = None, str(e)
                record["metrics"][name] = spec.record_entry(value)
            t3 = time.perf_counter()
            record["details"] = {**compressed.info, **ev.details}
            if not_applicable:
                record["details"]["not_applicable"] = not_applicable
            record["timings"] = {"build": t1 - t0, "compress": t2 - t1, "evaluate": t3 - t2, "total": t3 - t0}
            record["status"] = "ok"
        except Exception as e:
            record["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
            record["timings"] = {"total": time.perf_counter() - t0}
        record["finished_at"] = utc_now()
        return record

    # -- the suite -------------------------------------------------------------------------------
    def pending(self) -> tuple[list[Cell], list[Cell]]:
        """(cells to compute, cells already done with a valid ok record)."""
        todo, done = [], []
        for cell in self.cells:
            rec = None if self.options.force else read_record(cell_path(self.options.out_dir, cell.id))
            (done if rec is not None and rec.get("status") == "ok" else todo).append(cell)
        return todo, done

    def write_manifest(self, computing: bool = True) -> None:
        """Write run.json. ``command`` is that of the latest run that computed cells: a run that only
        reads records keeps the old one (and so the file, whose mtime tells reports they are current)."""
        manifest = {
            "suite": self.suite.name,
            "description": self.suite.description,
            "file": self.suite.file,
            "command": self.options.command,
            "report": dataclasses.asdict(self.suite.report),
            "metrics": list(self.suite.metrics),
            "cells": [c.id for c in self.all_cells],  # the whole suite, also under -k: reports show every cell
        }
        path = self.options.out_dir / "run.json"
        if not computing and path.is_file():
            try:
                manifest["command"] = json.loads(path.read_text()).get("command")
            except ValueError:
                pass
        text = json.dumps(manifest, indent=1)
        if not path.is_file() or path.read_text() != text:  # unchanged: keep its mtime (reports stay current)
            write_atomic(path, text)

    def run(self) -> RunSummary:
        start = time.perf_counter()
        if self.suite.runtime.threads:
            torch.set_num_threads(self.suite.runtime.threads)
        self.options.out_dir.mkdir(parents=True, exist_ok=True)
        todo, done = self.pending()
        self.write_manifest(computing=bool(todo))
        failed = []
        bar = tqdm(total=len(todo), desc=self.suite.name, unit="cell", disable=not self.show_progress, dynamic_ncols=True)
        try:
            for cell in todo:
                bar.set_postfix_str(cell.name[:60])
                record = self.run_cell(cell)
                write_record(self.options.out_dir, record)
                try:  # an observer plugin's failure must not stop the suite
                    self.plugins.manager.hook.b2s_after_cell(record=record)
                except Exception as e:
                    self.log(f"warning: a b2s_after_cell hook failed on {cell.id}: {type(e).__name__}: {e}")
                if record["status"] != "ok":
                    failed.append(cell.name)
                    self.log(f"FAILED {cell.name} [{cell.id}]: {record['error']['type']}: "
                             f"{record['error']['message'].splitlines()[0] if record['error']['message'] else ''}")
                bar.update(1)
        finally:
            bar.close()
        return RunSummary(self.options.out_dir, len(self.cells), len(todo), len(done), failed, time.perf_counter() - start)


def _no_data() -> tuple[torch.Tensor, torch.Tensor | None]:
    raise NotApplicable("no dataset is set for this model")
