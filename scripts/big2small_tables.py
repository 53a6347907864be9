"""Print the Big2Small tables of results/README.md from the published records (run from the repository root).

    python scripts/big2small_tables.py [ABLATION_RUN]     (default: big2small-ablation)

First the comparison at equal bits (results/big2small-converged: top-1 with the paired 95 %
bootstrap interval of Big2Small minus the quantization cell of the nearest size, weight PSNR, gaps
to the Gaussian rate-distortion limit, how each fit stopped), then the reconstruction ablation, one
row per cell (and seed), then the claims with their evidence levels as the ``claims`` reporter
judges them. A fit that stopped on its budget while still rising (``details.caveats``) is marked †.
"""

from __future__ import annotations

import glob
import json
import sys
from typing import Any

from b2s_bench_plugins.compressors.big2small.claims import claims_table, load_records

from b2s_bench.reporting import paired_bootstrap, per_example_arrays
from b2s_bench.reporting.tables import load_frame

LOSSES = {(0, 0): "MSE", (1, 0): "MSE + gradient", (0, 1): "MSE + frequency", (1, 1): "full loss"}


def records(run: str) -> list[dict[str, Any]]:
    return [json.load(open(p)) for p in sorted(glob.glob(f"results/{run}/cells/*.json"))]


def value(rec: dict[str, Any], name: str) -> Any:
    return ((rec.get("metrics") or {}).get(name) or {}).get("value")


def stages(rec: dict[str, Any]) -> list[str]:
    return [s["name"] for s in rec["compressor"]["pipeline"]]


def fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def stop(rec: dict[str, Any]) -> str:
    """Steps run, how the fit stopped and its end slope per layer; † when unconverged."""
    parts = []
    details = rec.get("details") or {}
    first = (details.get("stages") or [details])[0]  # a pipeline keeps Big2Small's facts under its stage
    for layer in first.get("inr_layers", {}).values():
        conv = layer.get("convergence") or {}
        slope = conv.get("slope_db_per_1k_steps")
        parts.append(
            f"{layer.get('steps_run', 0):,}, {layer.get('stop_reason', '?')}"
            + (f", {slope:+.2f} dB/1k steps" if slope is not None else "")
            + (" †" if conv.get("unconverged") else "")
        )
    return "; ".join(parts) or "–"


def converged() -> None:
    rs = records("big2small-converged")
    quant = [r for r in rs if stages(r) == ["quantize"]]
    print(
        "| bits/weight (B2S / quant) | Big2Small top-1 % | quantization top-1 % | difference, 95 % CI "
        "| B2S weight PSNR dB | gap to limit dB (B2S / quant) | seed | fit steps, stop, end slope |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for b in sorted((r for r in rs if stages(r) == ["big2small"]), key=lambda r: (value(r, "bits"), r["seed"])):
        q = min(quant, key=lambda q: abs(value(q, "bits") / value(b, "bits") - 1))
        d = paired_bootstrap(per_example_arrays(q)["top1"], per_example_arrays(b)["top1"], scale=100)
        print(
            f"| {value(b, 'bits_per_weight'):.2f} / {value(q, 'bits_per_weight'):.2f} | {value(b, 'top1'):.2f} "
            f"| {value(q, 'top1'):.2f} | {d.diff:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}] | {value(b, 'weight_psnr'):.2f} "
            f"| {fmt(value(b, 'weight_rd_gap_db'), 1)} / {fmt(value(q, 'weight_rd_gap_db'), 1)} "
            f"| {b['seed']} | {stop(b)} |"
        )


def setting(rec: dict[str, Any]) -> str:
    pipeline = rec["compressor"]["pipeline"]
    cfg = pipeline[0]["config"]
    plain = cfg.get("outliers") == "none" and not cfg.get("standardize")
    parts = [
        "no preprocessing" if plain else "preprocessing",
        LOSSES.get((int(bool(cfg.get("lambda_grad"))), int(bool(cfg.get("lambda_freq")))), "?"),
    ]
    if cfg.get("permute", "none") != "none":
        parts.append(f"reordered ({cfg['permute']})")
    parts += [f"then {s['name']} {s['config'].get('bits', '')}".strip() for s in pipeline[1:]]
    return ", ".join(parts)


def ablation(run: str) -> None:
    print(
        "| model | setting | seed | rel-MAE | cosine | PSNR dB | gap to limit dB | top-1 / agreement % | ratio "
        "| fit steps, stop, end slope |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [r for r in records(run) if r["compressor"]["pipeline"] and r["status"] == "ok"]
    for r in sorted(rows, key=lambda r: (r["model"]["label"], setting(r), r["seed"])):
        quality = value(r, "top1") if value(r, "top1") is not None else value(r, "agreement")
        print(
            f"| {r['model']['label']} | {setting(r)} | {r['seed']} | {fmt(value(r, 'weight_rel_mae'))} "
            f"| {fmt(value(r, 'weight_cosine'))} | {fmt(value(r, 'weight_psnr'), 2)} "
            f"| {fmt(value(r, 'weight_rd_gap_db'), 1)} | {fmt(quality, 2)} | {fmt(value(r, 'ratio'), 2)} "
            f"| {stop(r)} |"
        )


def claims(run: str) -> None:
    frame, _, _ = load_frame(f"results/{run}")
    table = claims_table(frame, load_records(f"results/{run}"))
    print("| claim (the paper) | model | verdict here | seeds | difference | 95 % interval |")
    print("|---|---|---|---|---|---|")
    for _, r in table.iterrows():
        print(f"| {r['claim']} | {r['model']} | **{r['verdict']}** | {r['seeds']} | {r['difference']} | {r['interval']} |")


if __name__ == "__main__":
    converged()
    print()
    run = sys.argv[1] if len(sys.argv) > 1 else "big2small-ablation"
    ablation(run)
    for name in ("big2small-converged", run):
        print()
        claims(name)
