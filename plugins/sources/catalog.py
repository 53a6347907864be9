"""What ``b2s-bench ls models`` shows of each model: the weights it can have, and whether they work
offline or need the hub (the Hugging Face hub or torchvision's download server).

A source says it through :attr:`b2s_bench.ModelSource.catalog`; ``ls`` falls back to the bare
names of ``list_models`` for any other source.
"""

from __future__ import annotations

from . import package_weights

__all__ = ["OFFLINE", "HUB", "timm_catalog", "torchvision_catalog"]

OFFLINE, HUB = "offline", "needs the hub"


def timm_catalog() -> list[tuple[str, str, str]]:
    """Registered weight packages first (offline), then every architecture: hub weights where timm has them."""
    import timm

    pretrained = {n.split(".")[0] for n in timm.list_pretrained()}
    rows = package_weights.catalog()
    for name in timm.list_models():
        rows.append((name, "pretrained: true", HUB) if name in pretrained else (name, "none (random init)", OFFLINE))
    return rows


def torchvision_catalog() -> list[tuple[str, str, str]]:
    import torchvision

    rows = []
    for name in torchvision.models.list_models(module=torchvision.models):
        try:
            torchvision.models.get_model_weights(name)
            rows.append((name, "pretrained: true", HUB))
        except Exception:  # an architecture without a weights enum
            rows.append((name, "none (random init)", OFFLINE))
    return rows
