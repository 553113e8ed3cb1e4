"""Small helpers shared by the three tasks: seeding, initialisation, the Adam loop."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch


def child_seed(gen: torch.Generator) -> int:
    """A seed for a sub-generator, drawn from the run's generator."""
    return int(torch.randint(0, 2**62, (1,), generator=gen).item())


def uniform_init(shape: tuple[int, ...], fan_in: int, gen: torch.Generator) -> torch.Tensor:
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as a leaf tensor."""
    bound = 1.0 / math.sqrt(fan_in)
    return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).requires_grad_(True)


def train_adam(
    params: list[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    *,
    steps: int,
    lr: float,
    ctx: Any,
    desc: str,
    n_logged: int = 50,
) -> list[list[float]]:
    """Minimise ``loss_fn()`` (which draws its own batch) with Adam and cosine decay.

    Returns ``[[step, loss], ...]`` at about ``n_logged`` evenly spaced steps.
    """
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    every = max(1, steps // n_logged)
    curve: list[list[float]] = []
    for step in ctx.progress(range(steps), total=steps, desc=desc):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % every == 0 or step == steps - 1:
            curve.append([step, float(loss.detach())])
    return curve


def nan_to_none(values: list[float]) -> list[float | None]:
    """JSON-safe list: NaN becomes None."""
    return [None if (v != v) else float(v) for v in values]
