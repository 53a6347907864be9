"""Numbers you can trust: exact bits enforced, records verified, plugins that cannot shadow or vanish."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import run_cli

import b2s_bench as b2s
from b2s_bench.plugins import load_plugins
from b2s_bench.store.folder import RunStore
from b2s_bench.store.records import fingerprint_id, record_problems

LYING = """
import dataclasses, math
import torch
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    lie: str = "none"     # none | byte | bit | quarter | nan | header | hook

@dataclasses.dataclass
class Int4Code(b2s.Code):
    codes: torch.Tensor    # packed 4-bit codes
    scale: torch.Tensor
    orig_shape: tuple
    lie: str = "none"
    kind = "lying.int4"

    def decode(self):
        n = math.prod(self.orig_shape)
        q = b2s.unpack_bits(self.codes, 4, n).float() - 8
        w = (q * self.scale).reshape(self.orig_shape)
        return w * float("nan") if self.lie == "nan" else w

    def bits(self):
        payload = 4 * math.prod(self.orig_shape)
        if self.lie == "byte":      # one byte per tensor short
            payload -= 8
        elif self.lie == "bit":     # one bit for the whole tensor
            payload = 1
        elif self.lie == "quarter": # 75 % of the payload
            payload = payload * 3 // 4
        header = 0 if self.lie == "header" else b2s.header_bits(self.meta())  # "header": claims none
        return b2s.SizeBreakdown(payload=payload, scales=32, metadata=header)

    def regularizer(self):
        return torch.zeros(())

    def tensors(self):
        return {"codes": self.codes, "scale": self.scale}

    def meta(self):
        return {"shape": list(self.orig_shape), "lie": self.lie}

    @classmethod
    def restore(cls, meta, tensors):
        return cls(tensors["codes"], tensors["scale"], tuple(meta["shape"]), meta["lie"])

def compress_tensor(w, lie):
    scale = w.abs().max().clamp(min=1e-12) / 7
    q = torch.clamp(torch.round(w / scale), -8, 7) + 8
    return Int4Code(b2s.pack_bits(q.to(torch.int64), 4), scale.reshape(1).float(), tuple(w.shape), lie)

def compress(model, config, ctx):
    state = model.state_dict()
    codes = {k: compress_tensor(state[k].detach().cpu(), config.lie) for k in b2s.weight_layers(model)}
    if config.lie == "hook":  # changes how a layer runs on the in-memory model only: not in the artifact
        model.classifier[-1].register_forward_pre_hook(lambda module, args: (args[0] * 0.5,))
    return b2s.Compressed.from_codes(model, codes)

SPEC = b2s.CompressorSpec("liar", "quantization", "data-free", Cfg, compress, codes=(Int4Code,))

@b2s.hookimpl
def b2s_register_compressors(register):
    register(SPEC)
"""


@pytest.fixture
def liar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    path = tmp_path / "liar.py"
    path.write_text(LYING)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    return load_plugins().compressors.get("liar")


@pytest.mark.parametrize("lie", ["byte", "bit", "quarter", "header"])
def test_check_compressor_catches_a_compressor_that_under_counts(liar: Any, lie: str) -> None:
    b2s.testing.check_compressor(liar)  # the honest setting passes
    with pytest.raises(AssertionError, match="size accounting"):
        b2s.testing.check_compressor(liar, {"lie": lie})


def test_a_compressor_whose_evaluated_model_is_not_its_artifact_fails(liar: Any) -> None:
    """A hook on the compressed model's skeleton (SmoothQuant's per-token quantizers once were) runs at
    evaluation but is not stored: the artifact loaded onto a freshly built model computes something else."""
    with pytest.raises(AssertionError, match="loaded onto a freshly built model computes other outputs"):
        b2s.testing.check_compressor(liar, {"lie": "hook"})


def test_a_header_that_counts_less_than_its_meta_holds_fails(liar: Any) -> None:
    # metadata=0 while meta() holds a 4-d shape and "header" (2 words): the tensors fit, only the header rule
    # catches it
    with pytest.raises(AssertionError, match=r"counts 0 metadata bits but its meta\(\) header holds 192"):
        b2s.testing.check_compressor(liar, {"lie": "header"})


def test_a_cell_that_under_counts_or_decodes_nan_fails(liar: Any, write_suite: Callable[..., Path], tmp_path: Path) -> None:
    suite = write_suite("""
        suite: liars
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - name: liar
            grid: {lie: [none, byte, bit, nan]}
        metrics: [agreement, bits, ratio]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1
    recs = {
        r["compressor"]["pipeline"][0]["config"]["lie"]: r
        for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))
        if r["compressor"]["pipeline"]
    }
    assert recs["none"]["status"] == "ok"
    for lie in ("byte", "bit"):
        assert recs[lie]["status"] == "error" and recs[lie]["error"]["message"].startswith("size accounting")
        assert "features.0.weight" in recs[lie]["error"]["message"]  # the tensor is named
    assert recs["nan"]["status"] == "error" and "non-finite" in recs["nan"]["error"]["message"]
    board = (out / "leaderboard.md").read_text()
    assert "size accounting" in board  # listed with the failures, never on the board


