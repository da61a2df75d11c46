"""Advantages from credit, normalised within each prompt group (method.md sections 2-3).

Trajectory-wise (sparse, CoCA): A_i = (R_i - mean_j R_j) / std_j R_j over the G samples
of a prompt, times the credit's per-step weights (1 for sparse).
Per-step (dense_gain, dense_latent): A_t^i = (s_t^i - mean_j s_t^j) / std_j s_t^j, per
group AND per timestep t. Groups are consecutive blocks of ``group_size`` samples.
``std="batch"`` (an option, not the paper's rule) keeps the group mean but divides by one std
of the group-centred values over the whole batch (and all steps), so a group or a step whose
rewards barely differ gets small advantages instead of unit-scale ones.
"""

from __future__ import annotations

import torch

EPS = 1e-4  # as Flow-GRPO: a group with all-equal rewards gets zero advantage


def group_normalize(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Normalise ``x`` (N, ...) within consecutive groups of ``group_size`` along dim 0."""
    g = x.view(-1, group_size, *x.shape[1:])
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + EPS)).view_as(x)


def batch_normalize(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Centre ``x`` (N, ...) within groups, then divide by the std of all centred values."""
    c = x.view(-1, group_size, *x.shape[1:])
    c = (c - c.mean(1, keepdim=True)).view_as(x)
    return c / (c.std() + EPS)


def advantages(
    signal: torch.Tensor, weights: torch.Tensor, per_step: bool, group_size: int, clip: float, std: str = "group"
) -> torch.Tensor:
    """(N, T) advantages for (N, T) ``signal`` and ``weights``, clipped to [-clip, clip]; ``std`` is
    "group" (per group, and per step for per-step credit) or "batch"."""
    if signal.shape[0] % group_size:
        raise ValueError(f"{signal.shape[0]} samples do not split into groups of {group_size}")
    norm = {"group": group_normalize, "batch": batch_normalize}[std]
    if per_step:
        adv = norm(signal, group_size) * weights
    else:
        adv = norm(signal[:, 0], group_size)[:, None] * weights
    return adv.clamp(-clip, clip)
