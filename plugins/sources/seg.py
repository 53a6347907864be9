"""``seg:``: segmentation networks implemented here, built from their settings: ``seg:r2unet``
(R2U-Net, Alom et al. 2018, :mod:`.r2unet`) and ``seg:unet`` (the U-Net of the zoo's cars model,
:class:`.zoo_net.UNet`, at any width). They output N x classes x H x W logits (1 class: binary,
foreground where the logit is > 0).

Weights: random init, or ``weights: PATH`` (a state_dict in a .pth/.pt or .safetensors file, e.g. a
model trained on Carvana); no pretrained weights exist for them. Settings come as the model's
``options:`` (see :class:`SegNetConfig`); registering imports no torch.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import b2s_bench as b2s
from b2s_bench import ConfigError, SuiteMistake, UnknownNameError, UserError, build_config, check
from b2s_bench.sources import LoadedModel, ModelRequest

from .catalog import OFFLINE

if TYPE_CHECKING:
    from torch import nn

ARCHS = {
    "r2unet": "R2U-Net (Alom et al. 2018): U-Net of recurrent residual convolutional units, t = 2",
    "unet": "U-Net (Ronneberger et al. 2015) with BatchNorm, as the zoo's cars-unet",
}


def check_input_size(size: tuple[int, ...], multiple: int) -> None:
    check(
        len(size) == 2 and all(int(s) >= multiple and int(s) % multiple == 0 for s in size),
        f"input_size must be [height, width], each a positive multiple of {multiple} (2**depth), got {list(size)}",
        "input_size",
    )


@dataclasses.dataclass(frozen=True)
class SegNetConfig:
    """Settings of a ``seg:`` network (the model's ``options:``).

    Attributes:
        width: channels of the first level, doubling per level (R2U-Net's paper: 16).
        depth: poolings (the paper: 4).
        t: R2U-Net's recurrent steps per recurrent convolutional layer (the paper: 2); r2unet only.
        recurrent: R2U-Net's recurrent kernel: ``separate`` (the paper's Eq. 1) or ``shared`` (the public
            implementation's one kernel on x + h); r2unet only.
        classes: output channels (1: binary).
        input_size: [height, width] of the inputs (datasets that resize, such as carvana, follow it).
    """

    width: int = 16
    depth: int = 4
    t: int = 2
    recurrent: Literal["separate", "shared"] = "separate"
    classes: int = 1
    input_size: tuple[int, int] = (256, 384)

    def __post_init__(self) -> None:
        check(self.width >= 1, f"width must be >= 1, got {self.width}", "width")
        check(self.depth >= 1, f"depth must be >= 1, got {self.depth}", "depth")
        check(self.t >= 1, f"t must be >= 1, got {self.t}", "t")
        check(
            self.recurrent in ("separate", "shared"), f"recurrent must be separate or shared, got {self.recurrent!r}", "recurrent"
        )
        check(self.classes >= 1, f"classes must be >= 1, got {self.classes}", "classes")
        check_input_size(tuple(self.input_size), 2**self.depth)


def config_for(request: ModelRequest) -> SegNetConfig:
    if request.arch not in ARCHS:
        raise UnknownNameError("seg model", request.arch, ARCHS)
    options = dict(request.options)
    if "input_size" in options and isinstance(options["input_size"], list):
        options["input_size"] = tuple(options["input_size"])
    try:
        return build_config(SegNetConfig, options, owner=request.name)
    except ConfigError as e:
        raise UserError(f"{request.name} options: {e}") from None


def network(name: str, config: SegNetConfig) -> nn.Module:
    if name == "r2unet":
        from .r2unet import R2UNet

        return R2UNet(config.width, config.depth, config.t, config.recurrent, classes=config.classes)
    from .zoo_net import UNet

    return UNet(config.width, config.depth, classes=config.classes)


def _build(request: ModelRequest) -> LoadedModel:
    import torch

    from .models import _file_fingerprint, load_checkpoint

    config = config_for(request)
    if request.pretrained:
        raise UserError(f"{request.name} has no pretrained weights; drop `pretrained: true` or give `weights: PATH`")
    torch.manual_seed(0)  # a seeded random init: the same cell ids mean the same weights
    module = network(request.arch, config)
    checkpoint = "random-init"
    if request.weights:
        module.load_state_dict(load_checkpoint(request.weights))
        checkpoint = _file_fingerprint(request.weights)
    return LoadedModel(
        module.eval(), (3, *config.input_size), config.classes, checkpoint, "car-mask" if config.classes == 1 else ""
    )


def _fingerprint(request: ModelRequest) -> str:
    config = config_for(request)
    base = f"{request.arch}:{sorted(dataclasses.asdict(config).items())}"
    if request.weights:
        from .models import _file_fingerprint

        return f"{base}:" + (
            _file_fingerprint(request.weights) if os.path.isfile(request.weights) else f"missing:{request.weights}"
        )
    return f"{base}:random-init:seed0"


def _problems(request: ModelRequest) -> list[str]:
    try:
        config_for(request)
    except UserError as e:
        return [SuiteMistake(str(e), "" if isinstance(e, UnknownNameError) else "options")]
    if request.pretrained:
        return [
            SuiteMistake(
                f"{request.name} has no pretrained weights; drop `pretrained: true` or give `weights: PATH`", "pretrained"
            )
        ]
    if request.weights:
        from .models import _weights_problems

        return _weights_problems(request)
    return []


def _catalog() -> list[tuple[str, str, str]]:
    return [(name, "random init, or weights: PATH", OFFLINE) for name in sorted(ARCHS)]


def _architecture_only(name: str) -> nn.Module:
    return network(name, config_for(ModelRequest(f"seg:{name}")))


SOURCE = b2s.ModelSource(
    "seg",
    _build,
    lambda p: sorted(n for n in ARCHS if not p or fnmatch.fnmatch(n, p)),
    _fingerprint,
    _problems,
    "segmentation networks implemented here: R2U-Net, U-Net (random init or weights: PATH)",
    build_architecture=_architecture_only,
    catalog=_catalog,
)


@b2s.hookimpl
def b2s_register_models(register: Callable[[b2s.ModelSource], None]) -> None:
    register(SOURCE)
