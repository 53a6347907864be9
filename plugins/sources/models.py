"""Model sources: ``tiny`` (seeded test models), ``timm`` and ``torchvision``.

Weights: ``pretrained: true`` asks the hub (internet or a filled cache); ``weights: PATH`` loads
a local checkpoint with ``weights_only=True``; ``weights: package:MODULE`` loads weights shipped
inside a registered pip package (see :mod:`b2s_bench_plugins.sources.package_weights`). Heavy
imports happen inside functions, so ``b2s-bench ls`` stays fast and a missing extra breaks nothing else.

Each source has a ``catalog`` for ``b2s-bench ls models``: every model with the weights it can have
and whether they work offline or need the hub (:mod:`.catalog`).

Each source's ``problems`` (for ``b2s-bench validate``) finds, without building or the network, what
would stop a model loading: an unknown name (with "did you mean"), a bad timm pretrained tag, a
missing weights file or package, and ``pretrained: true`` weights that are not in the local cache
(the Hugging Face hub cache for timm, ``$TORCH_HOME/hub/checkpoints`` for torchvision and timm's
URL weights), saying how to get them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import b2s_bench as b2s
from b2s_bench import SuiteMistake, UnknownNameError, UserError
from b2s_bench.sources import LoadedModel, ModelRequest

from . import package_weights
from .catalog import OFFLINE, timm_catalog, torchvision_catalog

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    import torch
    from torch import nn

IMAGENET = "imagenet-1k"


def _filter(names: list[str], pattern: str | None) -> list[str]:
    return sorted(n for n in names if not pattern or fnmatch.fnmatchcase(n, pattern))


# -- tiny: seeded random test models -------------------------------------------------------------------
TINY = {
    "cnn": (lambda: b2s.testing.tiny_model(0), (1, 28, 28)),
    "cnn-rgb": (lambda: b2s.testing.TinyCNN(in_channels=3), (3, 32, 32)),
    "mlp": (lambda: b2s.testing.TinyMLP(), (1, 8, 8)),
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
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive holding data.pkl
PICKLE_PROTOCOLS = (2, 3, 4, 5)  # torch.save's legacy format is a pickle stream: 0x80, then the protocol
SAFETENSORS_MAX_HEADER = 100 << 20  # the safetensors format's own limit on its JSON header
CHECKPOINT_KINDS = (
    "a PyTorch checkpoint (torch.save: a zip archive holding data.pkl, or a pickle) or a safetensors file named *.safetensors"
)


def _checkpoint_kind(path: Path) -> str | None:
    """ "torch" or "safetensors" from a file's first bytes (a zip's listing, a safetensors JSON header), else
    None. Nothing is unpickled: this only tells a checkpoint from a file of another kind."""
    import json
    import zipfile

    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(ZIP_MAGIC):
            try:
                with zipfile.ZipFile(path) as archive:
                    return "torch" if any(n.endswith("data.pkl") for n in archive.namelist()) else None
            except (zipfile.BadZipFile, OSError):
                return None
        if len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS:
            return "torch"
        size = path.stat().st_size
        length = int.from_bytes(head, "little") if len(head) == 8 else 0
        if 2 <= length <= min(size - 8, SAFETENSORS_MAX_HEADER):
            try:
                header = json.loads(f.read(length))
            except ValueError:  # includes a header that is not UTF-8
                return None
            return "safetensors" if isinstance(header, dict) else None
    return None


def checkpoint_problem(path: str) -> str | None:
    """Why ``load_checkpoint`` could not read the existing file ``path`` (its kind, from the first bytes,
    against what its name says), or None when it holds a checkpoint of the kind its name says."""
    p = Path(path)
    try:
        kind = _checkpoint_kind(p)
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"weights file {path!r} cannot be read ({e.strerror or e}); fix `weights:` or the file's permissions"
    wanted = "safetensors" if p.suffix == ".safetensors" else "torch"
    if kind == wanted:
        return None
    if kind == "safetensors":
        return (
            f"weights file {path!r} holds safetensors data, but only a name ending in .safetensors is read as "
            f"safetensors; rename it to {p.with_suffix('.safetensors').name}"
        )
    if kind == "torch":
        return (
            f"weights file {path!r} is a PyTorch checkpoint (torch.save), not safetensors; rename it to "
            f"{p.with_suffix('.pth').name}"
        )
    found = "it is empty" if not head else f"it starts with {head!r}"
    return f"weights file {path!r} is not a checkpoint: expected {CHECKPOINT_KINDS}, but {found}; fix `weights:`"


def load_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """A state_dict from a .pth/.pt (``weights_only=True``) or a .safetensors file."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file {path!r} does not exist; check the `weights:` path in the suite")
    problem = checkpoint_problem(path)
    if problem:  # torch.load would fail with an error about its unpickler, not about the file
        raise UserError(problem)
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


