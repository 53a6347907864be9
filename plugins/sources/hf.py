"""``hf:`` causal language models through Hugging Face ``transformers`` (the optional extra ``llm``, pinned).

Where the weights come from (a suite's model entry):

- ``weights: FOLDER``: a local folder as ``save_pretrained`` writes it (``config.json``, ``*.safetensors``,
  the tokenizer's files); the name after ``hf:`` is then only a label (``hf:llama-2-7b``).
- ``pretrained: true``: the hub id after ``hf:`` (``hf:meta-llama/Llama-2-7b-hf``) from the local hub cache
  (``$HF_HOME``, default ``~/.cache/huggingface``); ``b2s-bench run --download`` fetches what is missing
  (only the safetensors weights, the config and the tokenizer's files).

Safetensors only: a checkpoint of PyTorch pickles (``*.bin``, ``*.pt``) can run code when it is loaded,
so it is refused with the fix (convert it once on a machine you trust, or pick a revision that has
safetensors). Options (``options:``): ``dtype`` (float32, the default; bfloat16 or float16 halve the
memory of a large model), ``revision`` (the hub revision, default main), ``context`` (the longest input
the runner gives the model, default min(max_position_embeddings, 2048)).

The built model is :class:`CausalLM`: the transformers model under ``.model`` (its projections are
``nn.Linear``, so every compressor finds them), called on token ids (N×T int64) and returning the logits
(N×T×vocab). Its tokenizer is ``LoadedModel.data_config["tokenize"]`` (text datasets use it; no BOS or EOS
is added: windows cut from the middle of a document have none either).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import b2s_bench as b2s
from b2s_bench import ConfigError, MissingPrerequisite, UserError, build_config, check
from b2s_bench.sources import LoadedModel, ModelRequest

from .catalog import HUB, OFFLINE

if TYPE_CHECKING:  # torch loads only when a function here needs it (registering imports none)
    from torch import nn

TRANSFORMERS = "transformers==5.23.0"
INSTALL = f"install transformers: `pip install 'b2s-bench[llm]'` ({TRANSFORMERS})"
#: what ``--download`` fetches from the hub: weights as safetensors, the config, the tokenizer
PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "*.model",
    "vocab*",
    "merges.txt",
]
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class HFOptions:
    """dtype: the weights' dtype in memory (float32, bfloat16, float16); revision: the hub revision
    (a branch, tag or commit; ``pretrained: true`` only); context: the longest input the runner gives
    the model (None: min(max_position_embeddings, 2048))."""

    dtype: str = "float32"
    revision: str = "main"
    context: int | None = None

    def __post_init__(self) -> None:
        check(self.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}", "dtype")
        check(self.context is None or self.context >= 1, f"context must be >= 1, got {self.context}", "context")


def options_of(request: ModelRequest) -> HFOptions:
    try:
        return build_config(HFOptions, dict(request.options), owner=request.name)
    except ConfigError as e:
        raise UserError(f"{request.name} options: {e}") from None


def _installed() -> bool:
    return importlib.util.find_spec("transformers") is not None


def pickle_refusal(folder: Path) -> str:
    pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
    only = f" (only {', '.join(pickles[:3])})" if pickles else ""
    return (
        f"{folder} holds no *.safetensors weights{only}: "
        "b2s-bench loads safetensors only, since a PyTorch pickle can run code when it is loaded; convert it once "
        "on a machine you trust (`AutoModelForCausalLM.from_pretrained(FOLDER).save_pretrained(OUT, "
        "safe_serialization=True)` and the tokenizer likewise) and give `weights: OUT`, or choose a hub revision "
        "that has model.safetensors"
    )


def _hub_folder(request: ModelRequest, download: bool = False) -> Path | None:
    """The hub snapshot of ``request.arch`` in the local cache (None when it is not there); with
    ``download`` it fetches what :data:`PATTERNS` names first."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    revision = options_of(request).revision
    try:
        return Path(snapshot_download(request.arch, revision=revision, allow_patterns=PATTERNS, local_files_only=not download))
    except LocalEntryNotFoundError:
        return None


def folder_of(request: ModelRequest) -> Path:
    """The folder the weights load from, checked: it exists and holds safetensors."""
    if request.weights:
        folder = Path(request.weights).expanduser()
        if not folder.is_dir():
            raise MissingPrerequisite(f"{request.name}: no folder {folder} (`weights:` names a save_pretrained folder)")
    elif request.pretrained:
        found = _hub_folder(request)
        if found is None:
            raise MissingPrerequisite(_not_cached(request))
        folder = found
    else:
        raise UserError(_needs_weights(request))
    if not any(folder.glob("*.safetensors")):
        raise MissingPrerequisite(pickle_refusal(folder))
    if not (folder / "config.json").is_file():
        raise MissingPrerequisite(f"{folder} has no config.json: give the folder `save_pretrained` wrote")
    return folder


