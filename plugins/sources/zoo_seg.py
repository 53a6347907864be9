"""The zoo's segmentation recipe: a small UNet trained on the procedural cars (``carvana-synth``'s
train split), on a CPU in a few minutes; its weights ship like the Fashion-MNIST CNN's (:mod:`.zoo`).

Training: AdamW with a OneCycle schedule on BCE-with-logits plus soft Dice (the usual Carvana loss),
seeded batches with seeded horizontal flips; evaluated by Dice and IoU of the car on the test split
(``carvana-synth`` defaults: 16 cars x 16 views). Registering imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from b2s_bench import check

if TYPE_CHECKING:  # torch loads only when a function here needs it
    import torch

    from .zoo_net import UNet

SEG_ZOO_VERSION = "1"  # bump when the training code changes results


@dataclasses.dataclass(frozen=True)
class UNetRecipe:
    """How the zoo's cars UNet is made. Every field is part of the cache key.

    Attributes:
        width: channels of the first level (doubling per level).
        depth: poolings.
        image_height, image_width: the procedural images' size (the model's input size).
        dataset: the data it learns from (carvana-synth).
        train_cars, views, data_seed: the ``carvana-synth`` train split it learns from.
        epochs, batch_size, weight_decay, seed: the optimisation (AdamW, seeded batches and flips).
        lr: the OneCycle schedule's peak learning rate.
        dice_weight: the soft-Dice term's weight beside binary cross-entropy.
    """

    width: int = 8
    depth: int = 3
    image_height: int = 64
    image_width: int = 96
    dataset: str = "carvana-synth"
    train_cars: int = 40
    views: int = 16
    data_seed: int = 0
    epochs: int = 6
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.width >= 1, f"width must be >= 1, got {self.width}", "width")
        check(self.depth >= 1, f"depth must be >= 1, got {self.depth}", "depth")
        for name in ("image_height", "image_width"):
            size = getattr(self, name)
            check(
                size % 2**self.depth == 0,
                f"{name} must be divisible by 2**depth = {2**self.depth}, got {size}",
                name,
            )
        check(self.train_cars >= 1, f"train_cars must be >= 1, got {self.train_cars}", "train_cars")
        check(self.views >= 1, f"views must be >= 1, got {self.views}", "views")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}", "epochs")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}", "batch_size")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}", "lr")
        check(self.dice_weight >= 0, f"dice_weight must be >= 0, got {self.dice_weight}", "dice_weight")
        check(self.dataset == "carvana-synth", f"only carvana-synth recipes exist, got {self.dataset!r}", "dataset")

    def key(self) -> str:
        blob = json.dumps({"zoo-seg": SEG_ZOO_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.image_height, self.image_width)


def architecture(recipe: UNetRecipe) -> UNet:
    from .zoo_net import UNet

    return UNet(recipe.width, recipe.depth)


def _data(recipe: UNetRecipe, split: str, cars: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised images, int64 masks) of a ``carvana-synth`` split, as the dataset gives them."""
    import torch

    from ..data.carvana import IMAGENET_MEAN, IMAGENET_STD, synthetic_split

    images, masks, _ = synthetic_split(recipe.data_seed, split, cars, recipe.views, recipe.image_height, recipe.image_width)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x, torch.from_numpy(masks.astype("int64"))


def _batches(x: torch.Tensor, y: torch.Tensor, recipe: UNetRecipe) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``recipe.epochs`` seeded passes, each example flipped left-right with probability 1/2."""
    import torch

    gen = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            flip = (torch.rand(idx.numel(), generator=gen) < 0.5).view(-1, 1, 1)
            xb, yb = x[idx], y[idx]
            yield torch.where(flip[:, None], xb.flip(3), xb), torch.where(flip, yb.flip(2), yb)


def seg_loss(logits: torch.Tensor, masks: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """BCE-with-logits plus ``dice_weight`` x (1 - soft Dice) of the car, over the batch."""
    import torch

    target = masks.float().unsqueeze(1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + dice_weight * (1 - dice)


def train(recipe: UNetRecipe, progress: bool = False) -> dict[str, torch.Tensor]:
    """Train the recipe deterministically (on one machine) and return its state_dict."""
    import torch
    from tqdm.auto import tqdm

    import b2s_bench as b2s

    x, y = _data(recipe, "train", recipe.train_cars)
    torch.manual_seed(recipe.seed)
    model = architecture(recipe)
    steps = recipe.epochs * ((x.shape[0] + recipe.batch_size - 1) // recipe.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    bar = tqdm(total=steps, desc=f"training zoo UNet ({recipe.key()})", disable=not progress, leave=False)
    model.train()
    try:
        b2s.fitting.train_loop(
            opt,
            lambda batch: seg_loss(model(batch[0]), batch[1], recipe.dice_weight),
            _batches(x, y, recipe),
            scheduler=sched,
            progress=bar,
            log_every=steps,
        )
    finally:
        bar.close()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def scores(recipe: UNetRecipe, state: dict[str, torch.Tensor], cars: int = 16) -> dict[str, float]:
    """Dice and IoU (%) of the car, pooled over the ``carvana-synth`` test split's pixels, and the mean
    per-image Dice (%)."""
    import torch

    model = architecture(recipe)
    model.load_state_dict(state)
    model.eval()
    x, y = _data(recipe, "test", cars)
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 64])[:, 0] > 0 for i in range(0, x.shape[0], 64)])
    truth = y.bool()
    inter = (pred & truth).flatten(1).sum(1).double()
    sizes = pred.flatten(1).sum(1).double() + truth.flatten(1).sum(1).double()
    per_image = torch.where(sizes > 0, 2 * inter / sizes.clamp_min(1), torch.ones_like(sizes))
    total_inter, total = float(inter.sum()), float(sizes.sum())
    return {
        "dice": 100.0 * 2 * total_inter / total,
        "iou": 100.0 * total_inter / (total - total_inter),
        "mean_image_dice": 100.0 * float(per_image.mean()),
    }