HIDDEN = """
import dataclasses
import torch
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    how: str = "honest"   # honest | secret (decode reads a field it never stores) | handed (keep_decoded lies)

@dataclasses.dataclass
class SignCode(b2s.Code):
    sign: torch.Tensor                   # int8 in {-1, 0, 1}: all that tensors() stores
    secret: torch.Tensor | None = None   # the dense weight, kept in memory only
    kind = "hidden.sign"

    def decode(self):
        return self.sign.float() if self.secret is None else self.secret

    def bits(self):
        return b2s.SizeBreakdown(payload=8 * self.sign.numel(), metadata=b2s.header_bits(self.meta()))

    def regularizer(self):
        return torch.zeros(())

    def tensors(self):
        return {"sign": self.sign}

    def meta(self):
        return {}

    @classmethod
    def restore(cls, meta, tensors):
        return cls(tensors["sign"])

def compress(model, config, ctx):
    state = model.state_dict()
    dense = {k: state[k].detach().clone() for k in b2s.weight_layers(model)}
    codes = {k: SignCode(torch.sign(w).to(torch.int8), w if config.how == "secret" else None) for k, w in dense.items()}
    out = b2s.Compressed.from_codes(model, codes)
    if config.how == "handed":
        out.keep_decoded(dense)
    return out

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("hidden", "quantization", "data-free", Cfg, compress, codes=(SignCode,)))
"""


