"""How an iteration's samples become optimizer steps, and the EMA after each step (docs/parity.md).

1. **Which samples train** (``train.zero_advantage``): ``drop`` leaves out the samples whose advantages are zero at
   every step (a group of equal rewards) and draws some of them back, so that the kept count is a multiple of
   ``train.updates_per_epoch`` (Flow-GRPO, ``train_sd3.py``); ``keep`` trains them all.
2. **Which pairs each optimizer step trains** (``train.update_split``): ``samples`` shuffles the kept samples and gives
   each of the epoch's steps a share of them at all their trained steps (Flow-GRPO); ``steps`` orders the (sample,
   step) pairs step by step over the kept samples and cuts that list.
3. **The EMA** (``train.ema``): after optimizer step n, when (n + 1) is a multiple of ``every``, ``repeats`` updates
   ``ema <- d ema + (1 - d) p`` with d = min((1 + n) / (10 + n), decay) under ``warmup`` (Flow-GRPO's
   ``EMAModuleWrapper``, stepped once per training batch with the count of optimizer steps so far).

Both choices are made over the global batch, keyed by (seed, iteration, epoch), so every process plans the same steps
and a run's update does not depend on how many processes share it: each process trains its own samples of a step,
weighted by the step's global pair count, and runs as many micro-batches as the busiest process (FSDP2 needs equal
forward passes), the extra ones with weight 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from dgx.sampler import sample_generator

# the keyed draws below take (seed, iteration, one of these, epoch), where a sample's draws take its index there
KEEP_STREAM, SHUFFLE_STREAM = 2**32 - 1, 2**32 - 2


def kept_samples(adv: torch.Tensor, multiple: int, generator: torch.Generator) -> list[int]:
    """Flow-GRPO's zero-advantage filter on advantages ``adv`` (samples, steps): the samples with a non-zero
    advantage somewhere, and, when their count is not a multiple of ``multiple``, enough of the others drawn at
    random with ``generator`` to make it one (none when too few are left); sorted."""
    keep = adv.abs().sum(1) != 0
    short = -int(keep.sum()) % multiple
    zero = torch.where(~keep)[0]
    if short and len(zero) >= short:
        keep[zero[torch.randperm(len(zero), generator=generator)[:short]]] = True
    return torch.where(keep)[0].tolist()


def cut(items: list, parts: int) -> list[list]:
    """``items`` cut into exactly ``parts`` consecutive pieces of ceil(len / parts) (the last ones short or empty)."""
    size = max(1, math.ceil(len(items) / parts))
    return [items[u * size : (u + 1) * size] for u in range(parts)]


@dataclass
class Step:
    """One optimizer step: this process's (sample, step) pairs (local sample indices), the step's pair count over
    all processes and the micro-batches every process runs for it."""

    pairs: list[tuple[int, int]]
    total: int
    micro_batches: int


def plan(
    kept: list[int],
    chosen: dict[int, list[int]],
    shares: list[range],
    rank: int,
    tc,
    generator: torch.Generator,
) -> list[Step]:
    """The ``tc.updates_per_epoch`` optimizer steps of one epoch over the global ``kept`` samples, each trained at
    its ``chosen`` steps (the same count for every sample); ``shares`` are the processes' sample ranges and ``rank``
    this one's; ``generator`` draws the ``samples`` split's shuffle (not drawn with one step per epoch: the same
    sum)."""
    updates, k = tc.updates_per_epoch, len(next(iter(chosen.values()), []))
    if tc.update_split == "samples":
        order = kept
        if updates > 1:
            order = [kept[i] for i in torch.randperm(len(kept), generator=generator).tolist()]
        groups = [[(b, chosen[b][j]) for j in range(k) for b in g] for g in cut(order, updates)]
    else:
        groups = cut([(b, chosen[b][j]) for j in range(k) for b in kept], updates)
    steps = []
    for pairs in groups:
        per_share = [[p for p in pairs if p[0] in share] for share in shares]
        micro = max(math.ceil(len(mine) / tc.micro_batch) for mine in per_share)
        lo = shares[rank].start
        steps.append(Step([(b - lo, s) for b, s in per_share[rank]], len(pairs), micro))
    return steps


def epoch_generator(seed: int, it: int, epoch: int) -> torch.Generator:
    """The draw of the ``samples`` split's shuffle in inner epoch ``epoch`` of iteration ``it``."""
    return sample_generator(seed, it, SHUFFLE_STREAM, epoch)


def keep_generator(seed: int, it: int) -> torch.Generator:
    """The draw of the zero-advantage filter's top-up in iteration ``it``."""
    return sample_generator(seed, it, KEEP_STREAM, 0)


def ema_decay(ema, n: int) -> float | None:
    """The EMA decay after optimizer step ``n`` (the count of steps taken; 0 before the first) under config ``ema``,
    or None where the EMA does not update then."""
    if (n + 1) % ema.every:
        return None
    return min((1 + n) / (10 + n), ema.decay) if ema.warmup else ema.decay


def ema_decays(ema, done: int) -> tuple[list[float], list[float]]:
    """The decays of the EMA updates around the optimizer step taken after ``done`` others: before it, the last
    ``repeats - 1`` of the previous step's (Flow-GRPO's training batches that accumulate this step's gradient, with the
    parameters still those of step ``done``), and after it, the first of its own."""
    before, after = ema_decay(ema, done), ema_decay(ema, done + 1)
    return [before] * (ema.repeats - 1) if before else [], [after] if after else []


@torch.no_grad()
def ema_update(average: dict[str, torch.Tensor], named: dict[str, torch.Tensor], decays: list[float]) -> None:
    """EMA updates of ``average`` towards the parameters ``named``, one per decay in ``decays``."""
    for decay in decays:
        for n, p in named.items():
            average[n].mul_(decay).add_(p.detach(), alpha=1 - decay)
