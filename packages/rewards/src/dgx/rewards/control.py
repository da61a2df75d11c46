"""A control reward that carries no information: a pseudo-random number per image.

GRPO normalises rewards within each prompt group, so training on this reward gives advantages of the
usual size whose signs are coin flips. Its updates are pure noise of the same magnitude as a real
run's; comparing a real run's test-score change with this control's separates what the reward taught
from what noisy steps alone do to the model (research/experiments/quick_sweep).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from dgx.rewards.base import to_uint8


class RandomReward:
    """U[0, 1) keyed by the image's 8-bit pixels (and ``salt``): the same image always scores the same,
    so resumed and multi-process runs agree."""

    name = "random"

    def __init__(self, salt: str = ""):
        self.salt = salt.encode()

    def __call__(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None
    ) -> torch.Tensor:
        digests = (hashlib.blake2b(self.salt + img.tobytes(), digest_size=8).digest() for img in to_uint8(images))
        return torch.tensor([int.from_bytes(d, "little") / 2**64 for d in digests])