def _hub_file(request: ModelRequest) -> str | None:
    """The cached file ``pretrained: true`` would load, or None when it is not cached here."""
    if request.source == "torchvision":
        import torchvision

        try:
            url = torchvision.models.get_model_weights(request.arch).DEFAULT.url
        except Exception:
            return None
        path = torch_hub_checkpoints() / _url_file(url)
        return str(path) if path.is_file() else None
    import timm.models

    try:
        cfg_obj = timm.models.get_pretrained_cfg(request.arch)
    except RuntimeError:
        return None
    cfg = cfg_obj.to_dict() if cfg_obj is not None else {}
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    if cfg.get("hf_hub_id") and importlib.util.find_spec("huggingface_hub") is not None:
        repo, _, revision = cfg["hf_hub_id"].partition("@")
        custom = cfg.get("hf_hub_filename")
        names = [custom, *_safe_alternatives(custom)] if custom else ["model.safetensors", "pytorch_model.bin"]
        found = hf_cached_file(repo, names, revision or None)
        if found:
            return found
    if cfg.get("url"):
        path = torch_hub_checkpoints() / _url_file(cfg["url"])
        return str(path) if path.is_file() else None
    return None


def _prepare(request: ModelRequest) -> None:
    """Download ``pretrained: true`` weights that are not cached yet (the only step that uses the network)."""
    if request.pretrained and _hub_file(request) is None:
        (_tv_build if request.source == "torchvision" else _timm_build)(request)


def _weights_fingerprint(request: ModelRequest) -> str:
    if request.weights and request.weights.startswith("package:"):
        return package_weights.fingerprint(request.weights)
    if request.weights:
        return _file_fingerprint(request.weights) if os.path.isfile(request.weights) else f"missing:{request.weights}"
    if request.pretrained:  # the cached file itself: hub weights can change under the same name
        found = _hub_file(request)
        return f"hub-pretrained:sha256:{b2s.sources.file_digest(found)}" if found else "hub-pretrained:not cached"
    return "random-init"


def _weights_problems(request: ModelRequest) -> list[str]:
    """Problems of ``weights:`` (a file or a package) and of ``pretrained: true``, found without building."""
    if request.weights and request.weights.startswith("package:"):
        return package_weights.problems(request.weights, request.arch if request.source == "timm" else None)
    if request.weights and not os.path.isfile(request.weights):
        return [f"weights file {request.weights!r} not found; download it there or fix `weights:`"]
    if request.weights:
        problem = checkpoint_problem(request.weights)
        return [SuiteMistake(problem, "weights")] if problem else []
    if request.pretrained:
        return _pretrained_problems(request)
    return []


def _pretrained_problems(request: ModelRequest) -> list[str]:
    if request.source == "timm":
        return _timm_pretrained_problems(request.arch)
    if request.source == "torchvision":
        return _tv_pretrained_problems(request.arch)
    return [
        SuiteMistake(f"{request.name} has no pretrained weights; drop `pretrained: true` or give `weights: PATH`", "pretrained")
    ]


def _hub_cached(request: ModelRequest) -> bool:
    """Whether the pretrained weights of this timm or torchvision model are in the local cache."""
    return not _pretrained_problems(request)


