"""Computing one cell: build (once per process) the model and data, compress, check, evaluate, record.

A :class:`CellRunner` lives in whatever process computes cells (the CLI's with ``--executor
inline``, or a long-lived worker): it keeps each baseline model and dataset it built, and gives
every cell a fresh copy. Dense reference outputs are cached on disk in the run folder, keyed by the
model's weights and the data, so several workers compute them once.

Before a cell is ``ok`` its result is checked, whatever the compressor claims:

- exact bits: every code's serialized tensors fit in the bits it counts (``size accounting``), and the
  fp32 baseline is the dense model's inference state, not one the compressor gives;
- the evaluated weights are what the artifact holds: each code rebuilt from its ``meta()`` and
  ``tensors()`` decodes to them (``decoded weights are not what is stored``);
- decoded weights and model outputs are finite (NaN or Inf fails the cell, never ``ok`` at 0 %);
- a data-free compressor receives no calibration or training data (the track decides), and what it or
  an evaluated model writes on its data in place never reaches the next cell (views are copied);
- the result changes enough of the model's weights and meets its config's target, else the cell is
  ``not-applicable`` or ``short-of-target`` with the reason (:mod:`b2s_bench.compression.coverage`).
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import hashlib
import io
import json
import math
import os
import random
import resource
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..calibration.stage import apply_activations
from ..compression.codes import Code, NestedCode
from ..compression.compressed import Compressed
from ..compression.compressor import CompressorSpec, Context
from ..compression.contract import StoredTensors, check_baseline, check_storage, check_stored_decode
from ..compression.coverage import NotApplicableError, coverage, coverage_reason, label_with_caveats
from ..compression.sizes import inference_state
from ..config import config_defaults, config_to_dict
from ..errors import CannotWrite
from ..fitting.fidelity import tensor_report
from ..metrics import Evaluation, NotApplicable
from ..plugins import Plugins
from ..sources import LoadedData, LoadedModel, ModelRequest
from ..store.folder import OwnedLock, RunStore
from ..store.records import SCHEMA, WRITE_ERRNOS, Record, cannot_write, environment, host_name, temp_tag, write_atomic
from ..suites.cells import Cell, Stage
from ..suites.load import Suite
from ..tasks import TaskSpec

__all__ = [
    "CellRunner",
    "NonFiniteError",
    "seed_everything",
    "utc_now",
    "DATA_TRACKS",
    "apply_stage",
    "stages",
    "operating_point",
    "refine_problems",
]

DATA_TRACKS = {"calibration", "training"}  # tracks that may read real inputs
#: errors only writing can meet (EACCES can be a read's too, a cell's own fault): never a cell's error
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class NonFiniteError(ValueError):
    """Decoded weights or model outputs hold NaN or Inf."""


class _NotOk(Exception):
    """Ends a cell's computation with a status that is neither ok nor error (not a failure)."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _own(value: Any) -> Any:
    """``value`` with every tensor that is a view of other memory (a dataset's cached inputs) copied: what a
    compressor does to its data in place must not reach the next cell of the process."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value._base is not None else value
    if isinstance(value, (list, tuple)):
        return type(value)(_own(v) for v in value) if not hasattr(value, "_fields") else type(value)(*(_own(v) for v in value))
    return value


def _owned(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """A dataset's calibration or training function whose results the compressor owns (see :func:`_own`)."""
    if fn is None:
        return None

    def call(*args: Any, **kwargs: Any) -> Any:
        return _own(fn(*args, **kwargs))

    return call


