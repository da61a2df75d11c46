"""Advantages from credit, normalised within each prompt group (docs/method.md, section 4).

Trajectory-wise (sparse, CoCA): A_i = (R_i - mean_j R_j) / std R, the mean over the G samples
of a prompt, times the credit's per-step weights (1 for sparse).
Per-step (dense_gain, dense_latent): A_t^i = (s_t^i - mean_j s_t^j) / std s_t, the mean per group
AND per timestep t. Groups are consecutive blocks of ``group_size`` samples.

Which std (the objective's ``adv_std``), with ``ddof`` (``adv_ddof``; numpy's default 0, as Flow-GRPO):
- ``global`` (Flow-GRPO's SD3 configs, ``global_std``): the std of all the batch's values (per step for
  per-step credit), so a group whose rewards barely differ gets small advantages;
- ``group``: the group's own std (the papers' equations), so every group gets unit-scale advantages;
- ``batch`` (dgx's option): one std of the group-centred values over the whole batch and all steps.

Several rewards kept apart (a ``weighted`` reward with ``normalize: per_reward``; GDPO's decoupled normalisation):
each reward's signal is normalised on its own as above, A = sum_k w_k A_k, and the sum is standardised over the
batch (per step for per-step credit) before the clip, so no reward's spread decides the others' share
(``dgx.grpo.loss.FlowGRPO.advantages``).
"""

from __future__ import annotations

import torch

EPS = 1e-4  # as Flow-GRPO: a group with all-equal rewards gets zero advantage


def normalize(x: torch.Tensor, group_size: int, std: str = "global", ddof: int = 0) -> torch.Tensor:
    """Centre ``x`` (N, ...) within consecutive groups of ``group_size`` along dim 0 and divide by ``std``'s std.

    Args:
        x: (N, ...) values, groups of ``group_size`` consecutive rows.
        group_size: Rows per group.
        std: Which std divides: ``global`` (over all rows, Flow-GRPO's), ``group`` (each group's own) or ``batch``
            (of all centred values).
        ddof: The std's degrees of freedom correction (0: population, 1: sample).
    """
    g = x.view(-1, group_size, *x.shape[1:])
    centred = g - g.mean(1, keepdim=True)
    if std == "group":
        s = g.std(1, keepdim=True, correction=ddof)
    elif std == "global":
        s = x.std(0, correction=ddof)
    elif std == "batch":
        s = centred.std(correction=ddof)
    else:
        raise ValueError(f"unknown advantage std {std!r}: global, group or batch")
    return (centred / (s + EPS)).view_as(x)


def advantages(
    signal: torch.Tensor,
    weights: torch.Tensor,
    per_step: bool,
    group_size: int,
    clip: float,
    std: str = "global",
    ddof: int = 0,
) -> torch.Tensor:
    """(N, T) advantages for (N, T) ``signal`` and ``weights``, clipped to [-clip, clip].

    Args:
        signal: (N, T) per-step credit.
        weights: (N, T) per-step weights, multiplied in after normalising.
        per_step: Normalise each step's column on its own (dense credit), else the first column, broadcast.
        group_size: Samples per prompt.
        clip: The advantages' bound.
        std: Which std divides (``normalize``).
        ddof: The std's degrees of freedom correction.
    """
    if signal.shape[0] % group_size:
        raise ValueError(f"{signal.shape[0]} samples do not split into groups of {group_size}")
    if per_step:
        adv = normalize(signal, group_size, std, ddof) * weights
    else:
        adv = normalize(signal[:, 0], group_size, std, ddof)[:, None] * weights
    return adv.clamp(-clip, clip)
