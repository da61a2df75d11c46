"""Per-step credit: turn a reward into a training signal for every denoising step.

Each wrapper returns a ``Credit`` for a batch of trajectories. Step i is the transition
x_i -> x_{i+1} on the grid (latent index i at time grid[i], i = 0 is noise, T clean).

- sparse (Flow-GRPO): signal R(x_T) for every step; advantages are trajectory-wise.
- dense_gain (DenseGRPO): R_k = R(decode(ODE_n(x_k))); step i gets dR = R_{i+1} - R_i,
  normalised per prompt group AND per step.
- dense_latent (paper's baseline): step i gets R_{i+1}, normalised per group and step.
- coca: trajectory-wise advantage A of R(x_T), spread over steps by latent change:
  A_{i} = A * T * ||x_{i+1} - x_i|| / sum_j ||x_{j+1} - x_j||  (our reading of CoCA's
  contribution weighting with latent change as the contribution measure; the weights
  average 1 so the total credit equals the sparse one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from dgx.rewards.base import Reward
from dgx.sampler import FlowModel, Trajectory, continue_ode


@dataclass
class Credit:
    terminal: torch.Tensor  # (B,) R(x_T), the final image's reward
    signal: torch.Tensor  # (B, T) what is normalised into advantages
    per_step: bool  # normalise per (group, step) if True, else per group on signal[:, 0]
    weights: torch.Tensor  # (B, T) multiplies trajectory-wise advantages (1 = sparse)
    latent_rewards: torch.Tensor | None = None  # (B, T+1) R_k, dense wrappers only
    seconds: dict[str, float] = field(default_factory=dict)  # model / decode / reward time


def score_latents(
    model: FlowModel,
    reward: Reward,
    latents: torch.Tensor,
    prompts: Sequence[str],
    metadata: Sequence[dict] | None,
    chunk: int,
    seconds: dict[str, float],
) -> torch.Tensor:
    """Decode and score ``latents`` (N, C, H, W) ``chunk`` at a time -> (N,)."""
    out = []
    for s in range(0, len(latents), chunk):
        t0 = time.perf_counter()
        imgs = model.decode(latents[s : s + chunk])
        t1 = time.perf_counter()
        meta = None if metadata is None else list(metadata[s : s + chunk])
        out.append(reward(imgs, list(prompts[s : s + chunk]), meta).float().cpu())
        seconds["decode"] = seconds.get("decode", 0.0) + t1 - t0
        seconds["reward"] = seconds.get("reward", 0.0) + time.perf_counter() - t1
    return torch.cat(out)


def sparse_credit(model: FlowModel, traj: Trajectory, reward: Reward, metadata=None, chunk: int = 256, **_) -> Credit:
    sec: dict[str, float] = {}
    r = score_latents(model, reward, traj.latents[:, -1], traj.prompts, metadata, chunk, sec)
    ones = torch.ones(len(traj), traj.steps)
    return Credit(r, r[:, None] * ones, False, ones, None, sec)


def latent_rewards(
    model: FlowModel, traj: Trajectory, reward: Reward, metadata=None, ode_steps="t", chunk: int = 256
) -> tuple[torch.Tensor, dict[str, float]]:
    """R_k = R(decode(ODE_n(x_k))) for every latent: (B, T+1), R_T = R(x_T)."""
    sec: dict[str, float] = {}
    t0 = time.perf_counter()
    xhat = continue_ode(model, traj, ode_steps, chunk=chunk)
    sec["model"] = time.perf_counter() - t0
    B, K = xhat.shape[:2]
    flat = xhat.reshape(B * K, *xhat.shape[2:])
    prompts = [p for p in traj.prompts for _ in range(K)]
    meta = None if metadata is None else [m for m in metadata for _ in range(K)]
    return score_latents(model, reward, flat, prompts, meta, chunk, sec).view(B, K), sec


def dense_gain(model, traj, reward, metadata=None, ode_steps="t", chunk: int = 256, **_) -> Credit:
    R, sec = latent_rewards(model, traj, reward, metadata, ode_steps, chunk)
    return Credit(R[:, -1], R[:, 1:] - R[:, :-1], True, torch.ones(len(traj), traj.steps), R, sec)


def dense_latent(model, traj, reward, metadata=None, ode_steps="t", chunk: int = 256, **_) -> Credit:
    R, sec = latent_rewards(model, traj, reward, metadata, ode_steps, chunk)
    return Credit(R[:, -1], R[:, 1:].clone(), True, torch.ones(len(traj), traj.steps), R, sec)


def coca_weights(latents: torch.Tensor) -> torch.Tensor:
    """T * ||x_{i+1} - x_i|| / sum_j ||x_{j+1} - x_j||  -> (B, T), mean 1 per trajectory."""
    change = (latents[:, 1:] - latents[:, :-1]).flatten(2).norm(dim=2)
    return change.shape[1] * change / change.sum(1, keepdim=True).clamp_min(1e-12)


def coca(model, traj, reward, metadata=None, chunk: int = 256, **_) -> Credit:
    c = sparse_credit(model, traj, reward, metadata, chunk)
    c.weights = coca_weights(traj.latents)
    return c