def _owned_batches(batches: Callable[[int], Iterable[Any]]) -> Callable[[int], Iterator[Any]]:
    """A dataset's ``eval_batches`` whose batches the evaluated model owns (see :func:`_own`): the inputs are
    cached for every cell of the process, and one model's in-place write must not reach the next cell."""

    def call(batch_size: int) -> Iterator[Any]:
        for batch in batches(batch_size):
            yield _own(batch)

    return call


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def operating_point(spec: CompressorSpec, stage: Stage) -> dict[str, Any]:
    """Where a stage ran against its compressor's defaults, for its record's pipeline entry.

    ``defaults_source`` (the spec's: the paper, the authors' code, ours), ``changed`` (the settings the
    suite gave whose value differs from the config's default, sorted), ``budget`` (those among them
    that only set a time budget: the spec's ``quick`` keys and the suite's ``device_settings``) and
    ``at_defaults`` (nothing changed). A setting another one derives (lowrank's energy when a rank is
    given) is not listed: only what the suite wrote counts. Record fields only, never in the cell id.
    """
    defaults = config_defaults(spec.config)
    values = stage.settings
    differ = sorted({k for k, _ in stage.explicit if k in values and values[k] != defaults.get(k)})
    timing = set(spec.quick) | set(stage.budget)
    changed = [k for k in differ if k not in timing]
    return {
        "defaults_source": spec.defaults_source,
        "at_defaults": not changed,
        "changed": changed,
        "budget": [k for k in differ if k in timing],
    }


