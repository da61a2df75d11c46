"""ODE_n continuation: deterministic denoising of intermediate latents to t = 0.

DenseGRPO scores every intermediate latent x_k of a trajectory by denoising it with the
ODE to a clean latent xhat_k (docs/method.md, section 3), with the solver the trajectory's own deterministic steps
used (Euler, or Heun: ``Trajectory.ode_solver``). ``n`` is the number of ODE steps:
``"t"`` follows the remaining grid (k -> T, T - k steps); an integer n uses n steps on
the remaining grid (indices spread evenly from k to T; n = 1 is the x0 jump x - t v).

Batching: all (trajectory, k) pairs advance together, one model call per continuation
step with per-sample timesteps, so n = t costs T - 1 calls per chunk instead of
T (T - 1) / 2 per trajectory batch; the first step reuses the rollout's velocity at x_k.
"""

from __future__ import annotations

import numpy as np
import torch
from dgx.sampler.errors import SamplerError
from dgx.sampler.model import FlowModel
from dgx.sampler.steps import heun
from dgx.sampler.trajectory import Trajectory


def continuation_path(k: int, steps: int, n: int | str) -> list[int]:
    """Grid indices visited from index ``k`` to ``steps`` (inclusive) with ``n`` Euler steps."""
    remaining = steps - k
    if n == "t" or (isinstance(n, int) and n >= remaining):
        return list(range(k, steps + 1))
    if not isinstance(n, int) or n < 1:
        raise SamplerError(f"ode_steps must be a positive integer or 't', got {n!r}")
    return sorted(set(np.round(np.linspace(k, steps, n + 1)).astype(int).tolist()))


@torch.no_grad()
def continue_ode(model: FlowModel, traj: Trajectory, n: int | str = "t", chunk: int = 256) -> torch.Tensor:
    """xhat for every latent of every trajectory: (B, T+1, C, H, W); xhat[:, T] = x_0.

    ``chunk`` bounds how many (trajectory, k) pairs go through the model at once.
    """
    B, T = len(traj), traj.steps
    out = traj.latents.clone()
    items = [(b, k) for k in range(T) for b in range(B)]
    for s in range(0, len(items), chunk):
        part = items[s : s + chunk]
        x = continue_items(model, traj, part, n)
        for i, (b, k) in enumerate(part):
            out[b, k] = x[i]
    return out


@torch.no_grad()
def continue_items(
    model: FlowModel, traj: Trajectory, items: list[tuple[int, int]], n: int | str = "t"
) -> torch.Tensor:
    """xhat of the (trajectory, k) ``items``, advanced together: (len(items), C, H, W); k = T is x_0 itself."""
    grid, T = traj.grid, traj.steps
    bs = torch.tensor([b for b, _ in items])
    paths = [continuation_path(k, T, n) for _, k in items]
    x = traj.latents[bs, torch.tensor([k for _, k in items])].clone()
    cond = traj.cond.index(bs)
    for j in range(max(len(p) for p in paths) - 1):
        live = torch.tensor([i for i, p in enumerate(paths) if j + 1 < len(p)])
        t = grid[torch.tensor([paths[i][j] for i in live.tolist()])]
        t_next = grid[torch.tensor([paths[i][j + 1] for i in live.tolist()])]
        if j == 0:  # reuse v(x_k, t_k) from the rollout
            v = traj.velocities[bs[live], torch.tensor([paths[i][0] for i in live.tolist()])]
        else:
            v = model.velocity(x[live], t, cond.index(live), traj.guidance)
        euler = x[live] + v * (t_next - t).view(-1, *([1] * (x.ndim - 1)))
        second = (t_next > 0) if traj.ode_solver == "heun" else torch.zeros_like(t_next, dtype=torch.bool)
        if second.any():  # Heun's correction, as the rollout's deterministic steps (the step to t = 0 stays Euler)
            at, on = live[second], second.nonzero().flatten()
            v_next = model.velocity(euler[on], t_next[on], cond.index(at), traj.guidance)
            euler[on] = heun(x[at], v[on], v_next, t[on], t_next[on])
        x[live] = euler
    return x


@torch.no_grad()
def continue_ode_naive(model: FlowModel, traj: Trajectory, n: int | str = "t") -> torch.Tensor:
    """Reference: a fresh Euler ODE from each x_k, one (trajectory, k) at a time, no reuse."""
    B, T = len(traj), traj.steps
    out = traj.latents.clone()
    for b in range(B):
        cond = traj.cond.index([b])
        for k in range(T):
            path = continuation_path(k, T, n)
            x = traj.latents[b : b + 1, k]
            for i, j in zip(path[:-1], path[1:]):
                v = model.velocity(x, traj.grid[i].view(1), cond, traj.guidance)
                x = x + v * (traj.grid[j] - traj.grid[i])
            out[b, k] = x[0]
    return out
