"""Rollouts: a trajectory record and the sampling loop that fills it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from dgx.sampler.model import Conditioning, FlowModel
from dgx.sampler.schedules import NoiseSchedule
from dgx.sampler.steps import StepOutput, heun


@dataclass
class Trajectory:
    """A batch of B trajectories of T steps; latent index k lives at time ``grid[k]``.

    latents[:, 0] is the initial noise x_T (t = 1) and latents[:, T] the clean x_0.
    """

    latents: torch.Tensor  # (B, T+1, C, H, W) float32
    grid: torch.Tensor  # (T+1,) times, 1 -> 0
    log_probs: torch.Tensor  # (B, T)
    means: torch.Tensor  # (B, T, C, H, W)
    stds: torch.Tensor  # (B, T)
    velocities: torch.Tensor  # (B, T, C, H, W): v(x_k, t_k) as the rollout computed it
    cond: Conditioning
    prompts: list[str]
    guidance: float
    ode_solver: str = "euler"  # how its deterministic steps were taken; continuations take them the same way

    @property
    def steps(self) -> int:
        return self.latents.shape[1] - 1

    def __len__(self) -> int:
        return self.latents.shape[0]


@torch.no_grad()
def rollout(
    model: FlowModel,
    cond: Conditioning,
    prompts: list[str],
    steps: int,
    step_fn: Callable[..., StepOutput],
    schedule: NoiseSchedule | None,
    generator: torch.Generator | list[torch.Generator],
    guidance: float = 1.0,
    latents: torch.Tensor | None = None,
    ode_solver: Literal["euler", "heun"] = "euler",
) -> Trajectory:
    """Sample ``len(prompts)`` trajectories of ``steps`` steps.

    Every draw uses ``generator``; with a list (one per sample) each trajectory depends only
    on its own generator, whatever the batch it is sampled in. A step that draws no noise (sigma = 0, outside a
    noise window) is an Euler step, or with ``ode_solver="heun"`` Heun's (one more model call; the last step, to
    t = 0, stays Euler).

    Args:
        model: The generator.
        cond: The prompts' conditioning, one row per trajectory.
        prompts: The trajectories' prompts, kept in the trajectory.
        steps: Steps on the model's time grid.
        step_fn: The sampler step (``sde_step``, ``cps_step``, ``ode_step``, ...).
        schedule: The noise level per step, psi(t) (None: no noise).
        generator: A generator, or one per trajectory.
        guidance: The classifier-free guidance scale.
        latents: Initial latents x_T (default: drawn with ``generator``).
        ode_solver: ``euler`` or ``heun`` for the steps without noise.
    """
    grid = model.grid(steps)
    x = model.init_latents(len(prompts), generator) if latents is None else latents.float()
    xs, lps, means, stds, vs = [x], [], [], [], []
    for i in range(steps):
        t, t_next = grid[i].expand(len(x)), grid[i + 1].expand(len(x))
        v = model.velocity(x, t, cond, guidance)
        sigma = None if schedule is None else schedule(torch.full((len(x),), i, dtype=torch.long), grid)
        out = step_fn(x, v, t, t_next, sigma, generator=generator)
        if ode_solver == "heun" and i + 1 < steps and not bool((out.std > 0).any()):
            v_next = model.velocity(out.sample, t_next, cond, guidance)  # at the Euler point
            x_next = heun(x, v, v_next, t, t_next)
            out = StepOutput(x_next, out.log_prob, x_next, out.std, out.level)
        x = out.sample
        xs.append(x)
        lps.append(out.log_prob)
        means.append(out.mean)
        stds.append(out.std)
        vs.append(v)
    return Trajectory(
        torch.stack(xs, 1),
        grid,
        torch.stack(lps, 1),
        torch.stack(means, 1),
        torch.stack(stds, 1),
        torch.stack(vs, 1),
        cond,
        list(prompts),
        guidance,
        ode_solver,
    )


def sample_generator(*key: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from an integer key (e.g. seed, iteration, global sample index).

    Args:
        key: The integers the seed is made of.
        device: The generator's device.
    """
    return torch.Generator(device).manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))
