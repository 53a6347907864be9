"""Knowledge distillation (plugins/distill.py): contract, tracks, the KD loss, and the student's bits."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from b2s_bench_plugins.compressors.distill import SPEC, build_student, kd_loss

from b2s_bench import ConfigError, build_config
from b2s_bench.compression.sizes import inference_state
from b2s_bench.testing import TinyCNN, check_compressor, tiny_context, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def config(**settings):
    return build_config(SPEC.config, {**SPEC.quick, **settings}, owner="distill")


@pytest.mark.parametrize("data", ["real", "synthetic"])
def test_contract(data: str) -> None:
    report = check_compressor(SPEC, {"data": data})
    assert report.identity_max_error is None and report.bits > 0


def test_track_follows_the_data_setting() -> None:
    assert SPEC.track_for(config(data="real")) == "training"
    assert SPEC.track_for(config(data="synthetic")) == "synthetic"
    assert SPEC.identity is None and SPEC.family == "distillation"


def mean_kd_loss(student: torch.nn.Module, teacher: torch.nn.Module, ctx) -> float:
    losses = []
    with torch.no_grad():
        for x, _ in ctx.training():
            losses.append(float(kd_loss(student.eval()(x), teacher(x), None, 4.0, 1.0)))  # the KD term
    return sum(losses) / len(losses)


def test_kd_training_reduces_the_kd_loss() -> None:
    ctx = tiny_context(0)
    teacher = tiny_model(0)
    cfg = config(epochs=8, steps=0, lr=1e-2)
    before = mean_kd_loss(build_student(cfg, teacher, ctx), teacher, ctx)
    comp = SPEC.compress(tiny_model(0), cfg, ctx)
    after = mean_kd_loss(comp.module(), teacher, ctx)
    assert after < 0.3 * before, (before, after)
    assert comp.info["steps"] == 8 * 4 and comp.info["loss_end"] < comp.info["loss_start"]


def test_the_student_is_stored_whole_and_the_ratio_is_teacher_over_student() -> None:
    teacher = tiny_model(0)
    comp = SPEC.compress(tiny_model(0), config(), tiny_context(0))
    student_state = inference_state(comp.module())
    size = comp.size()
    assert comp.codes == {} and set(comp.raw) == set(student_state)
    assert size.total_bits == 32 * sum(v.numel() for v in student_state.values())
    assert size.baseline_bits == 32 * sum(v.numel() for v in inference_state(teacher).values())
    assert size.layers_baseline_bits == size.baseline_bits  # every teacher tensor is replaced
    assert size.ratio_model == pytest.approx(size.baseline_bits / size.total_bits)
    assert comp.architecture == "tiny:cnn" and comp.replaced == frozenset(inference_state(teacher))
    assert comp.info["architecture_pair"] == "TinyCNN -> tiny:cnn"
    assert comp.info["student_params"] < comp.info["teacher_params"]
    assert not any(k.endswith("num_batches_tracked") for k in comp.raw)


def test_seeded_and_data_free_needs_no_data() -> None:
    no_data = tiny_context(0, with_data=False)
    a = SPEC.compress(tiny_model(0), config(data="synthetic"), no_data)
    b = SPEC.compress(tiny_model(0), config(data="synthetic"), no_data)
    assert all(torch.equal(a.raw[k], b.raw[k]) for k in a.raw)
    assert a.info["alpha"] == 1.0 and a.info["synthesis"]["samples"] == 8
    with pytest.raises(ValueError, match="training"):
        SPEC.compress(tiny_model(0), config(data="real"), no_data)


def test_student_with_the_wrong_number_of_classes_is_refused() -> None:
    ctx = dataclasses.replace(tiny_context(0), build_model=lambda name: TinyCNN(num_classes=5))
    with pytest.raises(ValueError, match="5 outputs"):
        SPEC.compress(tiny_model(0), config(), ctx)


def test_settings_are_checked() -> None:
    for key, value in (("alpha", 1.5), ("student", "tinycnn"), ("synthetic_batch_size", 1), ("epochs", 0)):
        with pytest.raises(ConfigError) as err:
            config(**{key: value})
        assert err.value.key == key
