"""The zoo language model: a LLaMA-style decoder trained here on an offline corpus, with shipped weights.

``zoo-lm:tiny-llama`` is to language models what ``zoo:fmnist-cnn`` is to vision: a small reference
that works offline. Its network (:mod:`.zoo_lm_net`): 3 pre-norm blocks of width 256 (RMSNorm, 4 rotary
attention heads, a SwiGLU MLP of 688 units), untied input embedding and output head, a context of 128
tokens; 2,504,448 parameters, every projection an ``nn.Linear``. It reads UTF-8 bytes (vocabulary 256:
no tokenizer to train or download) and is trained on the train pages of the ``python-docs`` corpus
(Debian's python3-doc, PSF licence: see :mod:`b2s_bench_plugins.data.text`).

The reproducibility rule is the zoo's (:mod:`.zoo`): the recipe below is the cache key; the shipped
recipe's weights load from ``zoo_weights/<key>.safetensors``, checked against :data:`SHIPPED`'s SHA-256;
another recipe (a suite's ``options:``) trains on first use and is cached; ``run --retrain`` (the zoo's
switch) trains every recipe of the run here.

Training (the recipe): ``steps`` AdamW steps (betas 0.9/0.95, weight decay on matrices only) on batches
of ``batch_size`` windows of ``context`` bytes drawn with replacement, seeded, from the train pages; the
learning rate warms up linearly over the first 5 % of the steps, then follows a cosine to 10 % of
``lr``; gradients are clipped to norm 1.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import ConfigError, MissingPrerequisite, UnknownNameError, UserError, build_config, check
from b2s_bench.sources import LoadedModel, ModelRequest

from . import zoo
from .catalog import OFFLINE

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch

    from .zoo_lm_net import TinyLlama

ZOO_LM_VERSION = "1"  # bump when the training code changes results
VOCAB = 256  # UTF-8 bytes


@dataclasses.dataclass(frozen=True)
class LMRecipe:
    """How a zoo language model is made; every field is part of the cache key.

    dim / layers / heads / hidden: the width, the blocks, the attention heads, the SwiGLU units;
    context: tokens per training window (and the longest input); corpus: the training text
    (python-docs); steps / batch_size / lr / weight_decay / seed: the optimization (see the module);
    train_limit: use only this many train windows (quick test recipes; None: all)."""

    dim: int = 256
    layers: int = 3
    heads: int = 4
    hidden: int = 688
    context: int = 128
    corpus: str = "python-docs"
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    seed: int = 0
    train_limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("dim", "layers", "heads", "hidden", "context", "steps", "batch_size"):
            value = getattr(self, name)
            check(value >= 1, f"{name} must be >= 1, got {value}", name)
        check(
            self.dim % self.heads == 0 and (self.dim // self.heads) % 2 == 0,
            f"dim ({self.dim}) must split into {self.heads} heads of an even width",
            "heads",
        )
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}", "weight_decay")
        check(self.corpus == "python-docs", f"only python-docs recipes exist, got {self.corpus!r}", "corpus")
        check(
            self.train_limit is None or self.train_limit >= 1, f"train_limit must be >= 1, got {self.train_limit}", "train_limit"
        )

    def key(self) -> str:
        blob = json.dumps({"zoo-lm": ZOO_LM_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


RECIPES = {
    "tiny-llama": LMRecipe(),
    # a distillation student (half the width, two blocks): built untrained, nothing shipped
    "tiny-llama-small": LMRecipe(dim=128, layers=2, hidden=344),
}


@dataclasses.dataclass(frozen=True)
class ShippedLM:
    """A recipe's weights shipped in the package, as ``scripts/ship_zoo_lm.py`` made them."""

    name: str
    seed: int
    sha256: str  # of the whole file: what loading checks
    perplexity: float  # per byte, on every test window of python-docs (python3.11-doc), when the file was made
    train_seconds: float  # on the shared 2-core machine that made it

    def __post_init__(self) -> None:
        check(len(self.sha256) == 64, f"a shipped sha256 has 64 hex digits, got {self.sha256!r}", "sha256")


#: recipe key -> the shipped file in ``zoo.WEIGHTS_DIR``; a changed recipe has no entry and trains.
#: Made by ``OMP_NUM_THREADS=1 python scripts/ship_zoo_lm.py`` (one thread: with five other jobs on
#: the 2 cores, two threads ran 6x slower); test perplexity 3.98 per byte (1.99 bits per byte) on
#: all 7,345 test windows of python3.11-doc's 38 test pages.
SHIPPED: dict[str, ShippedLM] = {
    "291f2d464972be03": ShippedLM(
        "tiny-llama", 0, "d4d6f935989e7b360b844caea37445fd13fa9a3915eba0280f7dd58b5991729e", 3.9804, 1015.1
    ),  # 10,020,880 bytes
}


def recipe_for(request: ModelRequest) -> LMRecipe:
    if request.arch not in RECIPES:
        raise UnknownNameError("zoo language model", request.arch, RECIPES)
    try:
        return build_config(
            LMRecipe, {**dataclasses.asdict(RECIPES[request.arch]), **dict(request.options)}, owner=f"zoo-lm:{request.arch}"
        )
    except ConfigError as e:
        raise UserError(f"zoo-lm:{request.arch} options: {e}") from None


def architecture(recipe: LMRecipe) -> TinyLlama:
    from .zoo_lm_net import TinyLlama

    return TinyLlama(VOCAB, recipe.dim, recipe.layers, recipe.heads, recipe.hidden, recipe.context)


