"""Train the zoo language model whose weights ship in the package, and print its manifest entry.

    python scripts/ship_zoo_lm.py                 # tiny-llama, seed 0

Writes ``plugins/sources/zoo_weights/<recipe key>.safetensors`` with the code that caches a recipe
trained in a run (``zoo_lm.train``, ``zoo_lm.save_weights``) and prints the line to paste into
``zoo_lm.SHIPPED``: the file's SHA-256, its per-byte perplexity on every test window of python-docs and
its training time. Needs the corpus on disk (``apt-get install python3-doc``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time


def main() -> None:
    from b2s_bench_plugins.sources import zoo, zoo_lm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama", choices=sorted(zoo_lm.RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    for seed in args.seeds:
        recipe = dataclasses.replace(zoo_lm.RECIPES[args.model], seed=seed)
        start = time.perf_counter()
        state = zoo_lm.train(recipe, progress=True)
        seconds = time.perf_counter() - start
        path = zoo.WEIGHTS_DIR / f"{recipe.key()}.safetensors"
        zoo_lm.save_weights(state, recipe, path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        ppl = zoo_lm.perplexity(recipe, state)
        print(
            f'    "{recipe.key()}": ShippedLM("{args.model}", {seed}, "{sha}", {ppl:.4f}, {seconds:.1f}),'
            f"  # {path.stat().st_size:,} bytes"
        )


if __name__ == "__main__":
    main()
