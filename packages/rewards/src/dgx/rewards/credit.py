"""Per-step credit: turn a reward into a training signal for every denoising step.

Each wrapper returns a ``Credit`` for a batch of trajectories. Step i is the transition
x_i -> x_{i+1} on the grid (latent index i at time grid[i], i = 0 is noise, T clean).

- sparse (Flow-GRPO): signal R(x_T) for every step; advantages are trajectory-wise.
- dense_gain (DenseGRPO): R_k = R(decode(ODE_n(x_k))); step i gets dR = R_{i+1} - R_i,
  normalised per prompt group AND per step.
- dense_latent (paper's baseline): step i gets R_{i+1}, normalised per group and step.
- turning_point (TP-GRPO): every step gets R_T - R_0, and the steps where the gain's trend turns towards the
  trajectory's add their own gain.
- coca: trajectory-wise advantage A of R(x_T), spread over steps by latent change:
  A_{i} = A * T * ||x_{i+1} - x_i|| / sum_j ||x_{j+1} - x_j||  (our reading of CoCA's
  contribution weighting with latent change as the contribution measure; the weights
  average 1 so the total credit equals the sparse one).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Literal, Sequence

import torch
from annotated_types import Ge
from dgx.rewards.base import Reward, reward_parts
from dgx.sampler import FlowModel, Trajectory
from dgx.sampler.continuation import continue_items


@dataclass
class Credit:
    terminal: torch.Tensor  # (B,) R(x_T), the final image's reward
    signal: torch.Tensor  # (B, T) what is normalised into advantages
    per_step: bool  # normalise per (group, step) if True, else per group on signal[:, 0]
    weights: torch.Tensor  # (B, T) multiplies trajectory-wise advantages (1 = sparse)
    latent_rewards: torch.Tensor | None = None  # (B, T+1) R_k, dense wrappers only
    seconds: dict[str, float] = field(default_factory=dict)  # model / decode / reward time
    parts: dict[str, tuple[torch.Tensor, torch.Tensor, float]] | None = None  # label -> (terminal, signal, weight)


def credit_of(terminal, signal, per_step: bool, weights, latent, seconds: dict, reward) -> Credit:
    """A ``Credit`` from the scores of a rule (each with a trailing part axis when the reward's parts are kept apart,
    ``reward_parts``): the weighted sum is the credit, and each part's own terminal and signal go in ``parts``."""
    w = reward_parts(reward)
    if w is None:
        return Credit(terminal, signal, per_step, weights, latent, seconds)
    k = torch.tensor(list(w.values()))
    parts = {n: (terminal[..., i], signal[..., i], float(w[n])) for i, n in enumerate(w)}
    latent = None if latent is None else (latent * k).sum(-1)
    return Credit((terminal * k).sum(-1), (signal * k).sum(-1), per_step, weights, latent, seconds, parts)


def score_latents(
    model: FlowModel,
    reward: Reward,
    latents: torch.Tensor,
    prompts: Sequence[str],
    metadata: Sequence[dict] | None,
    chunk: int,
    seconds: dict[str, float],
) -> torch.Tensor:
    """Decode and score ``latents`` (N, C, H, W) ``chunk`` at a time -> (N,), or (N, K) for a reward whose K parts the
    credit keeps apart (``reward_parts``)."""
    kept = reward_parts(reward)
    out = []
    for s in range(0, len(latents), chunk):
        t0 = time.perf_counter()
        imgs = model.decode(latents[s : s + chunk])
        t1 = time.perf_counter()
        meta = None if metadata is None else list(metadata[s : s + chunk])
        if kept is None:
            out.append(reward(imgs, list(prompts[s : s + chunk]), meta).float().cpu())
        else:
            parts = reward.parts(imgs, list(prompts[s : s + chunk]), meta)
            out.append(torch.stack([parts[n].float().cpu() for n in kept], -1))
        seconds["decode"] = seconds.get("decode", 0.0) + t1 - t0
        seconds["reward"] = seconds.get("reward", 0.0) + time.perf_counter() - t1
    return torch.cat(out)


def sparse_credit(
    model: FlowModel, traj: Trajectory, reward: Reward, metadata=None, *, chunk: Annotated[int, Ge(1)] = 256
) -> Credit:
    """Every step gets the final image's reward R(x_T) (Flow-GRPO); ``chunk``: images scored per batch."""
    sec: dict[str, float] = {}
    r = score_latents(model, reward, traj.latents[:, -1], traj.prompts, metadata, chunk, sec)
    ones = torch.ones(len(traj), traj.steps)
    signal = r[:, None].expand(len(traj), traj.steps, *r.shape[1:]).clone()
    return credit_of(r, signal, False, ones, None, sec, reward)