def _needs_weights(request: ModelRequest) -> str:
    return (
        f"{request.name} needs `weights: FOLDER` (a local folder with config.json and *.safetensors) or "
        "`pretrained: true` (the hub id after hf:, from the local hub cache; `run --download` fetches it)"
    )


def _not_cached(request: ModelRequest) -> str:
    from huggingface_hub import constants

    return (
        f"{request.name} (revision {options_of(request).revision}) is not in the local hub cache "
        f"({constants.HF_HUB_CACHE}): run with --download to fetch its safetensors "
        "weights, config and tokenizer, or download them elsewhere and give `weights: FOLDER`"
    )


class _Tokenize:
    """A picklable ``str -> list[int]`` of a tokenizer folder, loaded on first use."""

    def __init__(self, folder: str):
        self.folder = folder
        self._tokenizer: Any = None

    def __call__(self, text: str) -> list[int]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "_tokenizer": None}


def causal_lm(module: nn.Module) -> nn.Module:
    """Wrap a transformers causal LM so that calling it on token ids returns the logits."""
    from .hf_net import CausalLM

    return CausalLM(module)


def _build(request: ModelRequest) -> LoadedModel:
    if not _installed():
        raise MissingPrerequisite(f"{request.name}: {INSTALL}")
    import torch
    from transformers import AutoModelForCausalLM

    options = options_of(request)
    folder = folder_of(request)
    dtype = getattr(torch, options.dtype)
    module = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True, local_files_only=True)
    config = module.config
    limit = getattr(config, "max_position_embeddings", None) or 2048
    context = options.context or min(int(limit), 2048)
    if context > int(limit):
        raise UserError(f"{request.name} options: context {context} exceeds max_position_embeddings {limit}")
    return LoadedModel(
        causal_lm(module).eval(),
        (context,),
        int(config.vocab_size),
        f"{request.name}:{_fingerprint(request)}",
        "",
        {"tokenize": _Tokenize(str(folder)), "dtype": options.dtype},
        input_vocab=int(config.vocab_size),
    )


def _fingerprint(request: ModelRequest) -> str:
    """What weights load: each safetensors file's SHA-256 (a hub blob is named by it: nothing to read;
    a local folder's files are hashed, once per process) and the config's."""
    try:
        folder = folder_of(request)
    except (MissingPrerequisite, UserError):
        return "missing"
    parts = []
    for path in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        real = Path(os.path.realpath(path))
        blob = real.name if real.parent.name == "blobs" and len(real.name) == 64 else None
        parts.append(f"{path.name}:{(blob or b2s.sources.file_digest(path))[:16]}")
    return f"{options_of(request).dtype}:" + ",".join(parts)


def _prepare(request: ModelRequest) -> None:
    """``run --download``: fetch a ``pretrained: true`` model's files that are not in the hub cache."""
    if request.pretrained and not request.weights and _installed() and _hub_folder(request) is None:
        _hub_folder(request, download=True)


def _problems(request: ModelRequest) -> list[str]:
    try:
        options_of(request)
    except UserError as e:
        return [b2s.SuiteMistake(str(e), "options")]
    if not request.weights and not request.pretrained:
        return [b2s.SuiteMistake(_needs_weights(request), "weights")]
    if not _installed():
        return [f"{request.name}: {INSTALL}"]
    try:
        folder_of(request)
    except MissingPrerequisite as e:
        return [str(e)]
    return []


def _cached_models(pattern: str | None) -> list[str]:
    """Models in the local hub cache (what `pretrained: true` loads offline)."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return []
    from huggingface_hub import constants, scan_cache_dir

    try:  # the folder named at call time: some huggingface_hub releases bind the default at import
        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
    except Exception:  # no cache folder yet
        return []
    names = sorted(r.repo_id for r in repos if r.repo_type == "model")
    return [n for n in names if not pattern or fnmatch.fnmatch(n, pattern)]


def _catalog() -> list[tuple[str, str, str]]:
    rows = [(name, "pretrained: true (hub cache)", OFFLINE) for name in _cached_models(None)]
    rows.append(("ORG/NAME", "pretrained: true (`run --download`)", HUB))
    rows.append(("LABEL", "weights: FOLDER (safetensors)", OFFLINE))
    return rows


SOURCE = b2s.ModelSource(
    "hf",
    _build,
    _cached_models,
    _fingerprint,
    _problems,
    f"causal language models through transformers ({TRANSFORMERS}): a folder, the hub cache, or --download",
    catalog=_catalog,
    prepare=_prepare,
)


@b2s.hookimpl
def b2s_register_models(register: Callable[[b2s.ModelSource], None]) -> None:
    register(SOURCE)