# -- local caches (read only: nothing here touches the network) --------------------------------------------
def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment as huggingface_hub resolves it."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def hf_cached_file(repo: str, filenames: list[str], revision: str | None = None) -> str | None:
    """The first of ``filenames`` of a model repo found in the local Hugging Face cache, else None."""
    from huggingface_hub import try_to_load_from_cache  # timm depends on it

    cache = hf_cache_dir()
    for name in filenames:
        try:
            found: Any = try_to_load_from_cache(repo, name, cache_dir=str(cache), revision=revision)
        except Exception:  # a malformed repo id or cache: treat as not cached
            found = None
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def torch_hub_checkpoints() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps downloads ($TORCH_HOME/hub/checkpoints)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _url_file(url: str) -> str:
    from urllib.parse import urlparse

    return os.path.basename(urlparse(url).path)


OFFLINE_FIX = "or give `weights: PATH` (a checkpoint file) instead of `pretrained: true`"


def _timm_pretrained_problems(arch: str) -> list[str]:
    """Whether ``timm.create_model(arch, pretrained=True)`` would find its weights without the network."""
    import importlib.util

    import timm.models

    try:
        cfg_obj = timm.models.get_pretrained_cfg(arch)
    except RuntimeError as e:  # an unknown pretrained tag
        return [SuiteMistake(f"timm:{arch}: {e} {_timm_tags_hint(arch)}")]
    cfg = cfg_obj.to_dict() if cfg_obj is not None else {}
    hub_id, url, file = cfg.get("hf_hub_id"), cfg.get("url"), cfg.get("file")
    if cfg.get("state_dict") is not None:
        return []
    if file:
        return [] if os.path.isfile(file) else [f"timm's pretrained file for timm:{arch} ({file}) does not exist; {OFFLINE_FIX}"]
    url_path = torch_hub_checkpoints() / _url_file(url) if url else None
    url_cached = url_path is not None and url_path.is_file()
    if hub_id and importlib.util.find_spec("huggingface_hub") is not None:
        repo, _, revision = hub_id.partition("@")
        custom = cfg.get("hf_hub_filename")
        names = [custom, *_safe_alternatives(custom)] if custom else ["model.safetensors", "pytorch_model.bin"]
        old_cache = bool(getattr(getattr(timm.models, "_builder", None), "_USE_OLD_CACHE", False))
        if hf_cached_file(repo, names, revision or None) or (old_cache and url_cached):
            return []
        return [
            f"pretrained weights of timm:{arch} are not in the Hugging Face cache {hf_cache_dir()} "
            f"(looked for {repo}: {' or '.join(names)}); `pretrained: true` needs the internet to download them. "
            f"Offline: fill the cache on a machine with internet (`hf download {repo} {names[0]}`, or "
            f"`python -c \"import timm; timm.create_model('{arch}', pretrained=True)\"`) and copy "
            f"models--{repo.replace('/', '--')} into {hf_cache_dir()} (or point HF_HUB_CACHE at it), {OFFLINE_FIX}"
        ]
    if url_path is not None:  # set exactly when timm has a url
        if url_cached:
            return []
        return [
            f"pretrained weights of timm:{arch} are not in the torch hub cache ({url_path} is missing); "
            f"`pretrained: true` needs the internet to download them. Offline: download {url} into "
            f"{url_path.parent}/ (keep the file name), {OFFLINE_FIX}"
        ]
    if hub_id:
        return [
            f"timm:{arch}'s pretrained weights come from the Hugging Face hub ({hub_id}) and need "
            f"huggingface_hub: `pip install huggingface_hub`, then the internet or a filled cache; {OFFLINE_FIX}"
        ]
    return [
        SuiteMistake(
            f"timm has no pretrained weights for {arch}; drop `pretrained: true` (random init) or give `weights: PATH`",
            "pretrained",
        )
    ]


