"""Train the zoo recipes whose weights ship in the package, and print their manifest entries.

    python scripts/ship_zoo_weights.py            # fmnist-cnn, seeds 0 1 2
    python scripts/ship_zoo_weights.py --seeds 0
    python scripts/ship_zoo_weights.py --model cars-unet --seeds 0   # the UNet on the procedural cars

Writes ``plugins/sources/zoo_weights/<recipe key>.safetensors`` with the same code that caches a
recipe trained in a run (``zoo.train``, ``zoo.save_weights``), and prints the lines to paste into
``zoo.SHIPPED``: each file's SHA-256, its score (top-1 on the 10,000 test images; the UNet's Dice
of the car on the carvana-synth test split) and its training time. The CNN needs Fashion-MNIST on
disk (``apt-get install dataset-fashion-mnist``); the UNet's data is procedural.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time

import torch


def main() -> None:
    from b2s_bench_plugins.sources import zoo, zoo_seg

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fmnist-cnn", choices=sorted(zoo.RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for seed in args.seeds:
        recipe = dataclasses.replace(zoo.RECIPES[args.model], seed=seed)
        start = time.perf_counter()
        state = zoo.train(recipe, progress=False)
        seconds = time.perf_counter() - start
        path = zoo.WEIGHTS_DIR / f"{recipe.key()}.safetensors"
        zoo.save_weights(state, recipe, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        score = zoo_seg.scores(recipe, state)["dice"] if isinstance(recipe, zoo_seg.UNetRecipe) else zoo.top1(recipe, state)
        print(
            f'    "{recipe.key()}": Shipped("{args.model}", {seed}, "{digest}", {score:.2f}, '
            f"{seconds:.0f}),  # {path.stat().st_size} bytes, {torch.get_num_threads()} threads",
            flush=True,
        )


if __name__ == "__main__":
    main()
