"""The GPU check of Big2Small (run through ``benchmarks/gpu_check.sh``): four measurements, one table.

1. fitting speed-up: all layers batched vs the naive per-layer loop, at the paper's settings (one INR
   evaluation per weight, full tensors every step, in 256 x 256 tiles and bounded chunks), on
   ResNet-18's largest layers (``--fit-model``, random init: speed does not depend on the values;
   or EfficientNet-Lite0's; ``--layers`` of them, largest first);
2. one layer at the paper's 10,000 steps: weight PSNR, counted rate, and the gaps to the Gaussian
   rate-distortion limit and to an entropy-coded uniform quantizer at the same rate;
3. on-the-fly inference: the Fashion-MNIST CNN deployed with its INR weight rebuilt on every forward
   (and cached), as a ratio to dense, at batch 1 and 256;
4. evaluation throughput: the runner's evaluation pass against a plain PyTorch loop (batch 256).

``--quick`` shrinks every part (few steps, 8 weights per INR evaluation) so it runs on a CPU in a few
minutes; the numbers are then only a smoke test. Weights: EfficientNet-Lite0's packaged weights
(random ones, said so, if the package is missing); the CNN is the zoo architecture with seeded
random weights (speed does not depend on the values, and nothing has to be trained first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import b2s_common as common
import torch
from bench_big2small import forward_ms
from torch import nn

from b2s_bench.fitting import limits as rd

PAPER = {"block": 1, "patch_rows": 256, "patch_cols": 256, "patches": 0, "lr": 1e-3, "target_ratio": 4.0}
QUICK = {"block": 8, "patch_rows": 32, "patch_cols": 32, "patches": 2}


def lite0_weights() -> tuple[nn.Module, str]:
    try:
        return common.lite0(), "packaged weights"
    except ImportError:
        import timm

        torch.manual_seed(0)
        return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval(), "RANDOM weights (package missing)"


def resnet18() -> tuple[nn.Module, str]:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval(), "random init"


def fit_speedup(args: argparse.Namespace, rows: list[tuple[str, str, str]]) -> None:
    model, source = resnet18() if args.fit_model == "resnet18" else lite0_weights()
    layers = common.largest_layers(model, args.layers)
    settings = {**(QUICK if args.quick else PAPER), "steps": args.fit_steps, "chunk": args.chunk, "eval_every": args.fit_steps}
    speed = {}
    for batched in (True, False):
        comp, _ = common.fit(layers, {**settings, "batched": batched}, args.device)
        speed[batched] = comp.info["steps_per_second"]
    name = "ResNet-18" if args.fit_model == "resnet18" else "Lite0"
    rows.append(
        (
            "fit: batched vs naive",
            f"{name}, {args.layers} largest layers ({source}), {args.fit_steps} steps, block {settings['block']}",
            f"{speed[True]:.2f} vs {speed[False]:.2f} steps/s = {speed[True] / speed[False]:.2f}x",
        )
    )


def paper_layer(args: argparse.Namespace, rows: list[tuple[str, str, str]]) -> None:
    model, source = lite0_weights()
    state = model.state_dict()
    key = args.layer if args.layer in state else "conv_head.weight"
    one = common.Layers({key: state[key].detach().float()})
    settings = {**(QUICK if args.quick else PAPER), "steps": args.paper_steps, "chunk": args.chunk}
    comp, wall = common.fit(one, settings, args.device)
    n = common.numbers(one, comp)
    w = state[key].detach().float()
    quant = rd.ecsq(w, n["rate"]).mse
    rows.append(
        (
            f"one layer, {args.paper_steps:,} steps",
            f"Lite0 {key} {tuple(w.shape)} ({source})",
            f"PSNR {n['psnr']:.2f} dB at {n['rate']:.2f} bits/weight; {n['gap_db']:+.2f} dB from the Gaussian "
            f"limit, {n['gap_ecsq_db']:+.2f} dB from ECSQ (whose own gap is "
            f"{rd.gap_db(quant, rd.gaussian_bound(float(w.var(unbiased=False)), n['rate'])):+.2f}); "
            f"fit {comp.info['fit_seconds']:.0f} s",
        )
    )
    del wall


def latency(args: argparse.Namespace, rows: list[tuple[str, str, str]]) -> None:
    from b2s_bench_plugins.sources import zoo

    torch.manual_seed(0)
    model = zoo.architecture(zoo.RECIPES["fmnist-cnn"]).eval()
    comp, _ = common.fit(model, {**QUICK, "steps": 5}, args.device)
    forms = {"dense": comp.module(), "on the fly": comp.module(deployed=True), "cached": comp.module(deployed=True)}
    for m in forms["cached"].modules():
        if type(m).__name__ == "INRLayer":
            m.cache = True
    for batch in (1, 256):
        x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(args.device)
        ms = {k: forward_ms(m.to(args.device), x, args.repeats, args.device) for k, m in forms.items()}
        rows.append(
            (
                f"inference, batch {batch}",
                "Fashion-MNIST CNN, 401k-weight INR layer (block 8)",
                f"dense {ms['dense']:.3f} ms; on the fly {ms['on the fly'] / ms['dense']:.1f}x; "
                f"cached {ms['cached'] / ms['dense']:.2f}x",
            )
        )


def eval_throughput(args: argparse.Namespace, rows: list[tuple[str, str, str]]) -> None:
    from b2s_bench_plugins.sources import zoo

    from b2s_bench.metrics import run_model
    from b2s_bench.sources import LoadedData

    device = torch.device(args.device)
    model = zoo.architecture(zoo.RECIPES["fmnist-cnn"]).eval().to(device)
    xs = torch.randn(10_000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ys = torch.randint(0, 10, (10_000,), generator=torch.Generator().manual_seed(1))
    data = LoadedData(lambda bs: [(xs[i : i + bs], ys[i : i + bs]) for i in range(0, len(xs), bs)], len(xs), True, "random")

    @torch.inference_mode()
    def plain() -> None:
        correct = 0
        for x, y in data.eval_batches(256):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())

    def ours() -> None:
        logits, labels = run_model(model, data, device, 256)
        int((logits.argmax(1) == labels).sum())

    plain(), ours()
    t_plain, t_ours = [], []
    for _ in range(args.repeats // 4 or 1):
        for fn, out in ((plain, t_plain), (ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    p, o = statistics.median(t_plain), statistics.median(t_ours)
    rows.append(
        (
            "evaluation throughput",
            "10,000 random 1x28x28 inputs, batch 256",
            f"{len(xs) / o:,.0f} vs plain loop {len(xs) / p:,.0f} img/s = {p / o:.3f}x",
        )
    )


PARTS = {"fit": fit_speedup, "layer": paper_layer, "latency": latency, "eval": eval_throughput}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a CPU smoke test of the script")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts, of {','.join(PARTS)}")
    parser.add_argument("--fit-model", choices=("resnet18", "lite0"), default="resnet18", help="fit: whose largest layers")
    parser.add_argument("--layers", type=int, default=0, help="fit: the model's largest layers (0: 25, or 3 quick)")
    parser.add_argument("--fit-steps", type=int, default=0, help="fit: steps per mode (0: 30, or 3 quick)")
    parser.add_argument("--paper-steps", type=int, default=0, help="layer: steps (0: 10,000, or 100 quick)")
    parser.add_argument("--layer", default="conv_head.weight", help="layer: which Lite0 weight")
    parser.add_argument("--chunk", type=int, default=1 << 19, help="INR evaluations at once while fitting")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    args.layers = args.layers or (3 if args.quick else 25)
    args.fit_steps = args.fit_steps or (3 if args.quick else 30)
    args.paper_steps = args.paper_steps or (100 if args.quick else 10_000)
    if args.quick:
        args.repeats = min(args.repeats, 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    rows: list[tuple[str, str, str]] = []
    t_all = time.perf_counter()
    for part in args.parts.split(","):
        t0 = time.perf_counter()
        PARTS[part](args, rows)
        print(f"[{part}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    print(
        f"\nBig2Small GPU check on {name}{' (--quick: a smoke test only)' if args.quick else ''}, "
        f"{time.perf_counter() - t_all:.0f} s in all\n"
    )
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"| {'measurement':{width[0]}s} | {'setting':{width[1]}s} | result |")
    print(f"|{'-' * (width[0] + 2)}|{'-' * (width[1] + 2)}|---|")
    for r in rows:
        print(f"| {r[0]:{width[0]}s} | {r[1]:{width[1]}s} | {r[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
