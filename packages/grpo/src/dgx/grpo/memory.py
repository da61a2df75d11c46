"""A floor of the memory one training iteration needs, against the memory of the machine it runs on.

Each process rolls out its share of ``train.prompts_per_iter x group_size`` samples at once and keeps every latent of
their trajectories (T + 1 per sample) for the update; the credit decodes ``credit.chunk`` final images at a time to
score them. The estimate counts only those tensors, in float32, with a latent of at least 4 numbers per 8 x 8 pixels
(SD3 and FLUX.1 hold 16), so a batch it refuses cannot fit; one it passes may still not.
"""

from __future__ import annotations

import math
import os

import torch
from dgx.grpo.config import RunConfig

SMALLEST_SIDE = 16  # px: the resolution counted when the config leaves it to the model


def rollout_bytes(cfg: RunConfig, processes: int = 1) -> tuple[int, str]:
    """At least how many bytes one process's rollouts of an iteration hold, and what was counted."""
    n = math.ceil(cfg.train.prompts_per_iter * cfg.train.group_size / processes)
    side, steps = cfg.model.args.get("resolution") or SMALLEST_SIDE, cfg.sampler.steps
    latent = 4 * (side // 8 or 1) ** 2
    images = min(n, cfg.credit.args.get("chunk", 256)) * 3 * side * side
    counted = f"{n:,} samples x {steps + 1} latents at {side} px" + (" per process" if processes > 1 else "")
    return 4 * (n * (steps + 1) * latent + images), counted


def machine_memory(cfg: RunConfig) -> tuple[int, str] | None:
    """The memory of the device the run will use: the first GPU's where ``device: auto`` finds one, else the RAM;
    None where it cannot be read."""
    if cfg.device == "auto" and torch.cuda.is_available():
        index = torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory, f"GPU {index}"
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "RAM"
    except (ValueError, OSError, AttributeError):
        return None


def memory_problem(cfg: RunConfig, processes: int = 1) -> str | None:
    """Why an iteration of ``cfg`` cannot fit in this machine's memory, or None."""
    have = machine_memory(cfg)
    need, counted = rollout_bytes(cfg, processes)
    if have is None or need <= have[0]:
        return None
    return (
        f"one training iteration needs at least {need / 2**30:,.1f} GiB ({counted}), more than the "
        f"{have[0] / 2**30:,.1f} GiB of {have[1]}; lower train.prompts_per_iter x group_size or sampler.steps"
    )