def latent_rewards(
    model: FlowModel,
    traj: Trajectory,
    reward: Reward,
    metadata=None,
    ode_steps="t",
    chunk: int = 256,
    pipeline: bool = False,
    score_ode_steps: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """R_k = R(decode(ODE_n(x_k))) for every latent: (B, T+1), R_T = R(x_T).

    The (trajectory, k) pairs go ``chunk`` at a time, k by k: each chunk is continued to t = 0, then decoded and
    scored. With ``pipeline`` a worker thread decodes and scores chunk j while chunk j + 1's continuation runs; every
    call gets the same inputs as without it, so the rewards are the same.

    With n = t a deterministic step of the rollout (sigma = 0, outside a noise window) is itself the continuation's
    first step, so R_k = R_{k+1} there: those latents are not scored but take R_{k+1} (their gain is 0), unless
    ``score_ode_steps``.
    """
    B, T = len(traj), traj.steps
    needed = torch.ones(B, T + 1, dtype=torch.bool)
    if ode_steps == "t" and not score_ode_steps:
        needed[:, :T] = traj.stds.cpu() > 0
    items = [(b, k) for k in range(T + 1) for b in range(B) if needed[b, k]]
    chunks = [items[s : s + chunk] for s in range(0, len(items), chunk)]
    sec: dict[str, float] = {}

    def score(part: list[tuple[int, int]], xhat: torch.Tensor) -> torch.Tensor:
        meta = None if metadata is None else [metadata[b] for b, _ in part]
        return score_latents(model, reward, xhat, [traj.prompts[b] for b, _ in part], meta, len(part), sec)

    def continued(part: list[tuple[int, int]]) -> torch.Tensor:
        t0 = time.perf_counter()
        xhat = continue_items(model, traj, part, ode_steps)
        sec["model"] = sec.get("model", 0.0) + time.perf_counter() - t0
        return xhat

    if pipeline:
        with ThreadPoolExecutor(max_workers=1) as worker:
            scores = [worker.submit(score, part, continued(part)) for part in chunks]
            scores = [f.result() for f in scores]
    else:
        scores = [score(part, continued(part)) for part in chunks]
    R = torch.empty(B, T + 1, *scores[0].shape[1:])
    for part, r in zip(chunks, scores):
        for (b, k), value in zip(part, r):
            R[b, k] = value
    for k in range(T - 1, -1, -1):  # a deterministic step's start scores as its end
        R[~needed[:, k], k] = R[~needed[:, k], k + 1]
    return R, sec


def dense_gain(
    model: FlowModel,
    traj: Trajectory,
    reward: Reward,
    metadata=None,
    *,
    ode_steps: Annotated[int, Ge(1)] | Literal["t"] = "t",
    chunk: Annotated[int, Ge(1)] = 256,
    pipeline: bool = False,
    score_ode_steps: bool = False,
) -> Credit:
    """Step i gets its reward gain R_{i+1} - R_i, R_k = R(decode(ODE_n(x_k))) (DenseGRPO). ``ode_steps``: n, an
    integer or ``t`` (every remaining step); ``chunk``: latents continued, decoded and scored per batch;
    ``pipeline``: decode and score one chunk in a worker thread while the next one's continuation runs;
    ``score_ode_steps``: with n = t, score the latents of deterministic steps too (outside a noise window; their
    gains are 0 up to rounding, so by default they are not scored)."""
    R, sec = latent_rewards(model, traj, reward, metadata, ode_steps, chunk, pipeline, score_ode_steps)
    return credit_of(R[:, -1], R[:, 1:] - R[:, :-1], True, torch.ones(len(traj), traj.steps), R, sec, reward)


def dense_latent(
    model: FlowModel,
    traj: Trajectory,
    reward: Reward,
    metadata=None,
    *,
    ode_steps: Annotated[int, Ge(1)] | Literal["t"] = "t",
    chunk: Annotated[int, Ge(1)] = 256,
    pipeline: bool = False,
    score_ode_steps: bool = False,
) -> Credit:
    """Step i gets R_{i+1} itself (the paper's dense-latent baseline); arguments as ``dense_gain``."""
    R, sec = latent_rewards(model, traj, reward, metadata, ode_steps, chunk, pipeline, score_ode_steps)
    return credit_of(R[:, -1], R[:, 1:].clone(), True, torch.ones(len(traj), traj.steps), R, sec, reward)


def turning_point(
    model: FlowModel,
    traj: Trajectory,
    reward: Reward,
    metadata=None,
    *,
    eta: float = 1.0,
    first_step: bool = True,
    chunk: Annotated[int, Ge(1)] = 256,
    pipeline: bool = False,
) -> Credit:
    """TP-GRPO: every step gets the trajectory's total gain D = R_T - R_0, and a turning point adds ``eta`` times its
    own gain d_i = R_{i+1} - R_i (R_k = R(decode(ODE_t(x_k)))). With s_i = sign(d_i) sign(D), step i > 0 is a
    turning point when s_{i-1} < 0 < s_i (the trend turns towards the trajectory's), step 0 when s_0 > 0
    (``first_step``). Normalised per group and step, as DenseGRPO's gains."""
    R, sec = latent_rewards(model, traj, reward, metadata, "t", chunk, pipeline)
    d, total = R[:, 1:] - R[:, :-1], R[:, -1] - R[:, 0]
    s = torch.sign(d) * torch.sign(total).unsqueeze(1)
    turn = torch.zeros_like(s, dtype=torch.bool)
    turn[:, 0] = (s[:, 0] > 0) & first_step
    turn[:, 1:] = (s[:, :-1] < 0) & (s[:, 1:] > 0)
    signal = total.unsqueeze(1) + eta * turn * d
    return credit_of(R[:, -1], signal, True, torch.ones(len(traj), traj.steps), R, sec, reward)


def coca_weights(latents: torch.Tensor) -> torch.Tensor:
    """T * ||x_{i+1} - x_i|| / sum_j ||x_{j+1} - x_j||  -> (B, T), mean 1 per trajectory."""
    change = (latents[:, 1:] - latents[:, :-1]).flatten(2).norm(dim=2)
    return change.shape[1] * change / change.sum(1, keepdim=True).clamp_min(1e-12)


def coca(
    model: FlowModel, traj: Trajectory, reward: Reward, metadata=None, *, chunk: Annotated[int, Ge(1)] = 256
) -> Credit:
    """Flow-GRPO's trajectory-wise advantage, spread over the steps by latent change (``coca_weights``)."""
    c = sparse_credit(model, traj, reward, metadata, chunk=chunk)
    c.weights = coca_weights(traj.latents)
    return c
