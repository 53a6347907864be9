"""``quantize`` on a model: round every targeted weight, then, as the settings ask, AdaRound, bias
correction and activation ranges, in that order, on the data the settings' track allows."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from b2s_bench import INEFFECTIVE, Code, Compressed, Context, add_caveat, inference_state, skeleton_of, weight_layers
from b2s_bench.calibration import (
    ZEROQ,
    activation_ranges,
    analytic_shift,
    bn_input_means,
    bn_successors,
    measured_shifts,
    synthesize,
)

from .adaround import adaround_model
from .config import FLOAT_BITS, QuantizeConfig, data_track
from .rounding import quantize_tensor

__all__ = ["compress", "compress_tensor"]


class _Data:
    """The inputs the settings allow, made or read once: real calibration inputs or synthesized ones."""

    def __init__(self, model: nn.Module, config: QuantizeConfig, ctx: Context, info: dict[str, Any]):
        self.model, self.config, self.ctx, self.info = model, config, ctx, info
        self._synthetic: list[torch.Tensor] | None = None

    def real(self) -> list[torch.Tensor]:
        if self.ctx.calibration is None:
            raise ValueError("these quantize settings need real calibration inputs (the calibration track), and none were given")
        x = self.ctx.calibration(self.config.calibration_samples)
        self.info["calibration_samples"] = int(x.shape[0])
        return list(x.split(64))

    def synthetic(self) -> list[torch.Tensor]:
        if self._synthetic is None:
            c = self.config
            settings = dataclasses.replace(
                ZEROQ,
                samples=c.synthetic_samples,
                lr=c.synthetic_lr,
                iterations=c.synthetic_iterations,
                batch_size=min(64, c.synthetic_samples),
            )
            made = synthesize(self.model, settings, self.ctx)
            self.info["synthesis"] = made.info()
            self._synthetic = list(made.images.split(64))
        return self._synthetic

    def of(self, kind: str) -> list[torch.Tensor]:
        return self.real() if kind == "calibration" else self.synthetic()


def _output_shifts(
    model: nn.Module, codes: dict[str, Code], config: QuantizeConfig, data: _Data
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Each layer's mean output shift (Ŵ − W)·E[x], and why the other layers have none."""
    state = model.state_dict()
    deltas = {key.rpartition(".")[0]: code.decode().float() - state[key].detach().float().cpu() for key, code in codes.items()}
    if config.bias_correction == "bn":
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):  # e.g. a LayerNorm transformer
            norms = sorted({type(m).__name__ for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))})
            uses = f" (it normalises with {' and '.join(norms)})" if norms else ""
            why = (
                f"this model has no BatchNorm{uses}, whose statistics bn needs; "
                "bias_correction: synthetic or calibration measures the shifts instead"
            )
            return {}, dict.fromkeys(deltas, why)
        means, skipped = bn_input_means(model, list(deltas))
        return {n: analytic_shift(model.get_submodule(n), deltas[n], ex) for n, ex in means.items()}, skipped
    shifts = measured_shifts(model, deltas, data.of(config.bias_correction), data.ctx.device)
    return shifts, {n: "not reached by the data" for n in deltas if n not in shifts}


def _correct_biases(
    model: nn.Module,
    codes: dict[str, Code],
    raw: dict[str, torch.Tensor],
    skeleton: nn.Module,
    config: QuantizeConfig,
    data: _Data,
) -> dict[str, Any]:
    """Subtract each layer's output shift (Ŵ − W)·E[x] from its bias, in ``raw`` (the skeleton gets
    any bias it lacked), or add it to the running mean of the BatchNorm right after it."""
    shifts, skipped = _output_shifts(model, codes, config, data)
    no_bias = [n for n in shifts if f"{n}.bias" not in raw]
    successors = bn_successors(model, no_bias) if config.absorb_bias and no_bias else {}
    added, absorbed = [], {}
    for name, shift in shifts.items():
        bias_key = f"{name}.bias"
        if bias_key in raw:
            raw[bias_key] = (raw[bias_key].detach().cpu().float() - shift).to(raw[bias_key].dtype)
        elif name in successors and successors[name] in raw:
            key = successors[name]
            raw[key] = (raw[key].detach().cpu().float() + shift).to(raw[key].dtype)
            absorbed[name] = key
        else:
            layer = skeleton.get_submodule(name)
            raw[bias_key] = -shift
            layer.bias = nn.Parameter(torch.zeros(shift.numel()))
            added.append(bias_key)
    return {
        "mode": config.bias_correction,
        "corrected": sorted(shifts),
        "skipped": skipped,
        "added_bias": added,
        "absorbed_into_bn": absorbed,
        "mean_abs_shift": {n: float(s.abs().mean()) for n, s in shifts.items()},
    }


def _compress_with_data(
    model: nn.Module, codes: dict[str, Code], config: QuantizeConfig, ctx: Context, info: dict[str, Any]
) -> Compressed:
    """``quantize`` with AdaRound, bias correction and activation ranges, in that order."""
    data = _Data(model, config, ctx, info)
    codes = dict(codes)
    if config.adaround and config.bits not in FLOAT_BITS:
        info["adaround"] = adaround_model(model, codes, config, ctx, data.real())
    state = inference_state(model)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    raw = {k: v for k, v in state.items() if k not in codes}
    skeleton = skeleton_of(model)
    if config.bias_correction != "none":
        info["bias_correction"] = done = _correct_biases(model, codes, raw, skeleton, config, data)
        if not done["corrected"]:  # say so: a label that says bias-corrected would otherwise be untrue
            why = sorted(set(done["skipped"].values()))
            add_caveat(
                info,
                INEFFECTIVE,
                f"bias_correction: {config.bias_correction} corrected none of "
                f"the {len(codes)} quantized layers ({'; '.join(why)[:200]}); the result equals "
                "bias_correction: none",
            )
    comp = Compressed(codes, raw, skeleton, shapes, info=info)
    if config.activation_bits is None:
        return comp
    names = [key.rpartition(".")[0] for key in codes]
    module = comp.module().to(ctx.device)
    ranges = activation_ranges(
        module,
        names,
        data.of(config.activation_calibration),
        ctx.device,
        config.activation_bits,
        config.activation_range,
        ctx.generator(77),
    )
    info["activation_calibration"] = config.activation_calibration
    return Compressed(codes, raw, skeleton, shapes, info=info, activations=ranges, activation_bits=config.activation_bits)


def compress(model: nn.Module, config: QuantizeConfig, ctx: Context) -> Compressed:
    """Quantize the model's conv and linear weights (and, as set, correct it with data)."""
    layers = weight_layers(model, skip_first=config.skip_first, skip_last=config.skip_last)
    state = model.state_dict()
    codes = {key: quantize_tensor(state[key], config) for key in layers}
    info: dict[str, Any] = {
        "weight_bits": config.bits,
        "activation_bits": config.activation_bits,
        "data_track": data_track(config),
    }
    if not config.uses_data:
        return Compressed.from_codes(model, codes, info=info)
    return _compress_with_data(model, codes, config, ctx, info)


def compress_tensor(name: str, tensor: torch.Tensor, config: QuantizeConfig, ctx: Context) -> Code:
    """Quantize one tensor, as a later pipeline stage (round-to-nearest only)."""
    if config.uses_data:
        raise ValueError(
            "quantize as a later pipeline stage rounds tensors only: bias_correction, "
            "activation_bits and adaround need the whole model, so use them in the first stage"
        )
    return quantize_tensor(tensor, config)
