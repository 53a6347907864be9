"""The ``big2small`` compressor: one INR per large conv/linear weight, fitted data-free.

Steps: pick the layers above ``min_bytes``; preprocess each (standardise, set outliers aside);
choose each INR's width from the budget; store the tensor raw instead whenever its code would not
be smaller than the tensor; fit all INRs (batched, on ``ctx.device``); retry diverged fits at a lower
learning rate; quantize the INRs (optionally with quantization-aware fine-tuning); build the codes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from b2s_bench import Compressed, Context, fidelity

from .code import INRCode, code_bits
from .config import Big2SmallConfig
from .fit import FitSettings, LayerResult, LayerTask, count_groups, fit_layers
from .inr import Geometry, INRArch, fp32, init_params, param_count
from .outliers import preprocess

__all__ = ["compress", "make_arch", "choose_width", "layer_seed"]

# generator offsets (added to ctx.seed): INR initialisation, crop positions, Gaussian Fourier matrix
INIT_OFFSET, CROP_OFFSET, FOURIER_OFFSET = 10_000, 20_000, 30_000


def make_arch(shape: tuple[int, ...], width: int, config: Big2SmallConfig) -> INRArch:
    coord_dims = 2 if config.layout == "2d" else len(shape)
    return INRArch(width, config.depth, config.mod_width, fp32(config.omega0), config.frequencies,
                   config.fourier, coord_dims, config.block)


def choose_width(shape: tuple[int, ...], config: Big2SmallConfig) -> int | None:
    """The budget rule: ``width`` if given, else the largest multiple of ``width_multiple`` (at most
    ``max_width``) whose INR has at most N / target_ratio parameters; None if even the smallest has more."""
    if config.width:
        return config.width
    budget = math.prod(shape) / config.target_ratio
    best = None
    h = config.width_multiple
    while h <= config.max_width and param_count(make_arch(shape, h, config)) <= budget:
        best = h
        h += config.width_multiple
    return best


def layer_seed(seed: int, offset: int, index: int) -> int:
    return (seed + offset + index) % (2**31)


def _settings(config: Big2SmallConfig, lr: float, steps: int, quant_bits: int | None = None, offset: int = 0
              ) -> FitSettings:
    return FitSettings(steps, lr, config.weight_decay, config.patch_rows, config.patch_cols, config.patches,
                       config.lambda_grad, config.lambda_freq, config.focal_alpha, config.gdl, quant_bits,
                       offset, config.precision)


def compress(model: nn.Module, config: Big2SmallConfig, ctx: Context) -> Compressed:
    from b2s_bench import weight_layers

    state = model.state_dict()
    keys = list(weight_layers(model))
    tasks: dict[str, LayerTask] = {}
    prep: dict[str, Any] = {}
    raw_reasons: dict[str, str] = {}
    fourier_seeds: dict[str, int] = {}
    total_steps = config.steps + config.finetune_steps
    for index, key in enumerate(keys):
        w = state[key].detach().float().cpu()
        if w.numel() < config.min_numel:
            continue
        shape = tuple(w.shape)
        width = choose_width(shape, config)
        if width is None:
            budget = w.numel() / config.target_ratio
            raw_reasons[key] = f"the smallest INR has more than N / target_ratio = {budget:.0f} parameters"
            continue
        arch = make_arch(shape, width, config)
        pre = preprocess(w, config.standardize, config.outliers, config.kappa, config.top_percent)
        bits = code_bits(arch, shape, config.inr_bits, int(pre.positions.numel())).total
        if bits >= 32 * w.numel():
            raw_reasons[key] = (f"its INR code would take {bits} bits, not fewer than the tensor's "
                                f"{32 * w.numel()}")
            continue
        fseed = layer_seed(ctx.seed, FOURIER_OFFSET, index)
        geo = Geometry.of(shape, arch, config.layout, fseed)
        randoms = torch.rand((total_steps, config.patches, 2), generator=ctx.generator(CROP_OFFSET + index))
        init = init_params(arch, ctx.generator(INIT_OFFSET + index))
        tasks[key] = LayerTask(key, pre.target, arch, geo, init, randoms)
        prep[key], fourier_seeds[key] = pre, fseed

    device = torch.device(ctx.device)
    results, attempts, fit_seconds = _fit_with_retries(list(tasks.values()), config, device, ctx)
    failed = [k for k in tasks if k not in results]
    if failed and config.on_failure == "raise":
        tried = ", ".join(f"{lr:g}" for lr in attempts[failed[0]])
        raise RuntimeError(f"big2small: the INR fit diverged (non-finite loss or parameters) for "
                           f"{len(failed)} layer(s) {failed[:5]}, at learning rates {tried}")
    for key in failed:
        raw_reasons[key] = "the INR fit diverged at every learning rate tried"

    finetune_seconds, finetune_failed = 0.0, []
    if config.inr_bits <= 8 and config.finetune_steps and results:
        ft_tasks = [_restart(tasks[k], results[k].params) for k in results]
        ft_settings = _settings(config, config.finetune_lr, config.finetune_steps, config.inr_bits,
                                config.steps)
        ft = fit_layers(ft_tasks, ft_settings, device, config.batched)
        finetune_seconds = _wall(ft, config.batched)
        for t, r in zip(ft_tasks, ft, strict=True):
            if r.ok:
                results[t.key] = LayerResult(r.params, torch.cat([results[t.key].losses, r.losses]), True,
                                             results[t.key].seconds + r.seconds)
            else:
                finetune_failed.append(t.key)

    codes: dict[str, INRCode] = {}
    decoded: dict[str, torch.Tensor] = {}
    layers_info: dict[str, dict[str, Any]] = {}
    for key, res in results.items():
        task, pre = tasks[key], prep[key]
        code = INRCode.build(task.arch, config.layout, fourier_seeds[key], tuple(state[key].shape), pre.mean,
                             pre.std, res.params, config.inr_bits, pre.positions, pre.values)
        codes[key] = code
        decoded[key] = code.decode()
        tail = max(1, config.steps // 20)
        layers_info[key] = {
            **fidelity.tensor_report(state[key], decoded[key]),  # rel_mae, cosine, psnr of the stored INR
            "inr_params": code.n_params,
            "outliers": code.n_outliers,
            "width": task.arch.width,
            "fit_seconds": res.seconds,
            "first_loss": float(res.losses[0]),
            "final_loss": float(res.losses[config.steps - tail:config.steps].mean()),
            "lr": attempts[key][-1],
            "retries": len(attempts[key]) - 1,
            "bits": code.bits().total,
            "ratio": 32 * code.numel / code.bits().total,
        }
        if config.finetune_steps and config.inr_bits <= 8 and key not in finetune_failed:
            ft_tail = max(1, config.finetune_steps // 20)
            layers_info[key]["finetune_final_loss"] = float(res.losses[-ft_tail:].mean())
    info = {
        "inr_layers": layers_info,
        "compressed_layers": len(codes),
        "raw_layers": raw_reasons,
        "fit_seconds": fit_seconds,
        "finetune_seconds": finetune_seconds,
        "steps": config.steps,
        "steps_per_second": config.steps / fit_seconds if fit_seconds > 0 else None,
        "layer_steps_per_second": config.steps * len(tasks) / fit_seconds if fit_seconds > 0 else None,
        "batched": config.batched,
        "fit_device": str(device),
        "architectures": len({t.arch for t in tasks.values()}),
        "fit_groups": count_groups(list(tasks.values()), _settings(config, config.lr, config.steps)),
        "nan_retries": {k: v for k, v in attempts.items() if len(v) > 1 or k in failed},
        "fit_failed": failed,
        "finetune_failed": finetune_failed,
    }
    for stat in ("rel_mae", "cosine", "psnr"):  # aggregates: the mean over INR-coded layers
        values = [v[stat] for v in layers_info.values() if math.isfinite(v[stat])]
        info[f"weight_{stat}"] = sum(values) / len(values) if values else None
    compressed = Compressed.from_codes(model, codes, info)
    compressed.keep_decoded(decoded)  # decoding every INR costs seconds: do it once
    return compressed


def _restart(task: LayerTask, params: dict[str, torch.Tensor]) -> LayerTask:
    return LayerTask(task.key, task.target, task.arch, task.geometry, params, task.randoms)


def _wall(results: list[LayerResult], batched: bool) -> float:
    if not results:
        return 0.0
    return results[0].seconds if batched else sum(r.seconds for r in results)


def _fit_with_retries(tasks: list[LayerTask], config: Big2SmallConfig, device: torch.device, ctx: Context
                      ) -> tuple[dict[str, LayerResult], dict[str, list[float]], float]:
    """Fit; refit the diverged layers from the same start at lr x nan_lr_factor, up to nan_retries times."""
    results: dict[str, LayerResult] = {}
    attempts: dict[str, list[float]] = {t.key: [] for t in tasks}
    pending, lr, seconds = tasks, config.lr, 0.0
    for attempt in range(config.nan_retries + 1):
        if not pending:
            break
        total = config.steps * (1 if config.batched else len(pending))
        bar = ctx.progress(total, f"big2small: fitting {len(pending)} INRs" + (f" (retry {attempt})" if attempt else ""))
        try:
            out = fit_layers(pending, _settings(config, lr, config.steps), device, config.batched, bar)
        finally:
            bar.close()
        seconds += _wall(out, config.batched)
        failed = []
        for t, r in zip(pending, out, strict=True):
            attempts[t.key].append(lr)
            if r.ok:
                results[t.key] = r
            else:
                failed.append(t)
        if failed:
            retry = f"; retrying at {lr * config.nan_lr_factor:g}" if attempt < config.nan_retries else ""
            ctx.log(f"big2small: {len(failed)} INR fit(s) diverged at lr {lr:g}{retry}")
        pending, lr = failed, lr * config.nan_lr_factor
    return results, attempts, seconds
