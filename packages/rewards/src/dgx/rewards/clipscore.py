"""CLIPScore (Hessel et al., 2021): ``w * max(cos(image, text), 0)`` with a CLIP model's embeddings."""

from __future__ import annotations

import torch
from dgx.rewards.pickscore import PickScore


class CLIPScore(PickScore):
    """CLIPScore of each image against its prompt: ``w * max(cos, 0)``, w = 2.5 and CLIP ViT-B/32 as in the paper.

    The CLIP model and processor load and preprocess as PickScore's (``path``, ``processor_path``: Hub ids or local
    folders, the processor's default the model's own; ``preprocess``: on the reward's device, or through the processor).
    """

    name = "clipscore"

    def __init__(
        self,
        path: str = "openai/clip-vit-base-patch32",
        processor_path: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        w: float = 2.5,
        preprocess: str = "tensor",
    ):
        super().__init__(path, processor_path or path, device, batch_size, 1.0, preprocess)
        self.w = w

    def score(self, cos: torch.Tensor) -> torch.Tensor:
        return self.w * cos.clamp_min(0)