def test_a_cell_whose_weights_are_not_what_its_artifact_decodes_to_fails(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A code that stores 8 bits a weight (and counts them) but decodes, or hands the runner, the dense weights
    kept in memory would score the dense model's accuracy at 4x: the runner rebuilds every code from its own
    meta() and tensors() and fails the cell when that decodes to other weights than the ones evaluated."""
    plugin = tmp_path / "hidden.py"
    plugin.write_text(HIDDEN)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: hidden
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - name: hidden
            grid: {how: [honest, secret, handed]}
        metrics: [agreement, bits, ratio]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1
    recs = {
        r["compressor"]["pipeline"][0]["config"]["how"]: r
        for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))
        if r["compressor"]["pipeline"]
    }
    assert recs["honest"]["status"] == "ok"
    for how in ("secret", "handed"):
        message = recs[how]["error"]["message"]
        assert recs[how]["status"] == "error" and message.startswith("decoded weights are not what is stored"), message
        assert "features.0.weight" in message and "hidden.sign" in message
    assert "decoded weights are not what is stored" in (out / "leaderboard.md").read_text()


INFLATED = """
import dataclasses
import torch
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    inflate: bool = False   # claim an fp32 baseline 4x the model's

@dataclasses.dataclass
class F16(b2s.Code):
    w: torch.Tensor
    kind = "inflated.f16"

    def decode(self):
        return self.w.float()

    def bits(self):
        return b2s.SizeBreakdown(payload=16 * self.w.numel(), metadata=b2s.header_bits(self.meta()))

    def regularizer(self):
        return torch.zeros(())

    def tensors(self):
        return {"w": self.w}

    def meta(self):
        return {}

    @classmethod
    def restore(cls, meta, tensors):
        return cls(tensors["w"])

def compress(model, config, ctx):
    state = model.state_dict()
    out = b2s.Compressed.from_codes(model, {k: F16(state[k].detach().half()) for k in b2s.weight_layers(model)})
    if config.inflate:
        out.original_shapes = {k: ((s[0] * 4,) + tuple(s[1:]) if s else s) for k, s in out.original_shapes.items()}
    return out

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("inflated", "quantization", "data-free", Cfg, compress, codes=(F16,)))
"""


def test_a_compressor_cannot_set_its_own_fp32_baseline(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ratio is the fp32 baseline over the stored bits, and the baseline came from the compressor's own
    ``original_shapes``: fp16 weights claimed 7.9x by saying the model was 4x larger. The baseline must be the
    dense model's inference state, shape for shape."""
    plugin = tmp_path / "inflated.py"
    plugin.write_text(INFLATED)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: inflated
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - name: inflated
            grid: {inflate: [false, true]}
        metrics: [agreement, bits, ratio]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1
    recs = {
        r["compressor"]["pipeline"][0]["config"]["inflate"]: r
        for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))
        if r["compressor"]["pipeline"]
    }
    assert recs[False]["status"] == "ok" and 1.9 < recs[False]["size"]["ratio_model"] < 2.0
    message = recs[True]["error"]["message"]
    assert recs[True]["status"] == "error" and message.startswith("size accounting: the fp32 baseline"), message
    assert "classifier.1.weight (256, 512) (the model's: (64, 512))" in message


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_compressor_calling_sys_exit_fails_its_cell_and_not_the_run(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    """sys.exit(0) inside a compressor ended an inline run at once with exit 0, its other cells pending and no
    report: a CI job read success. It is the cell's error, like any exception, and the others still run."""
    plugin = tmp_path / "quitter.py"
    plugin.write_text("""
import dataclasses, sys
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

def compress(model, config, ctx):
    sys.exit(0)

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("quitter", "other", "data-free", Cfg, compress))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: quitter
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors: [quitter, {name: quantize, bits: 4}]
        metrics: [agreement]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--executor", executor, "--workers", "1") == 1
    recs = {r["label"]: r for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    assert recs["quantize(bits=4)"]["status"] == "ok" and recs["dense"]["status"] == "ok"
    assert recs["quitter"]["status"] == "error"
    assert (out / "leaderboard.md").is_file()


def test_editing_a_local_plugin_file_recomputes_its_cells_only(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A researcher iterating on `--plugin my.py` edited the file and ran again: "0 computed, 2 skipped", the old
    code's results reused, since a cell id knew only the spec's version. A local file's contents are now part of
    the ids of its compressor's cells; installed plugins' cells keep theirs."""
    plugin = tmp_path / "mine.py"
    plugin.write_text(INFLATED)
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: mine
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors: [inflated, {name: quantize, bits: 4}]
        metrics: [agreement, bits]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    before = {p.stem for p in (out / "cells").glob("*.json")}
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    assert "0 computed, 3 skipped" in capsys.readouterr().err  # unchanged: all reused
    plugin.write_text(INFLATED.replace("16 * self.w.numel()", "17 * self.w.numel()"))  # a fix, no version bump
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 0
    assert "1 computed, 2 skipped" in capsys.readouterr().err
    after = {p.stem for p in (out / "cells").glob("*.json")}
    assert len(after - before) == 1
    new = json.loads((out / "cells" / f"{(after - before).pop()}.json").read_text())
    assert new["label"] == "inflated" and new["fingerprint"]["stages"][0]["source"].startswith("sha256:")


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_compressor_info_that_is_not_json_does_not_crash_the_run(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str
) -> None:
    """A compressor whose info held bytes (or a set, or any object) crashed the whole run with a traceback when its
    record was written, the other cells left pending. Such values are stored as their text; the run goes on."""
    plugin = tmp_path / "oddinfo.py"
    plugin.write_text("""
import dataclasses
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

def compress(model, config, ctx):
    info = {"raw": b"\\xff", "kinds": {"b", "a"}, "thing": object(), (1, 2): "a tuple key", "fn": lambda: 1}
    return b2s.Compressed.from_codes(model, {}, info=info)

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("oddinfo", "other", "data-free", Cfg, compress, identity={}))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: oddinfo
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors: [oddinfo, {name: quantize, bits: 4}]
        metrics: [agreement]
        """)
    out = tmp_path / "run"
    # in a worker process too: a lambda cannot be pickled back to the driver (the worker died of it)
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--executor", executor, "--workers", "1") == 0
    recs = {r["label"]: r for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    assert len(recs) == 3 and recs["quantize(bits=4)"]["status"] == "ok"
    details = recs["oddinfo"]["details"]
    assert recs["oddinfo"]["status"] == "ok" and details["fn"].startswith("<function")
    assert details["raw"] == "b'\\xff'" and details["kinds"] == ["a", "b"] and details["thing"].startswith("<object")
    assert details["(1, 2)"] == "a tuple key"


def test_a_compressor_that_scribbles_on_its_calibration_batch_does_not_change_the_next_cells(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The random dataset's calibration batch was a view of the process's cached inputs: a compressor that normalised
    it in place (x.sub_(x.mean())) changed what every later cell of the worker calibrated on, so results depended
    on the order cells ran. Each call now hands the compressor a tensor of its own."""
    plugin = tmp_path / "scribbler.py"
    seen = tmp_path / "seen.txt"
    plugin.write_text(f"""
import dataclasses
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    track: str = "calibration"

def compress(model, config, ctx):
    x = ctx.calibration(8)
    with open({str(seen)!r}, "a") as f:
        f.write(f"{{float(x.abs().sum()):.6f}}\\n")
    x.zero_()  # careless: in place
    return b2s.Compressed.from_codes(model, {{}})

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("scribbler", "other", lambda c: c.track, Cfg, compress, identity={{}}))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: scribbler
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors: [{name: scribbler, seeds: 2}]
        metrics: [agreement]
        """)
    assert run_cli("run", str(suite), "--out", str(tmp_path / "run"), "--quiet", "--executor", "inline") == 0
    sums = seen.read_text().split()
    assert len(sums) == 2 and sums[0] == sums[1] and float(sums[0]) > 0  # the second seed saw the same inputs


def test_a_model_that_writes_on_its_inputs_does_not_change_the_next_cells_evaluation(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation batches were views of the process's cached inputs: a compressed model with a hook that flips its
    input in place (careless, or sabotage) made every later cell of the worker score on flipped inputs against
    the dense outputs of the real ones. Each batch is now the evaluated model's own."""
    plugin = tmp_path / "flipper.py"
    plugin.write_text("""
import dataclasses, torch
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

def flip(module, args, out):
    args[0].mul_(-1.0)

def compress(model, config, ctx):
    next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(flip)
    return b2s.Compressed.from_codes(model, {})

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("flipper", "other", "data-free", Cfg, compress, identity={}))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: flipper
        models: [tiny:cnn]
        dataset: {name: random, n: 64}
        compressors: [{name: flipper, seeds: 2}]
        metrics: [kl]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet", "--executor", "inline") == 0
    kls = [r["metrics"]["kl"]["value"] for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))]
    assert len(kls) == 3 and kls.count(0.0) == 3, kls  # the dense model and both seeds: each on the real inputs


def test_a_run_whose_every_cell_failed_is_exit_1_with_its_report(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With every cell failed no record has metrics, and the report refused the suite's own `sort_by: ratio` as "not
    one of this run's metrics []": exit 2, a usage error, for a suite that is fine, and no report of the failures."""
    plugin = tmp_path / "broken.py"
    plugin.write_text("""
import dataclasses
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

def compress(model, config, ctx):
    raise RuntimeError("boom")

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("broken", "other", "data-free", Cfg, compress))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: broken
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        baseline: false
        compressors: [broken]
        metrics: [agreement, ratio]
        report: {sort_by: ratio, primary: agreement}
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1
    assert "not one of this run's metrics" not in capsys.readouterr().err
    assert "RuntimeError: boom" in (out / "leaderboard.md").read_text()


def test_nan_outputs_fail_the_cell(write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = tmp_path / "nanout.py"
    plugin.write_text("""
import dataclasses, torch
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

def compress(model, config, ctx):
    with torch.no_grad():
        model.classifier[-1].bias.fill_(float("inf"))
    return b2s.Compressed.from_codes(model, {})

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("nanout", "other", "data-free", Cfg, compress))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: nanout
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors: [nanout]
        metrics: [agreement]
        """)
    out = tmp_path / "run"
    assert run_cli("run", str(suite), "--out", str(out), "--quiet") == 1
    bad = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    bad = [r for r in bad if r["label"] == "nanout"][0]
    assert bad["status"] == "error" and "non-finite" in bad["error"]["message"]


def test_a_data_free_compressor_receives_no_data(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = tmp_path / "spy.py"
    log = tmp_path / "seen.json"
    plugin.write_text(f"""
import dataclasses, json, pathlib
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    track: str = "data-free"

def compress(model, config, ctx):
    log = pathlib.Path({str(log)!r})
    seen = json.loads(log.read_text()) if log.exists() else {{}}
    seen[config.track] = [ctx.calibration is not None, ctx.training is not None]
    log.write_text(json.dumps(seen))
    return b2s.Compressed.from_codes(model, {{}})

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("spy", "other", lambda c: c.track, Cfg, compress))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(plugin))
    suite = write_suite("""
        suite: spy
        models: [tiny:cnn]
        dataset: {name: random, n: 16}
        compressors:
          - name: spy
            grid: {track: [data-free, calibration, training]}
        metrics: [bits]
        """)
    assert run_cli("run", str(suite), "--out", str(tmp_path / "run"), "--quiet") == 0
    seen = json.loads(log.read_text())
    assert seen == {"data-free": [False, False], "calibration": [True, False], "training": [True, True]}


# -- records and folders ----------------------------------------------------------------------------
def _run_tiny(tiny_suite: Path, out: Path) -> dict[str, dict]:
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    return {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}


def test_invalid_records_are_set_aside_named_and_recomputed(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    recs = _run_tiny(tiny_suite, out)
    a, b, c = sorted(recs)[:3]
    broken = dict(recs[a])
    del broken["metrics"]  # a record missing a field
    (out / "cells" / f"{a}.json").write_text(json.dumps(broken))
    (out / "cells" / f"{b}.json").write_text(json.dumps(recs[c]))  # cell c's record saved as cell b
    capsys.readouterr()
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    err = capsys.readouterr().err
    assert f"set aside {out / 'cells' / f'{a}.json'}" in err and "'metrics' is missing" in err
    assert f"{b}.json" in err and "is not its file name" in err
    assert "2 computed, 2 skipped" in err
    aside = sorted(p.name.split(".")[0] for p in (out / "set-aside").iterdir())
    assert aside == sorted([a, b])  # moved, not deleted
    for cid in (a, b):
        assert json.loads((out / "cells" / f"{cid}.json").read_text())["cell_id"] == cid


def test_record_problems_checks_the_fingerprint_hash() -> None:
    fingerprint = {"x": 1}
    rec = {
        "schema": "b2s-bench/record/2",
        "cell_id": fingerprint_id(fingerprint),
        "suite": "s",
        "status": "ok",
        "label": "m",
        "track": "data-free",
        "family": "other",
        "seed": 0,
        "model": {},
        "dataset": None,
        "compressor": {},
        "metrics": {},
        "size": {"total_bits": 1},
        "timings": {},
        "details": {},
        "environment": {},
        "error": None,
        "started_at": "",
        "finished_at": "",
        "fingerprint": fingerprint,
    }
    assert record_problems(rec, rec["cell_id"]) == []
    assert "not the hash of its fingerprint" in " ".join(record_problems({**rec, "fingerprint": {"x": 2}}))
    assert "'seed' is a bool" in " ".join(record_problems({**rec, "seed": True}))


def test_a_hand_edited_size_is_an_invalid_record_set_aside_and_recomputed(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record whose size block does not add up (total_bits cut by hand, its breakdown and ratio left) was read as
    valid: report, compare and publish showed the edited size. Its parts must sum to the total and its ratio must be
    baseline / total; a record that breaks either is named, set aside and recomputed like any invalid one."""
    out = tmp_path / "run"
    recs = _run_tiny(tiny_suite, out)
    cid = next(c for c, r in sorted(recs.items()) if r["compressor"]["pipeline"])
    good = recs[cid]
    assert record_problems(good, cid) == []
    edited = json.loads(json.dumps(good))
    edited["size"]["total_bits"] //= 100
    assert "size.total_bits" in " ".join(record_problems(edited, cid))
    ratio = json.loads(json.dumps(good))
    ratio["size"]["ratio_model"] *= 100
    assert "size.ratio_model" in " ".join(record_problems(ratio, cid))
    (out / "cells" / f"{cid}.json").write_text(json.dumps(edited))
    capsys.readouterr()
    assert run_cli("report", str(out)) == 0
    assert f"{cid}.json" in capsys.readouterr().err
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    assert "1 computed" in capsys.readouterr().err
    assert json.loads((out / "cells" / f"{cid}.json").read_text())["size"] == good["size"]


def test_a_metric_edited_by_hand_against_its_outcomes_is_named_and_left_out(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record whose agreement was edited from its computed value to 99 % kept its per-example outcomes: the
    leaderboard showed 99 (only its interval vanished) and compare took it. A value its own outcomes contradict is
    now left out of report and compare, named, with the command that recomputes it."""
    import shutil

    out = tmp_path / "run"
    recs = _run_tiny(tiny_suite, out)
    cid = next(c for c, r in sorted(recs.items()) if "prune" in r["label"])
    base = tmp_path / "base"
    shutil.copytree(out, base)
    edited = json.loads(json.dumps(recs[cid]))
    assert edited["metrics"]["agreement"]["value"] < 99
    edited["metrics"]["agreement"]["value"] = 99.0
    (out / "cells" / f"{cid}.json").write_text(json.dumps(edited))
    capsys.readouterr()
    assert run_cli("report", str(out)) == 0
    err = capsys.readouterr().err
    assert f"{cid}.json" in err and "metrics.agreement.value 99 does not follow from its per-example outcomes" in err
    assert "--force -k" in err and cid not in (out / "leaderboard.md").read_text().split("## Failed")[0]
    assert run_cli("compare", str(base), str(out)) == 0
    assert "metrics.agreement.value 99 does not follow" in capsys.readouterr().err


def test_a_corrupt_dense_outputs_cache_is_set_aside_and_recomputed(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dense outputs are cached for every run on the machine; one damaged file (a disk error, a copy cut short)
    failed every cell of every run with "PytorchStreamReader failed reading zip archive", and --force did not help.
    It is now set aside, named, and computed again."""
    from b2s_bench.sources import cache_dir

    out = tmp_path / "run"
    _run_tiny(tiny_suite, out)
    cached = sorted((cache_dir() / "reference").glob("*.pt"))
    assert cached
    for path in cached:
        path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--force") == 0
    err = capsys.readouterr().err
    assert "dense outputs" in err and "could not be read" in err and "computed again" in err
    assert all(p.stat().st_size > 100 for p in cached)  # rewritten whole
    assert list((cache_dir() / "reference").glob("*.corrupt-*"))  # the damaged file kept aside


def test_leftovers_of_a_killed_run_are_cleaned(tiny_suite: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run_tiny(tiny_suite, out)
    dead = 2**22 + 12345  # a pid that does not exist here
    from b2s_bench.store.records import host_name

    tmp_record = out / "cells" / f".x.json.{host_name()}-{dead}.abcd.tmp"
    tmp_record.write_text("{")
    half_artifact = out / "artifacts" / f".abc.{host_name()}-{dead}.efgh"
    half_artifact.mkdir(parents=True)
    alive = out / "cells" / f".y.json.{host_name()}-{os.getpid()}.abcd.tmp"  # a live writer's file stays
    alive.write_text("{")
    removed = RunStore(out).clean_leftovers()
    assert set(removed) == {tmp_record, half_artifact} and alive.exists()


def test_the_core_version_joins_cell_ids(tiny_suite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from b2s_bench.suites import cells
    from b2s_bench.suites.load import load_suite

    plugins = load_plugins()
    before = [c.id for c in cells.expand(load_suite(tiny_suite, plugins), plugins, "cpu")]
    monkeypatch.setattr(cells, "CORE_VERSION", "test")
    after = [c.id for c in cells.expand(load_suite(tiny_suite, plugins), plugins, "cpu")]
    assert not set(before) & set(after)


# -- plugins that shadow or vanish ------------------------------------------------------------------
def test_a_misspelled_hook_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "typo.py"
    path.write_text("import b2s_bench as b2s\n\n@b2s.hookimpl\ndef b2s_register_compresors(register):\n    pass\n")
    plugins = load_plugins(files=[str(path)])
    errors = [f.error for f in plugins.failures if f.name == "typo"]
    assert errors and "not a b2s-bench hook" in errors[0] and "b2s_register_compressors" in errors[0]


def test_two_codes_with_one_kind_block_both_and_ls_plugins_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clash.py"
    path.write_text("""
import dataclasses
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

class Mine(b2s.StoredTensorCode):
    kind = "quantize.uniform"   # the built-in quantizer's code kind

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("mine", "other", "data-free", Cfg, lambda m, c, x: None, codes=(Mine,)))
    register(b2s.CompressorSpec("prune", "other", "data-free", Cfg, lambda m, c, x: None))  # a built-in's name
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    plugins = load_plugins()
    errors = " ".join(f.error for f in plugins.failures)
    assert "code kind 'quantize.uniform'" in errors and "'mine'" in errors and "'quantize'" in errors
    assert "'prune' is registered twice" in errors and "b2s-prune" in errors and "clash" in errors
    for name in ("mine", "quantize", "prune"):
        with pytest.raises(b2s.UserError, match="twice|code kind"):
            plugins.compressors.get(name)
    assert "lowrank" in plugins.compressors  # unrelated names work
    assert run_cli("ls", "plugins") == 0
    assert "FAILED" in capsys.readouterr().out


def test_module_does_not_stack_activation_quantizers() -> None:
    model = b2s.testing.tiny_model(0)
    comp = b2s.Compressed(
        {},
        {k: v for k, v in b2s.inference_state(model).items()},
        model,
        {k: tuple(v.shape) for k, v in b2s.inference_state(model).items()},
        activations={"features.4": (-1.0, 1.0)},
        activation_bits=4,
    )
    comp.module(fresh=False)  # the runner builds into the skeleton once

    def quantizers(m: torch.nn.Module) -> int:
        return sum(type(h).__name__ == "_ActivationQuantizer" for mod in m.modules() for h in mod._forward_pre_hooks.values())

    assert quantizers(comp.skeleton) == 1
    assert quantizers(comp.module()) == 1 and quantizers(comp.module(deployed=True)) == 1


@dataclasses.dataclass(frozen=True)
class _Nothing:
    pass


def test_a_compressor_returning_the_wrong_type_fails_its_cell(
    write_suite: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wrong.py"
    path.write_text("""
import dataclasses
import b2s_bench as b2s

@dataclasses.dataclass(frozen=True)
class Cfg:
    pass

@b2s.hookimpl
def b2s_register_compressors(register):
    register(b2s.CompressorSpec("wrong", "other", "data-free", Cfg, lambda m, c, x: {"not": "compressed"}))
""")
    monkeypatch.setenv("B2S_BENCH_PLUGINS", str(path))
    suite = write_suite("""
        suite: wrong
        models: [tiny:cnn]
        dataset: {name: random, n: 8}
        compressors: [wrong]
        metrics: [bits]
        """)
    t0 = time.time()
    assert run_cli("run", str(suite), "--out", str(tmp_path / "run"), "--quiet") == 1
    rec = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*.json")]
    assert any(r["status"] == "error" and "not b2s_bench.Compressed" in r["error"]["message"] for r in rec)
    assert time.time() - t0 < 60


def test_zoo_weights_trained_elsewhere_get_other_cell_ids(write_suite: Callable[..., Path], fake_fmnist: Path) -> None:
    from safetensors.torch import load_file, save_file

    from b2s_bench.suites.cells import expand
    from b2s_bench.suites.load import load_suite

    suite_path = write_suite("""
        suite: zoo-ids
        models: [{name: "zoo:fmnist-cnn-small", options: {epochs: 1, train_limit: 256}}]
        dataset: {name: random, n: 8}
        compressors: [{name: prune, sparsity: 0.5}]
        metrics: [bits]
        """)
    plugins = load_plugins()
    suite = load_suite(suite_path, plugins)
    model = suite.models[0]
    source = plugins.models.get("zoo")
    assert "untrained" in source.fingerprint(model.request)  # validate does not train
    source.prepare(model.request)  # run does, first
    here = [c.id for c in expand(suite, plugins, "cpu")]
    assert here == [c.id for c in expand(suite, plugins, "cpu")]  # stable on this machine
    cached = next((b2s.sources.cache_dir() / "zoo").glob("*.safetensors"))
    state = load_file(str(cached))
    first = next(iter(state))
    state[first] = state[first] + 1e-6  # the same recipe trained on another machine: other numerics
    save_file(state, str(cached))
    assert not set(here) & {c.id for c in expand(suite, plugins, "cpu")}


def test_report_names_every_record_it_drops_and_rebuilds_missing_files(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _run_tiny(tiny_suite, out)
    (out / "cells" / "ffffffffffffffff.json").write_text('{"schema": "b2s-bench/record/2"')
    capsys.readouterr()
    assert run_cli("report", str(out)) == 0
    assert "ffffffffffffffff.json is not a valid record" in capsys.readouterr().err
    (out / "leaderboard.html").unlink()  # a report file lost: "up to date" must notice
    assert run_cli("run", str(tiny_suite), "--out", str(out), "--quiet") == 0
    assert (out / "leaderboard.html").is_file()
