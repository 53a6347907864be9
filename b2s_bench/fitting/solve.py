"""The generic solver: fit any code given as a network, min_φ ||g(φ) − W||² + λ R(φ).

With ``project=True`` each step is followed by the decoder's hard projection (projected
gradient). This is the "network subject to a regularization" view made executable: for the
families with a closed form, the solver's fit can be compared with it (see theory checks).
"""

from __future__ import annotations

import dataclasses

import torch

from ..compression.codes import DecoderNetwork

__all__ = ["SolveResult", "fit_network", "relative_error"]


@dataclasses.dataclass(frozen=True)
class SolveResult:
    rel_error: float  # ||g(φ) − W||_F / ||W||_F at the end
    losses: tuple[float, ...]  # objective every ``log_every`` steps
    steps: int


def relative_error(approx: torch.Tensor, target: torch.Tensor) -> float:
    approx, target = approx.detach().float(), target.detach().float()
    denom = float(torch.linalg.vector_norm(target))
    return float(torch.linalg.vector_norm(approx - target)) / (denom if denom > 0 else 1.0)


def fit_network(
    network: DecoderNetwork,
    target: torch.Tensor,
    steps: int = 2000,
    lr: float = 0.1,
    lam: float | None = None,
    project: bool = True,
    optimizer: str = "adam",
    log_every: int = 100,
) -> SolveResult:
    """Fit ``network`` to ``target`` by gradient descent on the mean squared error + lam·R(φ).

    Args:
        steps: optimizer steps.
        lr: learning rate relative to the target's RMS (Adam's steps are in parameter units, so
            this makes one setting work for tensors of any scale).
        lam: weight of the regularizer R(φ) (default: the network's ``solver_lam``); it is ramped
            linearly from 0 over the first 80 % of the steps (a penalty continuation), so the fit
            first approaches W and is then pulled onto the constraint.
        project: apply ``network.project()`` as the network asks (``projection``: every step
            for projected gradient, or once at the end to snap a relaxation).
        optimizer: "adam" or "sgd".
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    target = target.detach().float()
    params = [p for p in network.parameters() if p.requires_grad]
    scaled_lr = lr * max(float(target.pow(2).mean().sqrt()), 1e-12)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=scaled_lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    lam = network.solver_lam if lam is None else lam
    ramp = max(int(0.8 * steps), 1)
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((network() - target) ** 2)
        if lam:
            loss = loss + lam * min(1.0, step / ramp) * network.regularizer()
        loss.backward()
        opt.step()
        sched.step()
        if project and network.projection == "step":
            network.project()
        if step % log_every == 0 or step == steps - 1:
            losses.append(loss.detach().item())
    if project and network.projection == "end":
        network.project()
    with torch.no_grad():
        err = relative_error(network(), target)
    return SolveResult(err, tuple(losses), steps)
