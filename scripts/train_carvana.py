"""Train the models of suites/carvana.yaml on Carvana's train cars and write the checkpoints its
``weights:`` paths name, so that ``b2s-bench run suites/carvana.yaml --data ROOT`` finds them.

    python scripts/train_carvana.py --data ROOT                     # every model of the suite
    python scripts/train_carvana.py --data ROOT --models unet --epochs 5 --pretrained-encoder

Each model is built as the suite names it (its ``options:``), without its ``weights:``; smp models
start from their ImageNet encoder with ``--pretrained-encoder`` (the Hugging Face cache, or the
internet). It trains on the suite's ``carvana`` dataset with ``split: train`` (the cars the held-out
split leaves for training, so evaluation never sees a training car), at the model's input size,
with AdamW, a cosine schedule and the zoo UNet's loss (BCE plus soft Dice), then saves the
state_dict (``torch.save``) at the suite's ``weights:`` path and prints the mean Dice of the
held-out cars. A GPU is all but required at the suite's sizes (``--device cuda``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def train_models(
    suite: Path, root: str, labels: list[str] | None, epochs: int, lr: float, device: str, pretrained: bool
) -> list[tuple[str, Path, float]]:
    """(label, checkpoint path, held-out Dice %) of each model trained."""
    from b2s_bench_plugins.data.imagenet import OVERRIDE_ENV

    from b2s_bench.plugins import load_plugins
    from b2s_bench.sources import ModelRequest
    from b2s_bench.suites.load import load_suite

    os.environ[OVERRIDE_ENV] = root  # what --data does
    plugins = load_plugins()
    loaded = load_suite(str(suite), plugins)
    done = []
    for entry in loaded.models:
        if labels and entry.label not in labels:
            continue
        if not entry.request.weights:
            raise SystemExit(f"{suite}: model {entry.label} names no weights: path to write")
        dataset = entry.dataset or loaded.dataset
        if dataset is None or dataset.name != "carvana":
            raise SystemExit(f"{suite}: model {entry.label} is not evaluated on the carvana dataset")
        source = plugins.models.get(entry.request.source)
        request = ModelRequest(entry.request.name, pretrained=pretrained, options=dict(entry.request.options))
        model = source.build(request)
        spec = plugins.datasets.get("carvana")
        train_data = spec.build(dataclasses.replace(dataset.config, split="train"), model)
        test_data = spec.build(dataset.config, model)
        start = time.perf_counter()
        net = _train(model.module.to(device), train_data, epochs, lr, device)
        net.eval()
        dice = _dice(net, test_data, device)
        path = Path(entry.request.weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
        print(f"{entry.label}: {time.perf_counter() - start:.0f} s, held-out Dice {dice:.2f} % -> {path}", flush=True)
        done.append((entry.label, path, dice))
    return done


def _train(net: torch.nn.Module, data, epochs: int, lr: float, device: str) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    """``epochs`` passes over the train cars (the dataset's ``training()``), AdamW on a cosine schedule."""
    from b2s_bench_plugins.sources.zoo_seg import seg_loss

    import b2s_bench as b2s

    steps = epochs * math.ceil(data.num_examples / 8)  # training() yields batches of 8 train images
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)

    def batches():  # type: ignore[no-untyped-def]
        for _ in range(epochs):
            for x, y in data.training():
                yield x.to(device), y.to(device)

    net.train()
    b2s.fitting.train_loop(
        opt,
        lambda batch: seg_loss(net(batch[0]), batch[1], 1.0),
        batches(),
        scheduler=lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)),
        log_every=max(steps // 10, 1),
    )
    return net


def _dice(net: torch.nn.Module, data, device: str) -> float:  # type: ignore[no-untyped-def]
    """Mean per-image Dice (%) of the car on a split (binary logits: the car where > 0)."""
    scores = []
    with torch.no_grad():
        for x, y in data.eval_batches(8):
            pred = net(x.to(device))[:, 0] > 0
            truth = y.to(device) == 1
            inter = (pred & truth).flatten(1).sum(1).double()
            total = pred.flatten(1).sum(1).double() + truth.flatten(1).sum(1).double()
            scores += torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)).tolist()
    return 100.0 * sum(scores) / max(len(scores), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the Carvana root (ROOT/train, ROOT/train_masks)")
    parser.add_argument("--suite", default=str(REPO / "suites" / "carvana.yaml"))
    parser.add_argument("--models", nargs="+", help="model labels of the suite (default: all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pretrained-encoder", action="store_true", help="smp models start from ImageNet encoders")
    args = parser.parse_args()
    train_models(Path(args.suite), args.data, args.models, args.epochs, args.lr, args.device, args.pretrained_encoder)


if __name__ == "__main__":
    main()