class CellRunner:
    """Computes cells of one suite in this process, caching models and data between cells."""

    def __init__(
        self,
        suite: Suite,
        plugins: Plugins,
        device: torch.device,
        store: RunStore,
        show_progress: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        self.suite, self.plugins, self.device, self.store = suite, plugins, device, store
        self.show_progress = show_progress
        self.log = log or (lambda msg: None)
        self._cell_log = self.log  # during a cell: its messages, prefixed and kept for its record
        self._models: dict[str, LoadedModel | BaseException] = {}
        self._data: dict[str, LoadedData] = {}
        self._env: dict[str, Any] | None = None
        self._code_types: dict[str, type[Code]] | None = None

    @staticmethod
    def _key(obj: Any) -> str:
        return json.dumps(obj, sort_keys=True, default=str)

    # -- what cells share: models, data, dense outputs ----------------------------------------------
    def model(self, request: ModelRequest) -> LoadedModel:
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

    def dataset(self, cell: Cell, model: LoadedModel) -> LoadedData | None:
        if cell.dataset is None:
            return None
        key = self._key([cell.fingerprint["model"], cell.fingerprint["dataset"]])
        if key not in self._data:
            spec = self.plugins.datasets.get(cell.dataset.name)
            data = spec.build(cell.dataset.config, model)
            data.task = spec.task  # the spec decides (validation checked the suite's metrics against it)
            data.eval_batches = _owned_batches(data.eval_batches)  # a model writing on its inputs keeps it to itself
            self._data[key] = data
        return self._data[key]

    def task(self, data: LoadedData) -> TaskSpec:
        """The registered task of ``data`` (validation refuses a dataset whose task none registers)."""
        return self.plugins.tasks.get(data.task)

    def reference_outputs(self, cell: Cell, model: LoadedModel, data: LoadedData) -> dict[str, torch.Tensor]:
        """The dense model's outputs on the eval set (the task's ``run``, reduced by its ``reference``):
        computed once per model and data, on disk, for every cell and run on this machine (``--force``
        recomputes cells, not these)."""
        task = self.task(data)
        # shared across runs (the user's cache): the torch version is in the key, since its kernels
        # decide the last bits of the outputs. The dataset fixes the task; a task's version from "2" on
        # is in the key too (version "1" adds nothing, so references cached before tasks stay valid)
        parts: list[Any] = [
            cell.fingerprint["model"],
            cell.fingerprint["dataset"],
            data.fingerprint,
            self.suite.runtime.batch_size,
            self.device.type,
            torch.__version__,
        ]
        if task.version != "1":
            parts.append(f"task {task.name} v{task.version}")
        key = hashlib.sha256(self._key(parts).encode()).hexdigest()[:24]
        path = self.store.reference_cache / f"{key}.pt"
        # the lock names its holder: a worker killed while computing them (its pid dead on this host,
        # or its heartbeat stale) is taken over at once; a live holder is waited for, however long
        lock = OwnedLock(path.with_suffix(".lock"))
        while True:
            if path.is_file():
                try:
                    return dict(torch.load(path, weights_only=True))
                except Exception as e:  # a damaged cache file (a disk error, a copy cut short): kept aside, computed again
                    aside = path.with_name(f"{path.name}.corrupt-{temp_tag()}")
                    try:
                        os.replace(path, aside)
                    except FileNotFoundError:  # another worker set it aside first
                        continue
                    self._cell_log(
                        f"warning: the cached dense outputs {path} could not be read ({type(e).__name__}); "
                        f"moved to {aside.name} and computed again"
                    )
                    continue
            try:
                taken = lock.acquire()
            except OSError as e:
                if e.errno in WRITE_ERRNOS:
                    raise cannot_write(lock.path, e) from e
                raise
            if not taken:
                dead = lock.break_if_dead()
                if dead is not None:
                    self._cell_log(
                        f"taking over the dense outputs of {cell.model.label} from pid {dead.get('pid')} "
                        f"on {dead.get('host', '?')}, which died computing them"
                    )
                else:
                    time.sleep(0.2)
                continue
            try:
                dense = copy.deepcopy(model.module).to(self.device)
                outputs = dict(task.run(dense, data, self.device, self.suite.runtime.batch_size))
                if task.reference is not None:
                    outputs = dict(task.reference(outputs))
                # a None entry (an unlabeled set's labels) is left out: the cache holds tensors only
                outputs = {k: v.detach().cpu() for k, v in outputs.items() if v is not None}
                buf = io.BytesIO()
                torch.save(outputs, buf)
                try:
                    write_atomic(path, buf.getvalue())
                except CannotWrite as e:  # only a cache: the cell goes on (its record is what must be written)
                    self.log(f"warning: dense outputs not cached: {e}")
                return outputs
            finally:
                lock.release()

    def progress(self, total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, leave=False, disable=not self.show_progress, dynamic_ncols=True)

    def environment(self) -> dict[str, Any]:
        if self._env is None:
            self._env = environment(self.device, {i.name: f"{i.distribution} {i.version}" for i in self.plugins.infos})
        return self._env

    # -- one cell --------------------------------------------------------------------------------------
    def context(self, cell: Cell, model: LoadedModel, data: LoadedData | None) -> Context:
        track = cell.track
        return Context(
            device=self.device,
            seed=cell.seed,
            track=track,
            input_shape=tuple(model.input_shape),
            num_classes=model.num_classes,
            input_vocab=model.input_vocab,
            calibration=_owned(data.calibration) if data is not None and track in DATA_TRACKS else None,
            training=_owned(data.training) if data is not None and track == "training" else None,
            build_model=self._build_other_model,
            progress=self.progress,
            log=self._cell_log,
        )

    def compress(self, cell: Cell, model: LoadedModel, data: LoadedData | None) -> Compressed:
        module = copy.deepcopy(model.module).to(self.device).eval()
        if cell.is_baseline:
            return Compressed.from_codes(module, {})
        ctx = self.context(cell, model, data)
        first = cell.stages[0]
        compressed = self.plugins.compressors.get(first.name).compress(module, first.config, ctx)
        if not isinstance(compressed, Compressed):
            raise TypeError(f"compressor {first.name!r} returned {type(compressed).__name__}, not b2s_bench.Compressed")
        for stage in cell.stages[1:]:
            spec = self.plugins.compressors.get(stage.name)
            # a stage that refines the whole model gets its own copy of the dense model (never the shared one)
            dense = copy.deepcopy(model.module).to(self.device).eval() if spec.refine is not None else None
            compressed = apply_stage(compressed, spec, stage.config, ctx, dense)
        if len(cell.stages) > 1:  # the first stage's facts are under details.stages[0]: name it there
            compressed.info["stages"][0].setdefault("compressor", first.name)
        if cell.activations is not None:
            own = self.plugins.compressors.get(first.name).calibration_inputs
            dense = copy.deepcopy(model.module).to(self.device).eval()  # the shared model is never touched

            def own_inputs() -> torch.Tensor:
                assert own is not None
                return own(dense, first.config, ctx).detach().cpu()

            compressed = apply_activations(compressed, dense, cell.activations, ctx, own_inputs if own is not None else None)
        return compressed

    def code_types(self) -> dict[str, type[Code]]:
        """Every registered code class by kind (imported once per process), to rebuild codes as an artifact would."""
        if self._code_types is None:
            self._code_types = self.plugins.code_types()
        return self._code_types

    def _build_other_model(self, name: str) -> torch.nn.Module:
        request = ModelRequest(name)
        source = self.plugins.models.get(request.source)
        if source.build_architecture is not None:
            return source.build_architecture(request.arch)
        return source.build(request).module

    def base_record(self, cell: Cell) -> Record:
        return Record(
            schema=SCHEMA,
            cell_id=cell.id,
            suite=cell.suite,
            status="error",
            label=cell.label,
            track=cell.track,
            family=cell.family,
            seed=cell.seed,
            model={
                "name": cell.model.request.name,
                "label": cell.model.label,
                "pretrained": cell.model.request.pretrained,
                "weights": cell.model.request.weights,
            },
            dataset=cell.fingerprint["dataset"],
            compressor={
                "pipeline": [
                    {
                        "name": s.name,
                        "version": s.version,
                        "family": s.family,
                        "track": s.track,
                        "config": s.settings,
                        **operating_point(self.plugins.compressors.get(s.name), s),
                    }
                    for s in cell.stages
                ],
                "identity": self.is_identity(cell),
                **({"activations": config_to_dict(cell.activations)} if cell.activations is not None else {}),
            },
            metrics={},
            size={},
            timings={},
            details={},
            environment=self.environment(),
            error=None,
            started_at=utc_now(),
            finished_at="",
            fingerprint=cell.fingerprint,
            per_example={},
        )

    def is_identity(self, cell: Cell) -> bool:
        if cell.is_baseline or cell.activations is not None:  # quantized activations change the outputs
            return False
        for stage in cell.stages:
            ident = self.plugins.compressors.get(stage.name).identity
            if ident is None or any(stage.settings.get(k) != v for k, v in ident.items()):
                return False
        return True

    def run(self, cell: Cell) -> Record:
        """The cell's record: ``ok`` with every metric, or ``error`` with the traceback."""
        record = self.base_record(cell)
        messages: list[str] = []
        caught: list[str] = []

        def log(message: str) -> None:
            messages.append(str(message))
            self.log(f"[{cell.name}] {message}")

        def show(
            message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
        ) -> None:
            text = f"{category.__name__}: {message} ({filename}:{lineno})"
            if text not in caught:  # a warning raised in a loop is kept and shown once
                caught.append(text)
                self.log(f"[{cell.name}] warning: {text}")

        t0 = time.perf_counter()
        # the filters stay as they are (what is ignored stays ignored); what would reach the terminal
        # goes through this cell's log instead, so a worker process forwards it and the record keeps it
        with warnings.catch_warnings():
            warnings.showwarning = show
            self._cell_log = log
            try:
                self._compute(cell, record, t0)
                record["status"] = "ok"
            except _NotOk as e:
                record["status"] = e.status
                record["details"] = {**record["details"], "status_reason": e.reason}
                record["timings"] = {**record["timings"], "total": time.perf_counter() - t0}
            except CannotWrite:  # a full or read-only folder is not the cell's fault: the run stops, the cell stays pending
                raise
            except (Exception, SystemExit) as e:  # sys.exit() in a plugin is its cell's error, not the end of the run
                if isinstance(e, OSError) and e.errno in DISK_ERRNOS:  # also a plugin's own file on a full disk
                    raise cannot_write(e.filename or self.store.root / "cells", e) from e
                record["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
                record["timings"] = {**record["timings"], "total": time.perf_counter() - t0}
            finally:
                self._cell_log = self.log
        if messages:
            record["details"] = {**record["details"], "log": messages}
        if caught:
            record["details"] = {**record["details"], "warnings": caught}
        record["environment"] = {
            **record["environment"],
            "host": host_name(),
            "pid": os.getpid(),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
        }
        record["finished_at"] = utc_now()
        return record

    def _compute(self, cell: Cell, record: Record, t0: float) -> None:
        model = self.model(cell.model.request)
        record["model"].update(
            checkpoint=model.checkpoint, params=sum(p.numel() for p in model.module.parameters()), num_classes=model.num_classes
        )
        data = self.dataset(cell, model)
        if data is not None:
            info = {
                **(record["dataset"] or {}),
                "examples": data.num_examples,
                "data_fingerprint": data.fingerprint,
                "task": data.task,  # what the metrics scored (reports need no plugin to know it)
            }
            if data.clusters is not None:  # reports resample these clusters, not single examples
                from ..store import samples

                info["clusters"] = samples.encode_clusters(data.clusters)
            record["dataset"] = info
        t1 = time.perf_counter()
        seed_everything(cell.seed)
        try:
            compressed = self.compress(cell, model, data)
        except NotApplicableError as e:
            record["timings"] = {"build": t1 - t0, "compress": time.perf_counter() - t1}
            raise _NotOk("not-applicable", e.reason) from None
        t2 = time.perf_counter()
        record["timings"] = {"build": t1 - t0, "compress": t2 - t1}
        stored = StoredTensors()  # each code's tensors() once for the checks below
        check_storage(compressed.codes, stored)  # before anything is believed: the bits must hold what is stored
        check_baseline(compressed.original_shapes, inference_state(model.module))  # and the ratio's numerator is the model's
        _check_finite("decoded weight", compressed.state_dict())
        # what is evaluated must be what the artifact holds: each code rebuilt from its stored tensors decodes the same
        check_stored_decode(compressed.codes, compressed.state_dict(), self.code_types(), stored)
        del stored
        checks = time.perf_counter() - t2  # what believing nothing costs: the record's timings.checks
        size = compressed.size()
        record["size"] = size.as_dict()
        short = self._check_coverage(cell, model, compressed, record)
        if self.suite.runtime.save_artifacts:
            record["size"]["disk_bytes"] = compressed.save(str(self.store.artifacts / cell.id))
        evaluated = compressed.module(fresh=False).to(self.device).eval()
        reference = (lambda: self.reference_outputs(cell, model, data)) if data is not None else _no_data
        ev = Evaluation(
            evaluated,
            model,
            compressed,
            data,
            self.device,
            self.suite.runtime.batch_size,
            reference,
            {"compress": t2 - t1},
            latency_repeats=self.suite.runtime.latency_repeats,
            task=self.task(data) if data is not None else None,
        )
        self._metrics(cell, ev, record)
        if self.suite.runtime.weight_limits and ev.coded_pairs:
            ev.limits()  # details.rate_distortion and weight_structure in every record that replaces weights
        if "outputs" in ev.__dict__:  # computed by a metric: a model that outputs NaN fails, never scores 0 %
            _check_finite("model output", ev.outputs)
        t3 = time.perf_counter()
        record["details"] = {**compressed.info, **ev.details, **record["details"]}
        stats = {k: c.stats() for k, c in compressed.codes.items()}
        if any(stats.values()):
            record["details"]["codes"] = {k: v for k, v in stats.items() if v}
        limits = {"limits": ev.timings["limits"]} if "limits" in ev.timings else {}
        record["timings"] = {**record["timings"], **limits, "checks": checks, "evaluate": t3 - t2, "total": t3 - t0}
        if short is not None:  # evaluated all the same: its table shows what it did reach
            raise _NotOk("short-of-target", short)

    def _check_coverage(self, cell: Cell, model: LoadedModel, compressed: Compressed, record: Record) -> str | None:
        """Record coverage, the target and caveats; raise for a cell that covers too little, and
        return the reason a cell misses its target (None when it meets it or has none)."""
        caveats = compressed.info.get("caveats")
        if caveats:
            record["details"]["caveats"] = list(caveats)
            record["label"] = label_with_caveats(record["label"], caveats)
        if cell.is_baseline:
            return None
        cov = coverage(compressed, model.module)
        record["details"]["coverage"] = cov
        exempt = record["compressor"].get("identity")  # the exact-copy check changes nothing on purpose
        reason = None if exempt else coverage_reason(cov)
        if reason is not None:
            record["details"] = {**compressed.info, **record["details"]}
            raise _NotOk("not-applicable", f"{cell.stages[0].name}: {reason}")
        first = cell.stages[0]
        target_of = self.plugins.compressors.get(first.name).target
        target = target_of(first.config, compressed, model.module) if target_of is not None else None
        if target is None:
            return None
        record["details"]["target"] = target.as_dict()
        return None if exempt or target.met else f"{first.name}: short of its target: {target.reason()}"

    def _metrics(self, cell: Cell, ev: Evaluation, record: Record) -> None:
        not_applicable = {}
        for name in cell.metrics:
            spec = self.plugins.metrics.get(name)
            try:
                value = float(spec.compute(ev))
            except NotApplicable as e:
                value, not_applicable[name] = None, str(e)
            record["metrics"][name] = spec.record_entry(value)
        if not_applicable:
            record["details"]["not_applicable"] = not_applicable
        per_example = getattr(ev, "per_example", None)
        if per_example:
            from ..store import samples

            record["per_example"] = samples.encode_all(per_example)


def _check_finite(what: str, tensors: dict[str, torch.Tensor]) -> None:
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteError(f"{what} {key} has {bad} non-finite values (NaN or Inf) of {t.numel()}")


def _no_data() -> dict[str, torch.Tensor]:
    raise NotApplicable("no dataset is set for this model")


def stages(compressed: Compressed) -> list[dict[str, Any]]:
    """The per-stage facts of ``compressed``: its ``info["stages"]``, or its info as the one stage."""
    staged = compressed.info.get("stages")
    return [dict(s) for s in staged] if isinstance(staged, list) else [dict(compressed.info)]


def apply_stage(
    compressed: Compressed, spec: CompressorSpec, config: Any, ctx: Context, model: torch.nn.Module | None = None
) -> Compressed:
    """Compress every payload tensor of every code of ``compressed`` with a per-tensor compressor,
    then, for a spec with ``refine``, let it refine the whole model.

    ``model`` is the dense model the pipeline started from, handed to ``spec.refine`` (a copy it may
    change; None where there is none to give). A refinement must keep the stored layout (the same
    coded and raw keys, codes of the same kinds storing tensors of the same dtypes and shapes, the same
    counted bits): anything else is an error naming what moved.

    The result's info is ``{"stages": [...earlier stages, this stage]}``; this stage's entry has
    ``compressor``, ``tensors`` (how many codes it changed), ``bits`` (of those codes after it),
    ``refine`` (the refinement's facts, when it did something) and ``against_previous``: per tensor,
    and as means, the rel-MAE, cosine and PSNR of the weights after this stage against the weights
    before it (what this stage alone changed).
    """
    codes: dict[str, Code] = {}
    if spec.compress_tensor is not None:
        for key, code in compressed.codes.items():
            payload = code.payload()
            if not payload:
                codes[key] = code
                continue
            inner = {n: spec.compress_tensor(f"{key}/{n}", t, config, ctx) for n, t in payload.items()}
            codes[key] = NestedCode(code, inner)
    elif spec.recode is not None:  # the same decoded tensors, stored differently (entropy coding)
        for key, code in compressed.codes.items():
            codes[key] = _recoded(spec, key, code, config, ctx)
    else:
        raise ValueError(f"compressor {spec.name!r} cannot be a later pipeline stage: it has no compress_tensor or recode")
    out = compressed.with_codes(codes)
    refined_facts: dict[str, Any] | None = None
    if spec.refine is not None:
        out.info = {}
        refined = spec.refine(out, model, config, ctx)
        if not isinstance(refined, Compressed):
            raise TypeError(f"compressor {spec.name!r}: refine returned {type(refined).__name__}, not b2s_bench.Compressed")
        if refined is not out:
            problems = refine_problems(out, refined)
            if problems:
                raise ValueError(
                    f"compressor {spec.name!r}: refine must keep the stored layout (it may change stored values "
                    f"only): {'; '.join(problems[:5])}"
                )
            refined_facts = dict(refined.info)
            out = refined
    changed = sorted(k for k, c in out.codes.items() if c is not compressed.codes.get(k))
    before, after = compressed.state_dict(), out.state_dict()  # decoded once each: Compressed caches them
    per = {k: tensor_report(before[k], after[k]) for k in changed}
    facts: dict[str, Any] = {
        "compressor": spec.name,
        "tensors": len(changed),
        "bits": sum(out.codes[k].bits().total for k in changed),
        **({"refine": refined_facts} if refined_facts is not None else {}),
        "against_previous": {"tensors": per},
    }
    for stat in ("rel_mae", "cosine", "psnr"):  # the mean over the tensors this stage changed (finite values)
        values = [r[stat] for r in per.values() if math.isfinite(r[stat])]
        facts["against_previous"][stat] = sum(values) / len(values) if values else None
    staged = [*stages(compressed), facts]
    out.info = {"stages": staged}
    # caveats (an unconverged or failed fit) concern the final model too: kept at the top as well,
    # where reports and claims look for them
    caveats = [c for stage in staged for c in stage.get("caveats") or []]
    if caveats:
        out.info["caveats"] = caveats
    return out


def _layout(code: Code) -> Any:
    """What a code stores, without the values: its kind, each tensor's dtype and shape, its counted bits
    (a nested code: its outer code's and each inner code's)."""
    if isinstance(code, NestedCode):
        return ("nested", _layout(code.outer), {n: _layout(c) for n, c in sorted(code.inner.items())})
    tensors = {n: (str(t.dtype), tuple(t.shape)) for n, t in sorted(code.tensors().items())}
    return (code.kind, tensors, code.bits().total)


def refine_problems(before: Compressed, after: Compressed) -> list[str]:
    """One message per way ``after`` (a ``refine``'s result) stores something else than ``before``: a
    coded or raw key added or dropped, a code of another layout (:func:`_layout`), a raw tensor of
    another dtype or shape. Values may differ: that is what a refinement is for."""
    problems = []
    if set(after.codes) != set(before.codes):
        problems.append(f"coded tensors {sorted(set(before.codes) ^ set(after.codes))[:5]} added or dropped")
    if set(after.raw) != set(before.raw):
        problems.append(f"raw tensors {sorted(set(before.raw) ^ set(after.raw))[:5]} added or dropped")
    for key in sorted(set(before.codes) & set(after.codes)):
        if _layout(before.codes[key]) != _layout(after.codes[key]):
            problems.append(f"{key}: {_layout(before.codes[key])} became {_layout(after.codes[key])}")
    for key in sorted(set(before.raw) & set(after.raw)):
        a, b = before.raw[key], after.raw[key]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"raw {key}: {a.dtype} {tuple(a.shape)} became {b.dtype} {tuple(b.shape)}")
    return problems


def _recoded(spec: CompressorSpec, key: str, code: Code, config: Any, ctx: Context) -> Code:
    """``spec.recode`` applied to a code, or to each inner code of a nested one (its outer code keeps the
    layout the inner codes refer to)."""
    assert spec.recode is not None
    if isinstance(code, NestedCode):
        inner = {n: _recoded(spec, f"{key}/{n}", c, config, ctx) for n, c in code.inner.items()}
        recoded_outer = spec.recode(key, code.outer, config, ctx)
        outer = code.outer if recoded_outer is code.outer else recoded_outer
        if outer is code.outer and all(inner[n] is c for n, c in code.inner.items()):
            return code
        return NestedCode(outer, inner)
    return spec.recode(key, code, config, ctx)
