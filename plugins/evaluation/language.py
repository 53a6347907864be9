"""The "language-modeling" task and its metrics: perplexity, token agreement and token KL.

A language-modeling dataset yields ``(inputs, targets)`` batches of token windows (N×T int64: window
``i`` predicts ``targets[i]``, the next token of each input) and names the document of each window in
``LoadedData.clusters``, so intervals resample documents (:mod:`b2s_bench_plugins.data.text`).

``run`` reduces the model's N×T×V logits batch by batch to what the metrics read, on the CPU:

- ``nll``: N, each window's mean negative log-likelihood of its targets (nats);
- ``argmax``: N×T, the most likely next token (int32);
- the next-token distributions: for a vocabulary of at most :data:`EXACT_VOCAB` tokens, ``logp``
  (N×T×V, fp32: the zoo LM's 256 bytes); for a larger one (32,000 for LLaMA, where N×T×V floats do not
  fit in the reference cache) the :data:`TOP_K` most likely tokens' ``topk_logp`` and ``topk_index``
  (N×T×k) and ``vocab`` (V).

``token_kl`` is KL(dense ‖ compressed) per token. With full distributions it is exact. With top-k it is
the KL of the two distributions coarsened to the dense model's top-k tokens plus one bucket for all the
others (so never above the full KL: coarsening loses information): the compressed model's probability of
a dense top-k token is exact where that token is in its own top-k too, else taken as its remaining
mass spread evenly over the V − k tokens outside its top-k (a documented approximation of a value the
compressed run did not keep). Every window has the same T targets, so the mean over windows is the
mean over tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import b2s_bench as b2s
from b2s_bench.metrics import MetricSpec, NotApplicable

if TYPE_CHECKING:  # torch loads only when a model runs (registering imports none)
    import torch
    from torch import nn

    from b2s_bench.metrics import Evaluation
    from b2s_bench.sources import LoadedData

TASK = "language-modeling"
LM = frozenset({TASK})
#: a vocabulary this small keeps each token's full log-probabilities (exact KL)
EXACT_VOCAB = 512
#: tokens kept per position for a larger vocabulary
TOP_K = 64
#: the KL of a dense top-k token pair is computed in chunks of this many positions (bounded memory)
KL_CHUNK = 4096


def _reduce(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's logits (n×T×V) as the task's outputs."""
    import torch

    logp = torch.log_softmax(logits.double(), dim=-1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(dim=1)
    out = {"nll": nll.cpu(), "argmax": logp.argmax(dim=-1).to(torch.int32).cpu()}
    vocab = logits.shape[-1]
    if vocab <= EXACT_VOCAB:
        out["logp"] = logp.float().cpu()
    else:
        top = logp.topk(min(TOP_K, vocab), dim=-1)
        out["topk_logp"] = top.values.float().cpu()
        out["topk_index"] = top.indices.to(torch.int32).cpu()
    return out


def run(model: nn.Module, data: LoadedData, device: torch.device, batch_size: int) -> dict[str, torch.Tensor]:
    """The per-window NLL, the argmax tokens and the next-token distributions (see the module)."""
    import torch

    model.eval()
    parts: list[dict[str, torch.Tensor]] = []
    vocab = 0
    with torch.inference_mode():
        for inputs, targets in data.eval_batches(batch_size):
            if targets is None:
                raise b2s.UserError("a language-modeling dataset yields (inputs, targets): this one has no targets")
            logits = model(inputs.to(device))
            if logits.dim() != 3 or logits.shape[:2] != inputs.shape:
                raise b2s.UserError(
                    f"a language model returns logits N×T×V for N×T token ids; got shape {tuple(logits.shape)} "
                    f"for inputs {tuple(inputs.shape)}: pair language-modeling datasets with a language model"
                )
            vocab = int(logits.shape[-1])
            parts.append(_reduce(logits, targets.to(device)))
    if not parts:
        raise b2s.UserError("the language-modeling dataset yielded no windows")
    out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    out["vocab"] = torch.tensor(vocab)
    return out


def _kl_full(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per position KL(p ‖ q) from full log-probabilities (…×V)."""
    p64, q64 = p.double(), q.double()
    return (p64.exp() * (p64 - q64)).sum(dim=-1)


def _kl_topk(
    p_logp: torch.Tensor, p_index: torch.Tensor, q_logp: torch.Tensor, q_index: torch.Tensor, vocab: int
) -> torch.Tensor:
    """Per position KL over the dense top-k plus the rest bucket (positions flattened: P×k)."""
    import torch

    p_logp, q_logp = p_logp.double(), q_logp.double()
    k = q_logp.shape[-1]
    q_rest = (1 - q_logp.exp().sum(-1)).clamp(min=1e-30)
    q_spread = (q_rest / max(1, vocab - k)).log()  # each token outside the compressed top-k
    out = []
    for s in range(0, p_logp.shape[0], KL_CHUNK):
        pl, pi = p_logp[s : s + KL_CHUNK], p_index[s : s + KL_CHUNK]
        ql, qi = q_logp[s : s + KL_CHUNK], q_index[s : s + KL_CHUNK]
        match = pi.unsqueeze(-1) == qi.unsqueeze(-2)  # P×k(dense)×k(compressed)
        found = match.any(-1)
        exact = (match.double() * ql.unsqueeze(-2)).sum(-1)
        q_at = torch.where(found, exact, q_spread[s : s + KL_CHUNK].unsqueeze(-1))
        p = pl.exp()
        p_other = (1 - p.sum(-1)).clamp(min=0)
        q_other = (1 - q_at.exp().sum(-1)).clamp(min=1e-30)
        rest = torch.where(p_other > 0, p_other * (p_other.clamp(min=1e-30).log() - q_other.log()), torch.zeros_like(p_other))
        out.append((p * (pl - q_at)).sum(-1) + rest)
    return torch.cat(out)


def token_kl_per_window(ev: Evaluation) -> torch.Tensor:
    """KL(dense ‖ compressed) per window: the mean over its tokens (nats)."""
    dense, comp = ev.baseline_outputs, ev.outputs
    if "logp" in dense and "logp" in comp:
        return _kl_full(dense["logp"], comp["logp"]).mean(dim=1)
    if "topk_logp" in dense and "topk_logp" in comp:
        n, t, _ = dense["topk_logp"].shape
        p_logp, p_index, q_logp, q_index = (
            x.reshape(n * t, -1) for x in (dense["topk_logp"], dense["topk_index"], comp["topk_logp"], comp["topk_index"])
        )
        return _kl_topk(p_logp, p_index, q_logp, q_index, int(dense["vocab"])).reshape(n, t).mean(dim=1)
    raise NotApplicable("the dense and the compressed outputs keep different next-token distributions (another vocabulary?)")


def perplexity(ev: Evaluation) -> float:
    """exp of the mean per-window NLL; per window in ``ev.per_example["perplexity"]`` (its mean NLL)."""
    import math

    nll = ev.output("nll")
    ev.per_example["perplexity"] = nll.cpu()
    return math.exp(float(nll.double().mean()))


def token_agreement(ev: Evaluation) -> float:
    """% of tokens whose most likely next token is the dense model's; per window its share."""
    same = (ev.output("argmax") == ev.output("argmax", dense=True)).double().mean(dim=1)
    ev.per_example["token_agreement"] = same.cpu()
    return 100.0 * float(same.mean())


def token_kl(ev: Evaluation) -> float:
    per = token_kl_per_window(ev)
    ev.per_example["token_kl"] = per.cpu()
    return float(per.mean())


LANGUAGE_MODELING = b2s.TaskSpec(
    TASK,
    run,
    "next-token prediction on token windows: outputs per-window NLL (N), argmax tokens (N×T) and the next-token "
    f"distributions (full up to {EXACT_VOCAB} tokens, else the top {TOP_K}); perplexity, token agreement and KL read them",
)

METRICS = [
    MetricSpec(
        "perplexity",
        "",
        False,
        perplexity,
        frozenset({"data", "labels"}),
        "exp of the mean next-token NLL over the windows (per token of the model's tokenizer)",
        roles=frozenset({"default", "primary"}),
        rank=5,
        tasks=LM,
        aggregate="exp_mean",
    ),
    MetricSpec(
        "token_agreement",
        "%",
        True,
        token_agreement,
        frozenset({"data"}),
        "% of tokens whose most likely next token is the dense model's",
        roles=frozenset({"default", "primary"}),
        rank=25,
        identity_target=99.999,
        tasks=LM,
    ),
    MetricSpec(
        "token_kl",
        "nats",
        False,
        token_kl,
        frozenset({"data"}),
        f"mean KL(dense || compressed) of the next-token distributions (top-{TOP_K} support above {EXACT_VOCAB} tokens)",
        roles=frozenset({"default"}),
        tasks=LM,
    ),
]


@b2s.hookimpl
def b2s_register_tasks(register: Callable[[b2s.TaskSpec], None]) -> None:
    register(LANGUAGE_MODELING)


@b2s.hookimpl
def b2s_register_metrics(register: Callable[[MetricSpec], None]) -> None:
    for spec in METRICS:
        register(spec)


__all__ = ["LANGUAGE_MODELING", "METRICS", "run", "token_kl_per_window"]
