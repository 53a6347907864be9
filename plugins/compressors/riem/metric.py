"""RieM's weight form: neuron states and a learned metric network, batched over layers of one shape.

A weight W (R × C, a conv seen as out × in·k·k) is represented by a state p_i ∈ R^d for each output
neuron (row), a state q_j ∈ R^d for each input neuron (column) and a metric network of M branches
(the authors' code: M = 6, hidden width h = 14):

    W_ij = v · Σ_m σ(A_m (p_i + S^{s_m} q_j) + b_m) + c,    s_m = ⌊m·d / M⌋,

where S^s shifts a vector's features cyclically by s (q_j's features s, s+1, ... first), σ is the
logistic sigmoid, A_m ∈ R^{h×d}, b_m ∈ R^h, v ∈ R^h and c ∈ R. This is the form of the authors'
notebook (pzqpzq/flat-learning, RieM/ResNet50_to_RieM-8bits.ipynb); the paper reads it as the
neurons' interaction under a learned Riemannian metric of the neuronal state space. We read that
form from the notebook (the paper's own text was not available to us) and re-implemented it.

Cost: A_m (p_i + S q_j) = A_m p_i + A_m S q_j, so each branch is two small matmuls, then an (R, C, h)
sigmoid: decoding takes O(R·C·h·M) operations (more than a dense layer's weights, the price of
the nonlinear form). :func:`weights` computes W in row chunks to bound memory when not training.

States are quantized as in the notebook: per state dimension a min-max uniform grid over the
neurons (separately for the row and the column states). The notebook's step (max − min) / 2^n
yields 2^n + 1 levels, which need n + 1 bits; ours is (max − min) / (2^n − 1): 2^n levels, n bits.
"""

from __future__ import annotations

import torch

import b2s_bench as b2s

from .config import INITS

__all__ = [
    "INITS",
    "centre_",
    "shifts",
    "weights",
    "metric_params",
    "quantize_states",
    "dequantize_states",
    "RiemNetwork",
    "init_params",
]

_CHUNK_FLOATS = 1 << 24  # decoding outside autograd: rows at a time so that rows × C × h stays below this