def schedule(recipe: LMRecipe) -> Callable[[int], float]:
    """The learning-rate factor of step s: linear warm-up over 5 % of the steps, then a cosine to 0.1."""
    warm = max(1, recipe.steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, recipe.steps - warm)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(t, 1.0)))

    return factor


def train(recipe: LMRecipe, progress: bool | None = None) -> dict[str, torch.Tensor]:
    """Train a recipe deterministically (on one machine) and return its state_dict."""
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    from ..data import text

    pool = text.windows(text.corpus_text("train"), text.byte_tokens, recipe.context)
    if recipe.train_limit:
        pool = pool.take(range(min(recipe.train_limit, len(pool))))
    torch.manual_seed(recipe.seed)
    model = architecture(recipe)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=recipe.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(recipe.seed)

    def loss(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(pool), (recipe.batch_size,), generator=gen)
        logits = model(pool.inputs[idx])
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), pool.targets[idx].reshape(-1))

    params = list(model.parameters())

    def clip(*_: object) -> None:  # before every optimizer step
        nn.utils.clip_grad_norm_(params, 1.0)

    opt.register_step_pre_hook(clip)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=recipe.steps, desc=f"training zoo-lm ({recipe.key()})", disable=not show, leave=False)
    model.train()
    try:
        b2s.fitting.train_loop(
            opt,
            loss,
            recipe.steps,
            scheduler=schedule(recipe),
            progress=bar,
            log_every=max(1, recipe.steps // 10),
            postfix=lambda value: f"loss {value:.3f}",
        )
    finally:
        bar.close()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def perplexity(recipe: LMRecipe, state: dict[str, torch.Tensor], limit: int | None = None) -> float:
    """Per-byte perplexity of a recipe's weights on the test windows of python-docs (``limit``: spread)."""
    import torch

    from ..data import text

    test = text.windows(text.corpus_text("test"), text.byte_tokens, recipe.context)
    test = test.take(text.spread(len(test), limit))
    model = architecture(recipe)
    model.load_state_dict(state)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(test), 64):
            logits = model(test.inputs[i : i + 64])
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, VOCAB).double(), test.targets[i : i + 64].reshape(-1), reduction="sum"
                )
            )
    return math.exp(total / test.targets.numel())


#: the zoo's weight-file rule (shipped and verified, else cached and trained on a miss) for these recipes
FILES = zoo.WeightFiles("zoo-lm", SHIPPED, "zoo-lm", lambda recipe: train(recipe))
save_weights = zoo.save_weights


def weights_file(recipe: LMRecipe) -> Path:
    """The file a recipe loads (:meth:`zoo.WeightFiles.file`)."""
    return FILES.file(recipe)


def _build(request: ModelRequest) -> LoadedModel:
    from safetensors.torch import load_file

    recipe = recipe_for(request)
    model = architecture(recipe)
    model.load_state_dict(load_file(str(weights_file(recipe))))
    return LoadedModel(
        model.eval(), (recipe.context,), VOCAB, f"zoo-lm:{request.arch}@{recipe.key()}", _bytes_space(), input_vocab=VOCAB
    )


def _bytes_space() -> str:
    from ..data.text import BYTES

    return BYTES


def _fingerprint(request: ModelRequest) -> str:
    return FILES.fingerprint(recipe_for(request))


def _prepare(request: ModelRequest) -> None:
    FILES.prepare(recipe_for(request))


def _problems(request: ModelRequest) -> list[str]:
    try:
        recipe = recipe_for(request)
    except UserError as e:
        return [b2s.SuiteMistake(str(e), "" if isinstance(e, UnknownNameError) else "options")]
    shipped = FILES.shipped_file(recipe)
    if shipped is not None:
        try:
            FILES.verified(shipped, recipe)
        except MissingPrerequisite as e:
            return [str(e)]
        return []
    if FILES.cache_path(recipe).is_file() and not zoo._retrain:
        return []
    from ..data.text import PYDOC_WHERE, pydoc_root

    if pydoc_root(None) is None:
        return [f"zoo-lm:{request.arch} is trained on first use and needs its corpus: {PYDOC_WHERE}"]
    return []


def _catalog() -> list[tuple[str, str, str]]:
    rows = []
    for name, recipe in sorted(RECIPES.items()):
        seeds = sorted(s.seed for s in SHIPPED.values() if s.name == name)
        if seeds:
            rows.append((name, f"shipped, seed {', '.join(map(str, seeds))} (other seeds train on first use)", OFFLINE))
        elif FILES.cache_path(recipe).is_file():
            rows.append((name, "trained here (cached)", OFFLINE))
        else:
            rows.append((name, "trained here on first use (needs python3-doc)", OFFLINE))
    return rows


SOURCE = b2s.ModelSource(
    "zoo-lm",
    _build,
    lambda p: sorted(n for n in RECIPES if not p or fnmatch.fnmatch(n, p)),
    _fingerprint,
    _problems,
    "reference language models (LLaMA-style, bytes): shipped weights, or trained here on python-docs and cached",
    build_architecture=lambda name: architecture(recipe_for(ModelRequest(f"zoo-lm:{name}"))),
    catalog=_catalog,
    prepare=_prepare,
)


@b2s.hookimpl
def b2s_register_models(register: Callable[[b2s.ModelSource], None]) -> None:
    register(SOURCE)
