"""``smp:``: any architecture of segmentation-models-pytorch by name (``smp:Unet``, ``smp:UnetPlusPlus``,
``smp:FPN``, ``smp:DeepLabV3Plus``, ...), through ``smp.create_model``. Needs the optional extra
``segmentation`` (``pip install -e '.[segmentation]'``; the package is pinned: its API churns).

Settings are the model's ``options:`` (:class:`SmpConfig`: encoder, encoder_depth, classes,
input_size). Weights: random init by default; ``pretrained: true`` loads the encoder's ImageNet
weights (smp keeps them on the Hugging Face hub, ``smp-hub/<encoder>.imagenet`` at a pinned
revision), which needs ``b2s-bench run --download`` once (or a filled hub cache): without it,
``validate``/``run`` name what is missing (exit 3) and nothing touches the network. ``weights:
PATH`` loads a whole trained model (a state_dict). The decoder is random unless ``weights:`` gives
it. Registering imports neither torch nor smp.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import b2s_bench as b2s
from b2s_bench import ConfigError, SuiteMistake, UnknownNameError, UserError, build_config, check
from b2s_bench.sources import LoadedModel, ModelRequest

from .catalog import HUB, OFFLINE
from .seg import check_input_size

if TYPE_CHECKING:
    from torch import nn

INSTALL = (
    "smp: models need segmentation-models-pytorch: `pip install -e '.[segmentation]'` "
    "(or `pip install segmentation-models-pytorch==0.6.0`)"
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class SmpConfig:
    """Settings of an ``smp:`` model (the model's ``options:``).

    Attributes:
        encoder: smp's encoder name (``resnet34``, ``efficientnet-b0``, ``tu-<timm name>``, ...).
        encoder_depth: encoder stages (3 to 5; input sizes must be multiples of 2**encoder_depth).
        classes: output channels (1: binary, foreground where the logit is > 0).
        input_size: [height, width] of the inputs (datasets that resize, such as carvana, follow it).
    """

    encoder: str = "resnet34"
    encoder_depth: int = 5
    classes: int = 1
    input_size: tuple[int, int] = (256, 384)

    def __post_init__(self) -> None:
        check(bool(self.encoder), "encoder must name an smp encoder, e.g. resnet34", "encoder")
        check(3 <= self.encoder_depth <= 5, f"encoder_depth must be 3 to 5, got {self.encoder_depth}", "encoder_depth")
        check(self.classes >= 1, f"classes must be >= 1, got {self.classes}", "classes")
        check_input_size(tuple(self.input_size), 2**self.encoder_depth)


def _installed() -> bool:
    return importlib.util.find_spec("segmentation_models_pytorch") is not None


def architectures() -> dict[str, str]:
    """smp's architectures, lower-case name -> its own spelling."""
    import segmentation_models_pytorch as smp

    return {name: cls.__name__ for name, cls in smp.MODEL_ARCHITECTURES_MAPPING.items()}


def config_for(request: ModelRequest) -> SmpConfig:
    options = dict(request.options)
    if isinstance(options.get("input_size"), list):
        options["input_size"] = tuple(options["input_size"])
    try:
        return build_config(SmpConfig, options, owner=request.name)
    except ConfigError as e:
        raise UserError(f"{request.name} options: {e}") from None


def _arch(request: ModelRequest) -> str:
    known = architectures()
    if request.arch.lower() not in known:
        raise UnknownNameError("smp architecture", request.arch, sorted(known.values()))
    return known[request.arch.lower()]


def _encoder_weights_repo(encoder: str) -> tuple[str, str | None] | None:
    """(hub repo, revision) of an encoder's ImageNet weights, or None when smp has none for it."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        return None
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    return (settings["repo_id"], settings.get("revision")) if settings else None


def _cached_encoder(encoder: str) -> str | None:
    from .models import hf_cached_file

    repo = _encoder_weights_repo(encoder)
    return hf_cached_file(repo[0], ["model.safetensors"], repo[1]) if repo else None


def _create(request: ModelRequest, config: SmpConfig, encoder_weights: str | None) -> nn.Module:
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(
            _arch(request),
            encoder_name=config.encoder,
            encoder_weights=encoder_weights,
            encoder_depth=config.encoder_depth,
            classes=config.classes,
            **_decoder_channels(request, config),
        )
    except KeyError as e:  # smp's unknown encoder or weights
        raise UserError(f"{request.name}: {e.args[0] if e.args else e}; fix `options: {{encoder: ...}}`") from None


def _decoder_channels(request: ModelRequest, config: SmpConfig) -> dict[str, Any]:
    """U-Net-like decoders take one width per encoder stage: smp's defaults cut to encoder_depth."""
    if _arch(request) in ("Unet", "UnetPlusPlus", "MAnet") and config.encoder_depth != 5:
        return {"decoder_channels": [256, 128, 64, 32, 16][: config.encoder_depth]}
    return {}


def _build(request: ModelRequest) -> LoadedModel:
    import torch

    from .models import _file_fingerprint, load_checkpoint

    if not _installed():
        raise UserError(INSTALL)
    config = config_for(request)
    torch.manual_seed(0)  # a seeded random init (the decoder, and the encoder without pretrained weights)
    module = _create(request, config, "imagenet" if request.pretrained and not request.weights else None)
    checkpoint = "random-init"
    if request.weights:
        module.load_state_dict(load_checkpoint(request.weights))
        checkpoint = _file_fingerprint(request.weights)
    elif request.pretrained:
        found = _cached_encoder(config.encoder)
        checkpoint = f"encoder-imagenet:sha256:{b2s.sources.file_digest(found)}" if found else "encoder-imagenet"
    data = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return LoadedModel(
        module.eval(), (3, *config.input_size), config.classes, checkpoint, "car-mask" if config.classes == 1 else "", data
    )


def _fingerprint(request: ModelRequest) -> str:
    from .models import _file_fingerprint

    config = config_for(request)
    base = f"smp-0.6:{request.arch.lower()}:{sorted(dataclasses.asdict(config).items())}"
    if request.weights:
        return f"{base}:" + (
            _file_fingerprint(request.weights) if os.path.isfile(request.weights) else f"missing:{request.weights}"
        )
    if request.pretrained:
        found = _cached_encoder(config.encoder) if _installed() else None
        return f"{base}:encoder-imagenet:" + (f"sha256:{b2s.sources.file_digest(found)}" if found else "not cached")
    return f"{base}:random-init:seed0"


def _problems(request: ModelRequest) -> list[str]:
    if not _installed():
        return [INSTALL]
    try:
        config = config_for(request)
        _arch(request)
    except UserError as e:
        return [SuiteMistake(str(e), "" if isinstance(e, UnknownNameError) else "options")]
    if request.weights:
        from .models import _weights_problems

        return _weights_problems(request)
    if request.pretrained:
        repo = _encoder_weights_repo(config.encoder)
        if repo is None:
            return [
                SuiteMistake(
                    f"{request.name}: smp has no ImageNet weights for encoder {config.encoder!r} here "
                    "(tu- encoders name their timm tag instead); drop `pretrained: true` or give `weights: PATH`",
                    "pretrained",
                )
            ]
        if _cached_encoder(config.encoder) is None:
            return [
                f"the ImageNet weights of encoder {config.encoder} ({repo[0]}) are not in the Hugging Face cache; "
                "run once with `b2s-bench run --download` (needs the internet), or fill the cache elsewhere "
                f"(`hf download {repo[0]} model.safetensors config.json --revision {repo[1]}`) and copy it here, "
                "or give `weights: PATH`"
            ]
    return []


def _prepare(request: ModelRequest) -> None:
    """Under ``--download``: fetch the encoder's pretrained weights into the hub cache."""
    if request.pretrained and not request.weights and _installed() and _cached_encoder(config_for(request).encoder) is None:
        _create(request, config_for(request), "imagenet")


def _list(pattern: str | None) -> list[str]:
    if not _installed():
        return []
    return sorted(n for n in architectures().values() if not pattern or fnmatch.fnmatch(n, pattern))


def _catalog() -> list[tuple[str, str, str]]:
    if not _installed():
        return [("*", "segmentation-models-pytorch not installed", INSTALL)]
    rows = []
    for name in _list(None):
        rows.append((name, "random init, or weights: PATH", OFFLINE))
        rows.append((name, "pretrained: true (ImageNet encoder; run --download once)", HUB))
    return rows


def _architecture_only(name: str) -> nn.Module:
    request = ModelRequest(f"smp:{name}")
    return _create(request, config_for(request), None)


SOURCE = b2s.ModelSource(
    "smp",
    _build,
    _list,
    _fingerprint,
    _problems,
    "segmentation-models-pytorch architectures by name (Unet, UnetPlusPlus, FPN, ...); extra `segmentation`",
    build_architecture=_architecture_only,
    catalog=_catalog,
    prepare=_prepare,
)


@b2s.hookimpl
def b2s_register_models(register: Callable[[b2s.ModelSource], None]) -> None:
    register(SOURCE)
