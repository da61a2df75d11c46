"""ImageReward through its own package (optional extra ``dgx-rewards[imagereward]``).

The package pins old dependencies (timm 0.6, fairscale, torchvision) and does not install
beside every torch; dgx imports it only when this reward is used.
"""

from __future__ import annotations

from typing import Sequence

import torch
from dgx.rewards.base import LazyModel, RewardError, to_uint8


class ImageReward(LazyModel):
    name = "imagereward"

    def __init__(self, path: str = "ImageReward-v1.0", device: str | torch.device = "cpu"):
        self.path, self.device, self.model = path, str(device), None

    def _load(self) -> None:
        try:
            import ImageReward as RM
        except ImportError as e:
            raise RewardError(
                "the imagereward reward needs the ImageReward package: `pip install dgx-rewards[imagereward]` "
                "(it needs torchvision and timm==0.6.13)"
            ) from e
        try:
            self.model = RM.load(self.path, device=self.device)
        except (OSError, ValueError, RuntimeError) as e:
            raise RewardError(
                f"could not load ImageReward {self.path!r} ({e}); offline, give path = a local checkpoint file"
            ) from e

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata=None) -> torch.Tensor:
        from PIL import Image

        self.load()
        return torch.tensor(
            [float(self.model.score(p, [Image.fromarray(a)])) for p, a in zip(prompts, to_uint8(images))]
        )
