"""The ``big2small`` compressor: one INR per large conv/linear weight, fitted data-free.

Steps (one function each): pick the layers above ``min_bytes`` and preprocess each (standardise, set
outliers aside, optionally reorder rows and columns); choose each INR's width from the budget, and
store the tensor raw instead whenever its code would not be smaller than the tensor (``_plan``);
fit all INRs (batched, on ``ctx.device``, quantization-aware from the first step with ``qat``) and
retry diverged fits at a lower learning rate (``_fit_with_retries``); optionally fine-tune the
quantized INRs (``_finetune``); build the codes and the record's facts (``_build``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from b2s_bench import Code, Compressed, Context, Target, weight_layers
from b2s_bench.fitting import fidelity

from ..quantize import QuantizeConfig, quantize_tensor
from . import convergence as _convergence
from . import permute as _permute
from .codes import INRCode, code_bits
from .config import Big2SmallConfig
from .fit import FitSettings, LayerResult, LayerTask, count_groups, fit_layers
from .inr import Geometry, INRArch, fp32, init_params, param_count
from .outliers import Preprocessed, preprocess
from .sampling import crop_shape, crop_starts, eval_coords, passes
from .tracking import StopRule, auto_eval_every

__all__ = ["compress", "make_arch", "choose_width", "layer_seed", "fit_settings"]

# generator offsets (added to ctx.seed): INR initialisation, crop positions, Gaussian Fourier matrix,
# the curve's sample
INIT_OFFSET, CROP_OFFSET, FOURIER_OFFSET, EVAL_OFFSET = 10_000, 20_000, 30_000, 40_000


def make_arch(shape: tuple[int, ...], width: int, config: Big2SmallConfig) -> INRArch:
    coord_dims = 2 if config.layout == "2d" else len(shape)
    return INRArch(
        width, config.depth, config.mod_width, fp32(config.omega0), config.frequencies, config.fourier, coord_dims, config.block
    )


def choose_width(shape: tuple[int, ...], config: Big2SmallConfig, n_outliers: int = 0) -> int | None:
    """The budget rule: ``width`` if given, else the largest multiple of ``width_multiple`` (at most
    ``max_width``) whose INR has at most N / target_ratio parameters or, with ``target_bits``, whose
    whole code takes at most target_bits x N bits; None if even the smallest is over."""
    if config.width:
        return config.width
    n = math.prod(shape)
    permuted = config.permute != "none"

    def fits(h: int) -> bool:
        arch = make_arch(shape, h, config)
        if config.target_bits:
            return code_bits(arch, shape, config.inr_bits, n_outliers, permuted).total <= config.target_bits * n
        return param_count(arch) <= n / config.target_ratio

    best = None
    h = config.width_multiple
    while h <= config.max_width and fits(h):
        best = h
        h += config.width_multiple
    return best


def layer_seed(seed: int, offset: int, index: int) -> int:
    return (seed + offset + index) % (2**31)


def fit_settings(config: Big2SmallConfig, lr: float, steps: int, quant_bits: int | None = None, offset: int = 0) -> FitSettings:
    stop = StopRule(auto_eval_every(steps, config.eval_every), config.target_psnr, config.patience, config.min_delta_db)
    return FitSettings(
        steps=steps,
        lr=lr,
        weight_decay=config.weight_decay,
        patch_rows=config.patch_rows,
        patch_cols=config.patch_cols,
        patches=config.patches,
        lambda_grad=config.lambda_grad,
        lambda_freq=config.lambda_freq,
        focal_alpha=config.focal_alpha,
        gdl=config.gdl,
        quant_bits=quant_bits,
        step_offset=offset,
        precision=config.precision,
        warmup=min(config.warmup_steps, steps),
        chunk=config.chunk,
        stop=stop,
    )


@dataclasses.dataclass
class _Plan:
    tasks: dict[str, LayerTask] = dataclasses.field(default_factory=dict)
    prep: dict[str, Preprocessed] = dataclasses.field(default_factory=dict)
    orders: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = dataclasses.field(default_factory=dict)
    fourier_seeds: dict[str, int] = dataclasses.field(default_factory=dict)
    raw_reasons: dict[str, str] = dataclasses.field(default_factory=dict)


def _plan_layer(plan: _Plan, index: int, key: str, w: torch.Tensor, config: Big2SmallConfig, ctx: Context) -> None:
    """Preprocess one weight and add its fitting task to ``plan`` (or the reason it stays raw)."""
    shape = tuple(w.shape)
    pre = preprocess(w, config.standardize, config.outliers, config.kappa, config.top_percent)
    n_out = int(pre.positions.numel())
    width = choose_width(shape, config, n_out)
    if width is None:
        rule = (
            f"{config.target_bits} bits per weight"
            if config.target_bits
            else f"N / target_ratio = {w.numel() / config.target_ratio:.0f} parameters"
        )
        plan.raw_reasons[key] = f"the smallest INR is over the budget of {rule}"
        return
    arch = make_arch(shape, width, config)
    bits = code_bits(arch, shape, config.inr_bits, n_out, config.permute != "none").total
    if bits >= 32 * w.numel():
        plan.raw_reasons[key] = f"its INR code would take {bits} bits, not fewer than the tensor's {32 * w.numel()}"
        return
    rows, cols = pre.target.shape
    exact = torch.zeros(w.numel(), dtype=torch.bool)
    exact[pre.positions] = True
    exact, target = exact.reshape(rows, cols), pre.target
    orders = _permute.orders(pre.target, config.permute)
    if orders is not None:  # the INR fits the reordered matrix
        target, exact = target[orders[0]][:, orders[1]].contiguous(), exact[orders[0]][:, orders[1]].contiguous()
    fseed = layer_seed(ctx.seed, FOURIER_OFFSET, index)
    starts = crop_starts(
        rows,
        cols,
        config.block,
        config.patch_rows,
        config.patch_cols,
        config.patches,
        config.sampling,
        config.steps + config.finetune_steps,
        ctx.generator(CROP_OFFSET + index),
    )
    sample = eval_coords(rows, cols, config.block, config.eval_points, ctx.generator(EVAL_OFFSET + index))
    plan.tasks[key] = LayerTask(
        key,
        target,
        arch,
        Geometry.of(shape, arch, config.layout, fseed),
        init_params(arch, ctx.generator(INIT_OFFSET + index)),
        starts,
        exact,
        sample,
        pre.std,
        float(w.max() - w.min()),
    )
    plan.prep[key], plan.orders[key], plan.fourier_seeds[key] = pre, orders, fseed


def _plan(model: nn.Module, config: Big2SmallConfig, ctx: Context) -> _Plan:
    state = model.state_dict()
    plan = _Plan()
    for index, key in enumerate(weight_layers(model)):
        w = state[key].detach().float().cpu()
        if w.numel() >= config.min_numel:
            _plan_layer(plan, index, key, w, config, ctx)
    return plan


#: outliers, headers and the INR's sign and scale tables come on top of the INR's parameter budget,
#: so a coded layer's ratio sits somewhat under target_ratio; more than 20 % under is short
TARGET_TOLERANCE = 0.2


def target(config: Big2SmallConfig, compressed: Compressed, model: nn.Module) -> Target | None:
    """The coded layers' ratio against ``target_ratio`` (or 32 / ``target_bits``); None when a fixed
    ``width`` is set (no budget was asked)."""
    if config.width:
        return None
    asked = 32.0 / config.target_bits if config.target_bits else float(config.target_ratio)
    return Target("coded-layer ratio", asked, compressed.size().ratio_layers, TARGET_TOLERANCE, "x")


def compress(model: nn.Module, config: Big2SmallConfig, ctx: Context) -> Compressed:
    plan = _plan(model, config, ctx)
    device = torch.device(ctx.device)
    quant = config.quant_aware_bits
    results, attempts, fit_seconds = _fit_with_retries(list(plan.tasks.values()), config, device, ctx, quant)
    failed = [k for k in plan.tasks if k not in results]
    if failed and config.on_failure == "raise":
        tried = ", ".join(f"{lr:g}" for lr in attempts[failed[0]])
        raise RuntimeError(
            f"big2small: the INR fit diverged (non-finite loss or parameters) for "
            f"{len(failed)} layer(s) {failed[:5]}, at learning rates {tried}"
        )
    for key in failed:
        plan.raw_reasons[key] = "the INR fit diverged at every learning rate tried"
    finetune_seconds, finetune_failed = _finetune(plan, results, config, device)
    run = {
        "attempts": attempts,
        "failed": failed,
        "finetune_failed": finetune_failed,
        "fit_seconds": fit_seconds,
        "finetune_seconds": finetune_seconds,
        "device": device,
    }
    return _build(model, plan, results, config, run)


def _finetune(
    plan: _Plan, results: dict[str, LayerResult], config: Big2SmallConfig, device: torch.device
) -> tuple[float, list[str]]:
    """Quantization-aware fine-tuning of the fitted INRs (``finetune_steps``), their curves continued."""
    if not (config.inr_bits <= 8 and config.finetune_steps and results):
        return 0.0, []
    tasks = [dataclasses.replace(plan.tasks[k], init=results[k].params) for k in results]
    settings = fit_settings(config, config.finetune_lr, config.finetune_steps, config.inr_bits, config.steps)
    out = fit_layers(tasks, settings, device, config.batched)
    failed = []
    for t, r in zip(tasks, out, strict=True):
        if not r.ok:
            failed.append(t.key)
            continue
        before = results[t.key]
        curve = {k: before.curve.get(k, []) + r.curve.get(k, []) for k in r.curve}
        results[t.key] = LayerResult(
            r.params,
            torch.cat([before.losses, r.losses]),
            True,
            before.seconds + r.seconds,
            curve,
            before.steps_run + r.steps_run,
            before.stop_reason,
        )
    return _wall(out, config.batched), failed


def _layer_info(
    key: str, original: torch.Tensor, code: INRCode, task: LayerTask, res: LayerResult, lrs: list[float], config: Big2SmallConfig
) -> dict[str, Any]:
    rows, cols = task.target.shape
    p, qb, b = crop_shape(rows, cols, config.block, config.patch_rows, config.patch_cols, config.patches)
    fit_steps = min(res.steps_run, config.steps)
    tail = max(1, fit_steps // 20)
    info = {
        **fidelity.tensor_report(original, code.decode()),  # rel_mae, cosine, psnr of the stored INR
        "inr_params": code.n_params,
        "outliers": code.n_outliers,
        "width": task.arch.width,
        "permuted": code.permuted,
        "fit_seconds": res.seconds,
        "first_loss": float(res.losses[0]),
        "final_loss": float(res.losses[fit_steps - tail : fit_steps].mean()),
        "lr": lrs[-1],
        "retries": len(lrs) - 1,
        "bits": code.bits().total,
        "ratio": 32 * code.numel / code.bits().total,
        "steps_run": res.steps_run,
        "stop_reason": res.stop_reason,
        "passes": passes(res.steps_run, rows, cols, config.block, p, qb, b),
        "entries_per_step": min(b * p * qb * config.block, rows * cols),
        "convergence": _fit_convergence(res, fit_steps, passes(1, rows, cols, config.block, p, qb, b), config).as_dict(),
    }
    if config.finetune_steps and config.inr_bits <= 8 and res.steps_run > fit_steps:
        ft_tail = max(1, (res.steps_run - fit_steps) // 20)
        info["finetune_final_loss"] = float(res.losses[-ft_tail:].mean())
    return info


def _fit_convergence(
    res: LayerResult, fit_steps: int, passes_per_step: float, config: Big2SmallConfig
) -> _convergence.Convergence:
    """How the fit (not the fine-tuning after it) ended: its curve points up to the fit's last step."""
    steps = res.curve.get("step", [])
    keep = sum(1 for s in steps if s <= fit_steps)
    curve = {k: list(v[:keep]) for k, v in res.curve.items()}
    return _convergence.judge(curve, res.stop_reason, fit_steps, passes_per_step, config.patience, config.min_delta_db)


