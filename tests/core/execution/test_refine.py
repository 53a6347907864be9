"""``CompressorSpec.refine``: a later pipeline stage that also works on the whole model, called by
``apply_stage`` after the stage's per-tensor step; a refinement may change stored values only."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from b2s_bench import Code, Compressed, CompressorSpec, Context, StoredTensorCode
from b2s_bench.execution.cell import apply_stage, refine_problems
from b2s_bench.testing import HalfCode, tiny_model


@dataclasses.dataclass(frozen=True)
class Scale:
    """factor: what the refinement multiplies the stored values by (1: nothing asked)."""

    factor: float = 1.0


class Kept(StoredTensorCode):
    kind = "test.kept"
    stored_part = "payload"


def _kept(name: str, tensor: torch.Tensor, config: Scale, ctx: Context) -> Code:
    return Kept(tensor.detach().float().clone())


def _spec(refine: Any) -> CompressorSpec:
    return CompressorSpec(
        "scale", "quantization", "data-free", Scale, compress=lambda m, c, x: None, compress_tensor=_kept, refine=refine
    )  # type: ignore[arg-type, return-value]


def _earlier() -> Compressed:
    model = tiny_model(0)
    state = model.state_dict()
    keys = ["features.0.weight", "features.4.weight", "classifier.1.weight", "classifier.3.weight"]
    return Compressed.from_codes(model, {k: HalfCode.of(state[k]) for k in keys})


def _scaled(compressed: Compressed, config: Scale) -> Compressed:
    codes = {}
    for key, code in compressed.codes.items():
        inner = {n: Kept(c.value * config.factor) for n, c in code.inner.items()}  # type: ignore[attr-defined]
        codes[key] = dataclasses.replace(code, inner=inner)  # type: ignore[type-var]
    out = compressed.with_codes(codes)
    out.info = {"factor": config.factor}
    return out


def test_refine_runs_after_the_per_tensor_step_and_its_facts_go_to_the_stage() -> None:
    seen: dict[str, Any] = {}
    dense = tiny_model(0)

    def refine(compressed: Compressed, model: nn.Module | None, config: Scale, ctx: Context) -> Compressed:
        seen.update(info=dict(compressed.info), model=model, nested=[c.kind for c in compressed.codes.values()])
        return compressed if config.factor == 1.0 else _scaled(compressed, config)

    earlier = _earlier()
    same = apply_stage(earlier, _spec(refine), Scale(), Context(), dense)
    assert seen["info"] == {} and seen["model"] is dense and set(seen["nested"]) == {"nested"}
    assert "refine" not in same.info["stages"][-1]  # nothing asked: no entry
    assert same.info["stages"][-1]["against_previous"]["rel_mae"] == 0.0

    doubled = apply_stage(earlier, _spec(refine), Scale(2.0), Context(), dense)
    stage = doubled.info["stages"][-1]
    assert stage["refine"] == {"factor": 2.0} and stage["tensors"] == 4
    assert stage["against_previous"]["rel_mae"] == pytest.approx(1.0)  # what the stage did, refinement included
    before, after = earlier.state_dict(), doubled.state_dict()
    assert all(torch.equal(after[k], 2 * before[k]) for k in earlier.codes)
    assert doubled.size().total_bits == same.size().total_bits


def test_a_refinement_that_changes_the_layout_is_refused() -> None:
    def drops(compressed: Compressed, model: nn.Module | None, config: Scale, ctx: Context) -> Compressed:
        codes = dict(compressed.codes)
        codes.pop("classifier.3.weight")
        return compressed.with_codes(codes)

    def halves(compressed: Compressed, model: nn.Module | None, config: Scale, ctx: Context) -> Compressed:
        codes = {}
        for key, code in compressed.codes.items():
            inner = {n: Kept(c.value.half()) for n, c in code.inner.items()}  # type: ignore[attr-defined]
            codes[key] = dataclasses.replace(code, inner=inner)  # type: ignore[type-var]
        return compressed.with_codes(codes)

    with pytest.raises(ValueError, match=r"refine must keep the stored layout.*classifier.3.weight.*added or dropped"):
        apply_stage(_earlier(), _spec(drops), Scale(), Context())
    with pytest.raises(ValueError, match=r"refine must keep the stored layout.*float16"):
        apply_stage(_earlier(), _spec(halves), Scale(), Context())
    with pytest.raises(TypeError, match="refine returned dict"):
        apply_stage(_earlier(), _spec(lambda c, m, k, x: {}), Scale(), Context())


def test_refine_problems_names_added_raw_tensors_and_changed_raw_shapes() -> None:
    earlier = _earlier()
    grown = Compressed(earlier.codes, {**earlier.raw, "extra": torch.zeros(3)}, earlier.skeleton, earlier.original_shapes)
    assert any("extra" in p for p in refine_problems(earlier, grown))
    key = next(iter(earlier.raw))
    reshaped = Compressed(earlier.codes, {**earlier.raw, key: torch.zeros(7)}, earlier.skeleton, earlier.original_shapes)
    assert any(p.startswith(f"raw {key}") for p in refine_problems(earlier, reshaped))
    assert refine_problems(earlier, earlier.with_codes(earlier.codes)) == []
