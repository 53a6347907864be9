"""Model sources: ``tiny`` (seeded test models), ``timm`` and ``torchvision``.

Weights: ``pretrained: true`` asks the hub (internet or a filled cache); ``weights: PATH`` loads
a local checkpoint with ``weights_only=True``; ``weights: package:MODULE`` loads weights shipped
inside a pip package (see :mod:`b2s_bench_plugins.package_weights`). Heavy imports happen inside
functions, so ``b2s-bench ls`` stays fast and a missing extra breaks nothing else.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import b2s_bench as b2s
from b2s_bench import LoadedModel, ModelRequest, ModelSource
from b2s_bench.errors import UnknownNameError, UserError
from b2s_bench.testing import TinyCNN, TinyMLP, tiny_model

from . import package_weights

IMAGENET = "imagenet-1k"


def _filter(names: list[str], pattern: str | None) -> list[str]:
    return sorted(n for n in names if not pattern or fnmatch.fnmatchcase(n, pattern))


# -- tiny: seeded random test models -------------------------------------------------------------------
TINY = {
    "cnn": (lambda: tiny_model(0), (1, 28, 28)),
    "cnn-rgb": (lambda: TinyCNN(in_channels=3), (3, 32, 32)),
    "mlp": (lambda: TinyMLP(), (1, 8, 8)),
}


def _tiny_build(request: ModelRequest) -> LoadedModel:
    if request.arch not in TINY:
        raise UnknownNameError("tiny model", request.arch, TINY)
    factory, shape = TINY[request.arch]
    module = factory()
    if request.weights:
        module.load_state_dict(load_checkpoint(request.weights))
    return LoadedModel(module, shape, 10, _file_fingerprint(request.weights) if request.weights else "random-init")


# -- checkpoints ------------------------------------------------------------------------------------------
def load_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """A state_dict from a .pth/.pt (``weights_only=True``) or a .safetensors file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file {path!r} does not exist; check the `weights:` path in the suite")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    state = torch.load(str(p), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path!r} does not hold a state_dict (found {type(state).__name__})")
    return state


def _file_fingerprint(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"file:{os.path.basename(path)}:sha256:{h.hexdigest()[:16]}"


def _weights_fingerprint(request: ModelRequest) -> str:
    if request.weights and request.weights.startswith("package:"):
        return package_weights.fingerprint(request.weights)
    if request.weights:
        return _file_fingerprint(request.weights) if os.path.isfile(request.weights) else f"missing:{request.weights}"
    return "hub-pretrained" if request.pretrained else "random-init"


def _weights_problems(request: ModelRequest) -> list[str]:
    if request.weights and request.weights.startswith("package:"):
        return package_weights.problems(request.weights)
    if request.weights and not os.path.isfile(request.weights):
        return [f"weights file {request.weights!r} not found; download it there or fix `weights:`"]
    if request.pretrained and os.environ.get("HF_HUB_OFFLINE") == "1" and not _hub_cached(request):
        return [f"pretrained weights of {request.name} are not in the Hugging Face cache and HF_HUB_OFFLINE=1; "
                "download them once with internet, or set `weights: PATH`"]
    return []


def _hub_cached(request: ModelRequest) -> bool:
    """Whether timm's pretrained file for this model is in the local Hugging Face cache."""
    if request.source != "timm":
        return True  # torchvision's cache is checked when the model loads
    try:
        import timm.models
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(request.arch)
        repo = getattr(cfg, "hf_hub_id", None)
        if not repo:
            return False
        return any(isinstance(try_to_load_from_cache(repo, f), str)
                   for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"))
    except Exception:
        return False


def _apply_weights(module: nn.Module, request: ModelRequest, arch_for_package: str) -> str:
    if request.weights and request.weights.startswith("package:"):
        package_weights.load_into(module, request.weights, arch_for_package)
    elif request.weights:
        missing, unexpected = module.load_state_dict(load_checkpoint(request.weights), strict=False)
        if missing or unexpected:
            raise UserError(f"weights {request.weights!r} do not fit {request.name}: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")
    return _weights_fingerprint(request)


# -- timm -------------------------------------------------------------------------------------------------
def _timm_list(pattern: str | None) -> list[str]:
    import timm

    return timm.list_models(pattern or "*")


def _timm_build(request: ModelRequest) -> LoadedModel:
    import timm

    if request.arch not in timm.list_models(request.arch) and request.arch.split(".")[0] not in timm.list_models():
        raise UnknownNameError("timm model", request.arch, timm.list_models(), "see `b2s-bench ls models 'timm:*'`")
    try:
        module = timm.create_model(request.arch, pretrained=request.pretrained, **dict(request.options))
    except Exception as e:
        if request.pretrained:
            raise UserError(f"could not get pretrained weights for timm:{request.arch} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]}); pretrained: true needs the internet or a filled "
                            "Hugging Face cache (HF_HUB_OFFLINE=1). Or download the file and set `weights: PATH`.") from e
        raise
    checkpoint = _apply_weights(module, request, request.arch)
    cfg = timm.data.resolve_data_config({}, model=module)
    num_classes = getattr(module, "num_classes", 1000)
    return LoadedModel(module.eval(), tuple(cfg["input_size"]), num_classes, checkpoint,
                       IMAGENET if num_classes == 1000 else "", dict(cfg))


# -- torchvision ------------------------------------------------------------------------------------------
def _tv_list(pattern: str | None) -> list[str]:
    import torchvision

    return _filter(torchvision.models.list_models(module=torchvision.models), pattern)


def _tv_build(request: ModelRequest) -> LoadedModel:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if request.arch not in names:
        raise UnknownNameError("torchvision model", request.arch, names)
    weights = "DEFAULT" if request.pretrained else None
    try:
        module = torchvision.models.get_model(request.arch, weights=weights, **dict(request.options))
    except Exception as e:
        if request.pretrained:
            raise UserError(f"could not download torchvision weights for {request.arch} ({type(e).__name__}); "
                            "pretrained: true needs the internet or a filled torch hub cache "
                            "(~/.cache/torch/hub/checkpoints). Or set `weights: PATH`.") from e
        raise
    checkpoint = _apply_weights(module, request, request.arch)
    size = 299 if "inception" in request.arch else 224
    cfg = {"input_size": (3, size, size), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
           "crop_pct": 0.875, "interpolation": "bilinear"}
    return LoadedModel(module.eval(), cfg["input_size"], 1000, checkpoint, IMAGENET, cfg)


def _timm_arch(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


def _tv_arch(name: str) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None)


SOURCES = [
    ModelSource("tiny", _tiny_build, lambda p: _filter(list(TINY), p), _weights_fingerprint, _weights_problems,
                "seeded tiny test models", build_architecture=lambda name: TINY[name][0]()),
    ModelSource("timm", _timm_build, _timm_list, _weights_fingerprint, _weights_problems, "timm (pip install timm)",
                build_architecture=_timm_arch),
    ModelSource("torchvision", _tv_build, _tv_list, _weights_fingerprint, _weights_problems, "torchvision.models",
                build_architecture=_tv_arch),
]


@b2s.hookimpl
def b2s_register_models(register: Any) -> None:
    for source in SOURCES:
        register(source)