def _caveats(convergence: dict[str, Any], failed: list[str]) -> list[dict[str, str]]:
    """The record's caveats (``details.caveats``): unconverged fits, and fits stored raw after diverging."""
    out = []
    unconverged = _convergence.caveat(convergence)
    if unconverged is not None:
        out.append(unconverged)
    if failed:
        out.append(
            {
                "kind": "fit_failed",
                "message": f"{len(failed)} INR fit(s) diverged at every learning rate "
                f"tried and are stored raw: {', '.join(failed[:5])}",
            }
        )
    return out


def _model_curve(curves: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    """The mean over layers at every curve step; a layer that stopped counts with its last point."""
    steps = sorted({s for c in curves.values() for s in c.get("step", [])})
    out: dict[str, list[float]] = {"step": [], "train_loss": [], "psnr": [], "seconds": []}
    for s in steps:
        last = [max((i for i, t in enumerate(c["step"]) if t <= s), default=None) for c in curves.values()]
        pts = [(c, i) for c, i in zip(curves.values(), last, strict=True) if i is not None]
        out["step"].append(s)
        for k in ("train_loss", "psnr"):
            out[k].append(sum(c[k][i] for c, i in pts) / len(pts))
        out["seconds"].append(max(c["seconds"][i] for c, i in pts))
    return out


def _build(
    model: nn.Module, plan: _Plan, results: dict[str, LayerResult], config: Big2SmallConfig, run: dict[str, Any]
) -> Compressed:
    state = model.state_dict()
    codes: dict[str, INRCode] = {}
    layers: dict[str, dict[str, Any]] = {}
    for key, res in results.items():
        task, pre = plan.tasks[key], plan.prep[key]
        codes[key] = INRCode.build(
            task.arch,
            config.layout,
            plan.fourier_seeds[key],
            tuple(state[key].shape),
            pre.mean,
            pre.std,
            res.params,
            config.inr_bits,
            pre.positions,
            pre.values,
            plan.orders[key],
            config.deploy_cache,
        )
        layers[key] = _layer_info(key, state[key], codes[key], task, res, run["attempts"][key], config)
    fit_seconds, failed = run["fit_seconds"], run["failed"]
    curves = {k: r.curve for k, r in results.items()}
    info = {
        "inr_layers": layers,
        "compressed_layers": len(codes),
        "raw_layers": plan.raw_reasons,
        "fit_seconds": fit_seconds,
        "finetune_seconds": run["finetune_seconds"],
        "steps": config.steps,
        "steps_per_second": config.steps / fit_seconds if fit_seconds > 0 else None,
        "layer_steps_per_second": config.steps * len(plan.tasks) / fit_seconds if fit_seconds > 0 else None,
        "batched": config.batched,
        "fit_device": str(run["device"]),
        "architectures": len({t.arch for t in plan.tasks.values()}),
        "fit_groups": count_groups(list(plan.tasks.values()), fit_settings(config, config.lr, config.steps)),
        "nan_retries": {k: v for k, v in run["attempts"].items() if len(v) > 1 or k in failed},
        "fit_failed": failed,
        "finetune_failed": run["finetune_failed"],
        "curves": curves,
        "curve": _model_curve(curves) if curves else {},
    }
    info["convergence"] = _convergence.summarize({k: _convergence.Convergence(**v["convergence"]) for k, v in layers.items()})
    caveats = _caveats(info["convergence"], failed)
    if caveats:
        info["caveats"] = caveats
    for stat in ("rel_mae", "cosine", "psnr", "passes"):  # aggregates: the mean over INR-coded layers
        values = [v[stat] for v in layers.values() if math.isfinite(v[stat])]
        info[f"weight_{stat}" if stat != "passes" else "passes"] = sum(values) / len(values) if values else None
    small = _small_codes(model, set(codes), config)
    if small:
        info["small_bits"] = {"bits": config.small_bits, "layers": sorted(small)}
    compressed = Compressed.from_codes(model, {**codes, **small}, info)
    compressed.keep_decoded({k: c.decode() for k, c in codes.items()})  # decoding costs seconds: once
    return compressed


def _small_codes(model: nn.Module, coded: set[str], config: Big2SmallConfig) -> dict[str, Code]:
    """With ``small_bits``: the conv/linear weights without an INR, quantized per output channel."""
    if not config.small_bits:
        return {}
    state = model.state_dict()
    # the restricted range this setting has always used (quantize's default became "full" in its
    # version 4): big2small's results do not change with quantize's default
    grid = QuantizeConfig(bits=config.small_bits, granularity="channel", symmetric=True, range="restricted")
    return {k: quantize_tensor(state[k].detach().float(), grid) for k in weight_layers(model) if k not in coded}


def _wall(results: list[LayerResult], batched: bool) -> float:
    if not results:
        return 0.0
    return results[0].seconds if batched else sum(r.seconds for r in results)


def _fit_with_retries(
    tasks: list[LayerTask], config: Big2SmallConfig, device: torch.device, ctx: Context, quant: int | None
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
            out = fit_layers(pending, fit_settings(config, lr, config.steps, quant), device, config.batched, bar)
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
