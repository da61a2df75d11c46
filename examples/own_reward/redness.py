"""A reward of your own: how much redder than green and blue an image is, on average over its pixels."""

import torch


class Redness:
    """Mean of red - (green + blue) / 2 over the pixels, times ``scale``."""

    name = "redness"  # the score's name in the tables

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, images: torch.Tensor, prompts, metadata=None) -> torch.Tensor:
        r, g, b = images[:, 0], images[:, 1], images[:, 2]  # images: float [0, 1], (N, 3, H, W)
        return (r - (g + b) / 2).flatten(1).mean(1) * self.scale