def shifts(dim: int, heads: int) -> list[int]:
    """The cyclic shift of the column states in each branch: ⌊m·d / M⌋ (the authors' code)."""
    return [m * dim // heads for m in range(heads)]


def metric_params(dim: int, hidden: int, heads: int) -> int:
    """Parameters of the metric network: M × (A_m, b_m), then v and c."""
    return heads * (dim * hidden + hidden) + hidden + 1


def _block(
    rows: torch.Tensor,
    cols: torch.Tensor,
    mix: torch.Tensor,
    mix_bias: torch.Tensor,
    out: torch.Tensor,
    out_bias: torch.Tensor,
) -> torch.Tensor:
    """(B, R, d), (B, C, d), (B, M, d, h), (B, M, h), (B, h), (B,) -> W (B, R, C).

    All branches at once: one (B, M, R, C, h) sigmoid block and one contraction over (M, h), 2.5x
    faster than a loop over the branches on a CPU (the loop keeps every branch's block for the
    backward pass anyway, so it saves no memory).
    """
    dim, heads = rows.shape[-1], mix.shape[1]
    u = torch.einsum("brd,bmdh->bmrh", rows, mix)
    shifted = torch.stack([torch.roll(cols, -s, dims=-1) for s in shifts(dim, heads)], dim=1)  # (B, M, C, d)
    v = torch.einsum("bmcd,bmdh->bmch", shifted, mix) + mix_bias[:, :, None, :]
    z = (u[:, :, :, None, :] + v[:, :, None, :, :]).sigmoid_()  # (B, M, R, C, h); the sum is a temporary
    return torch.einsum("bmrch,bh->brc", z, out) + out_bias[:, None, None]


def weights(
    rows: torch.Tensor,
    cols: torch.Tensor,
    mix: torch.Tensor,
    mix_bias: torch.Tensor,
    out: torch.Tensor,
    out_bias: torch.Tensor,
) -> torch.Tensor:
    """The RieM weights (B, R, C) of batched states and metric networks (see the module docstring).

    With gradients on, in one piece (the fit's full batch); otherwise in chunks of rows.
    """
    if torch.is_grad_enabled():
        return _block(rows, cols, mix, mix_bias, out, out_bias)
    b, r = rows.shape[0], rows.shape[1]
    per_row = b * cols.shape[1] * mix.shape[-1]
    step = max(1, _CHUNK_FLOATS // max(per_row, 1))
    if step >= r:
        return _block(rows, cols, mix, mix_bias, out, out_bias)
    return torch.cat([_block(rows[:, i : i + step], cols, mix, mix_bias, out, out_bias) for i in range(0, r, step)], dim=1)


def quantize_states(states: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., N, d) states -> int64 codes in [0, 2^bits), and per state dimension the grid's min and step
    (..., d), fp32: a min-max grid over the N neurons of each dimension (a constant dimension: step 0)."""
    states = states.detach().float()
    lo = states.amin(dim=-2)
    hi = states.amax(dim=-2)
    step = (hi - lo) / (2**bits - 1)
    safe = torch.where(step > 0, step, torch.ones_like(step))
    q = torch.round((states - lo.unsqueeze(-2)) / safe.unsqueeze(-2)).clamp(0, 2**bits - 1)
    q = torch.where(step.unsqueeze(-2) > 0, q, torch.zeros_like(q))
    return q.long(), lo, step


def dequantize_states(codes: torch.Tensor, lo: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Inverse grid: lo + q·step, fp32."""
    return lo.unsqueeze(-2) + codes.float() * step.unsqueeze(-2)


def init_params(
    batch: int, rows: int, cols: int, dim: int, hidden: int, heads: int, generator: torch.Generator, init: str = "authors"
) -> dict[str, torch.Tensor]:
    """A random start, all drawn from ``generator``: the metric's linear maps PyTorch's default
    U(±1/√fan_in) for weights and biases; the states U[0, 1) as the authors' ("authors") or U[−1, 1)
    with c then set by :func:`centre_` so that the start's weights have mean 0 ("centred", ours: all-positive states make the
    branches' inputs share a large common part, and the fit far slower — on a 64 × 96 Gaussian
    matrix, d = 16, 1,000 steps: relative error 0.23 against 0.87)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")

    def uniform(shape: tuple[int, ...], bound: float) -> torch.Tensor:
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound

    low = -1.0 if init == "centred" else 0.0
    params = {
        "rows": low + torch.rand((batch, rows, dim), generator=generator) * (1.0 - low),
        "cols": low + torch.rand((batch, cols, dim), generator=generator) * (1.0 - low),
        "mix": uniform((batch, heads, dim, hidden), dim**-0.5),
        "mix_bias": uniform((batch, heads, hidden), dim**-0.5),
        "out": uniform((batch, hidden), hidden**-0.5),
        "out_bias": uniform((batch,), hidden**-0.5),
    }
    return params


@torch.no_grad()
def centre_(net: RiemNetwork) -> None:
    """The "centred" start's last step: c such that the network's weights have mean 0 (on its device)."""
    out_bias = net.tensors()["out_bias"]
    out_bias -= net().reshape(out_bias.shape[0], -1).mean(dim=1)


PARAM_NAMES = ("rows", "cols", "mix", "mix_bias", "out", "out_bias")


class RiemNetwork(b2s.DecoderNetwork):
    """g(φ): the RieM weights of a batch of layers, φ = the states and the metric networks.

    ``forward()`` returns (B, R, C), or ``shape`` when given (a single code's tensor). With
    ``fixed_states`` the states are buffers (the refit of the metric network after quantization).
    There is no closed form to compare with; R (the parameter budget) is fixed by d, h and M, so
    nothing is projected and the solver's λ is 0.
    """

    projection = "never"
    solver_lam = 0.0
    closed_form = False

    def __init__(self, params: dict[str, torch.Tensor], shape: tuple[int, ...] | None = None, fixed_states: bool = False):
        super().__init__()
        for name in PARAM_NAMES:
            value = params[name].detach().float().clone()
            if fixed_states and name in ("rows", "cols"):
                self.register_buffer(name, value)
            else:
                self.register_parameter(name, torch.nn.Parameter(value))
        self.shape = shape

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in PARAM_NAMES:
            value = getattr(self, name)
            assert isinstance(value, torch.Tensor)  # registered above as a parameter or a buffer
            out[name] = value
        return out

    def forward(self) -> torch.Tensor:
        w = weights(*self.tensors().values())
        return w if self.shape is None else w.reshape(self.shape)

    def regularizer(self) -> torch.Tensor:
        return 0.5 * sum((p.pow(2).sum() for p in self.parameters()), torch.zeros(()))
