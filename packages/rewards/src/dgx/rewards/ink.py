"""A smooth toy reward for the shapes world: how far the pixels are from the grey background.

Larger, more or darker shapes score higher. It needs no model and changes a little with every
pixel, so it is the sanity check for credit assignment (research/experiments/credit_ink): on it
GRPO should raise the reward within a few iterations, unlike the 0/1 GenEval-style reward.
"""

from __future__ import annotations

from typing import Sequence

import torch


class Ink:
    """mean |pixel - background| over pixels and channels, in [0, 1]; 0.6 is about the shapes world's
    grey (150 / 255) and is the value the documented ink experiments used."""

    name = "ink"

    def __init__(self, background: float = 0.6):
        self.background = background

    def __call__(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None
    ) -> torch.Tensor:
        return (images - self.background).abs().flatten(1).mean(1)
