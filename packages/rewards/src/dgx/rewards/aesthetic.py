"""LAION aesthetic predictor v2: CLIP ViT-L/14 image embedding (L2-normalised) -> MLP head.

The head has the layout of the original ``sac+logos+ava1-l14-linearMSE`` checkpoint
(``layers.{0,2,4,6,7}``: 768 -> 1024 -> 128 -> 64 -> 16 -> 1, dropout between); point
``head_path`` at that file (.pth or .safetensors) and ``path`` at the CLIP model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from dgx.rewards.base import LazyModel, RewardError, load_error
from dgx.rewards.clip_pixels import PREPROCESS, clip_inputs
from dgx.rewards.pickscore import _features
from torch import nn


class AestheticHead(nn.Module):
    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb).squeeze(-1)


class Aesthetic(LazyModel):
    name = "aesthetic"

    def __init__(
        self,
        path: str = "openai/clip-vit-large-patch14",
        head_path: str = "sac+logos+ava1-l14-linearMSE.pth",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        preprocess: str = "tensor",
    ):
        if preprocess not in PREPROCESS:
            raise ValueError(f"Aesthetic preprocess={preprocess!r}: expected 'tensor' or 'processor'")
        self.path, self.head_path, self.device, self.batch_size = path, head_path, torch.device(device), batch_size
        self.preprocess = preprocess  # as PickScore's: on the device (clip_pixels), or through the processor
        self.model = self.processor = self.head = None

    def _load(self) -> None:
        from transformers import CLIPImageProcessor, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(self.path).eval().to(self.device)
            self.processor = CLIPImageProcessor.from_pretrained(self.path)
        except (OSError, ValueError) as e:
            raise load_error(self.path, "the aesthetic predictor's CLIP model", e) from e
        head = Path(self.head_path)
        if not head.is_file():
            raise RewardError(
                f"aesthetic head {head} not found; download the LAION improved-aesthetic-predictor "
                "checkpoint (sac+logos+ava1-l14-linearMSE.pth) and set head_path to it"
            )
        if head.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(head)
        else:
            state = torch.load(head, map_location="cpu", weights_only=True)
        self.head = AestheticHead(state["layers.0.weight"].shape[1])
        self.head.load_state_dict(state)
        self.head.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str] = (), metadata=None) -> torch.Tensor:
        self.load()
        out = []
        for s in range(0, len(images), self.batch_size):
            px = clip_inputs(images[s : s + self.batch_size], self.processor, self.device, self.preprocess)
            emb = _features(self.model.get_image_features(pixel_values=px)).float()
            out.append(self.head(emb / emb.norm(dim=-1, keepdim=True)).cpu())
        return torch.cat(out)