def _safe_alternatives(filename: str) -> list[str]:
    """The .safetensors files timm tries before a .bin one (as timm.models._hub._get_safe_alternatives)."""
    if filename == "pytorch_model.bin":
        return ["model.safetensors"]
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors"]
    return [filename[:-4] + ".safetensors"] if filename.endswith(".bin") else []


def _timm_tags_hint(arch: str) -> str:
    import timm

    base = arch.split(".")[0]
    tags = timm.list_pretrained(f"{base}.*")
    return (
        f"(pretrained tags: {', '.join(tags[:10])}{' ...' if len(tags) > 10 else ''})"
        if tags
        else f"({base} has no pretrained tags)"
    )


def _tv_pretrained_problems(arch: str) -> list[str]:
    """Whether torchvision's DEFAULT weights of ``arch`` are in the torch hub cache (no download)."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except Exception:
        return [
            SuiteMistake(
                f"torchvision has no pretrained weights for {arch}; drop `pretrained: true` or give `weights: PATH`", "pretrained"
            )
        ]
    path = torch_hub_checkpoints() / _url_file(weights.url)
    if path.is_file():
        return []
    return [
        f"pretrained weights of torchvision:{arch} ({weights}) are not in the torch hub cache ({path} is missing); "
        f"`pretrained: true` needs the internet to download them. Offline: download {weights.url} into "
        f"{path.parent}/ (keep the file name), {OFFLINE_FIX}"
    ]


# -- names ------------------------------------------------------------------------------------------------
def _tiny_problems(request: ModelRequest) -> list[str]:
    if request.arch not in TINY:
        return [SuiteMistake(str(UnknownNameError("tiny model", request.arch, TINY)))]
    if request.weights and request.weights.startswith("package:"):
        return [SuiteMistake(f"tiny models load `weights:` from a file, not a package ({request.weights})", "weights")]
    return _weights_problems(request)


def timm_names() -> list[str]:
    """timm's model names, kept in the cache folder per timm version: listing them imports every timm
    model module (2 s), which `validate` and a resumed run would otherwise pay to check one name."""
    import importlib.metadata as md
    import json

    version = md.version("timm")
    path = b2s.sources.cache_dir() / "timm-names" / f"{version}.json"
    try:
        names = json.loads(path.read_text())
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return names
    except (OSError, ValueError):
        pass
    import timm

    names = list(timm.list_models())
    try:
        b2s.write_atomic(path, json.dumps(names))
    except Exception:  # only a cache (a full or read-only folder: CannotWrite): the names are right all the same
        pass
    return names


def _timm_unknown(arch: str) -> UnknownNameError | None:
    """None when timm knows the architecture (a pretrained tag, ``resnet18.a1_in1k``, is checked apart)."""
    names = timm_names()
    if arch.split(".")[0] in set(names):
        return None
    import timm

    err = UnknownNameError("timm model", arch.split(".")[0], names)
    near = " or ".join(repr(s) for s in err.suggestions)
    # timm has over a thousand names: point at `ls` rather than printing the first 30 of them
    err.message = (
        f"unknown timm model {err.name!r}"
        + (f"; did you mean {near}?" if near else "")
        + f" (timm {timm.__version__} has {len(names)} models: `b2s-bench ls models timm:`)"
    )
    return err


def _timm_problems(request: ModelRequest) -> list[str]:
    unknown = _timm_unknown(request.arch)
    if unknown is not None:
        return [SuiteMistake(str(unknown))]
    if "." in request.arch and not request.pretrained:  # timm checks the tag even without weights
        import timm.models

        try:
            timm.models.get_pretrained_cfg(request.arch)
        except RuntimeError as e:
            return [SuiteMistake(f"timm:{request.arch}: {e} {_timm_tags_hint(request.arch)}")]
    return _weights_problems(request)


def _tv_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _tv_problems(request: ModelRequest) -> list[str]:
    names = _tv_names()
    if request.arch not in names:
        return [SuiteMistake(str(UnknownNameError("torchvision model", request.arch, names)))]
    return _weights_problems(request)


def _apply_weights(module: nn.Module, request: ModelRequest, arch_for_package: str) -> str:
    if request.weights and request.weights.startswith("package:"):
        package_weights.load_into(module, request.weights, arch_for_package)
    elif request.weights:
        missing, unexpected = module.load_state_dict(load_checkpoint(request.weights), strict=False)
        if missing or unexpected:
            raise UserError(
                f"weights {request.weights!r} do not fit {request.name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    return _weights_fingerprint(request)


# -- timm -------------------------------------------------------------------------------------------------
def _timm_list(pattern: str | None) -> list[str]:
    import timm

    return timm.list_models(pattern or "*")


def _timm_build(request: ModelRequest) -> LoadedModel:
    import timm

    unknown = _timm_unknown(request.arch)
    if unknown is not None:
        raise unknown
    try:
        module = timm.create_model(request.arch, pretrained=request.pretrained, **dict(request.options))
    except Exception as e:
        if request.pretrained:
            raise UserError(
                f"could not get pretrained weights for timm:{request.arch} ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200]}); pretrained: true needs the internet or a filled "
                "Hugging Face cache (HF_HUB_OFFLINE=1). Or download the file and set `weights: PATH`."
            ) from e
        raise
    checkpoint = _apply_weights(module, request, request.arch)
    cfg = timm.data.resolve_data_config({}, model=module)
    num_classes = getattr(module, "num_classes", 1000)
    return LoadedModel(
        module.eval(), tuple(cfg["input_size"]), num_classes, checkpoint, IMAGENET if num_classes == 1000 else "", dict(cfg)
    )


# -- torchvision ------------------------------------------------------------------------------------------
def _tv_list(pattern: str | None) -> list[str]:
    import torchvision

    return _filter(torchvision.models.list_models(module=torchvision.models), pattern)


def _tv_build(request: ModelRequest) -> LoadedModel:
    import torchvision

    names = _tv_names()
    if request.arch not in names:
        raise UnknownNameError("torchvision model", request.arch, names)
    weights = "DEFAULT" if request.pretrained else None
    try:
        module = torchvision.models.get_model(request.arch, weights=weights, **dict(request.options))
    except Exception as e:
        if request.pretrained:
            raise UserError(
                f"could not download torchvision weights for {request.arch} ({type(e).__name__}); "
                f"pretrained: true needs the internet or a filled torch hub cache "
                f"({torch_hub_checkpoints()}). Or set `weights: PATH`."
            ) from e
        raise
    checkpoint = _apply_weights(module, request, request.arch)
    size = 299 if "inception" in request.arch else 224
    cfg: dict[str, Any] = {
        "input_size": (3, size, size),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
    }
    return LoadedModel(module.eval(), cfg["input_size"], 1000, checkpoint, IMAGENET, cfg)


def _timm_arch(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


def _tv_arch(name: str) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(name, weights=None)


SOURCES = [
    b2s.ModelSource(
        "tiny",
        _tiny_build,
        lambda p: _filter(list(TINY), p),
        _weights_fingerprint,
        _tiny_problems,
        "seeded tiny test models",
        build_architecture=lambda name: TINY[name][0](),
        catalog=lambda: [(name, "none (seeded random init, for tests)", OFFLINE) for name in TINY],
    ),
    b2s.ModelSource(
        "timm",
        _timm_build,
        _timm_list,
        _weights_fingerprint,
        _timm_problems,
        "timm (pip install timm)",
        build_architecture=_timm_arch,
        catalog=timm_catalog,
        prepare=_prepare,
    ),
    b2s.ModelSource(
        "torchvision",
        _tv_build,
        _tv_list,
        _weights_fingerprint,
        _tv_problems,
        "torchvision.models",
        build_architecture=_tv_arch,
        catalog=torchvision_catalog,
        prepare=_prepare,
    ),
]


@b2s.hookimpl
def b2s_register_models(register: Callable[[b2s.ModelSource], None]) -> None:
    for source in SOURCES:
        register(source)
