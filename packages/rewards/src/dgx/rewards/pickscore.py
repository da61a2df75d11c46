"""PickScore: CLIP-H preference score, ``logit_scale.exp() * cos(image, text)`` (docs/method.md, section 2)."""

from __future__ import annotations

from typing import Sequence

import torch
from dgx.rewards.base import LazyModel, load_error
from dgx.rewards.clip_pixels import PREPROCESS, clip_inputs


def _features(out) -> torch.Tensor:
    """transformers < 5 returns a tensor, >= 5 a model output with the projection in pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class PickScore(LazyModel):
    """Lazily loads ``CLIPModel`` + ``AutoProcessor`` from Hub ids or local folders.

    ``scale`` divides the score (Flow-GRPO trains with PickScore / 26). ``preprocess``: ``tensor`` resizes and
    normalises the images on the reward's device (``clip_pixels``, within a tested tolerance of the processor; no
    PIL round trip), ``processor`` passes uint8 arrays through the processor as PickScore's own code does.
    """

    name = "pickscore"

    def __init__(
        self,
        path: str = "yuvalkirstain/PickScore_v1",
        processor_path: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        scale: float = 1.0,
        preprocess: str = "tensor",
    ):
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess={preprocess!r}: expected one of {', '.join(PREPROCESS)}")
        self.path, self.processor_path, self.device = path, processor_path, torch.device(device)
        self.preprocess = preprocess
        self.batch_size, self.scale = batch_size, scale
        self.model = self.processor = None

    def _load(self) -> None:
        from transformers import AutoProcessor, CLIPModel

        try:
            self.processor = AutoProcessor.from_pretrained(self.processor_path)
        except (OSError, ValueError) as e:
            raise load_error(self.processor_path, "the PickScore processor", e) from e
        try:
            self.model = CLIPModel.from_pretrained(self.path).eval().to(self.device)
        except (OSError, ValueError) as e:
            raise load_error(self.path, "the PickScore model", e) from e

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None
    ) -> torch.Tensor:
        self.load()
        out = []
        for s in range(0, len(images), self.batch_size):
            px = clip_inputs(images[s : s + self.batch_size], self.processor, self.device, self.preprocess)
            tx = self.processor(
                text=list(prompts[s : s + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=77,
                return_tensors="pt",
            ).to(self.device)
            img = _features(self.model.get_image_features(pixel_values=px))
            txt = _features(
                self.model.get_text_features(input_ids=tx["input_ids"], attention_mask=tx.get("attention_mask"))
            )
            img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
            out.append(self.score((img * txt).sum(-1)).float().cpu())
        return torch.cat(out)

    def score(self, cos: torch.Tensor) -> torch.Tensor:
        """The reward of each image's cosine similarity to its prompt: ``logit_scale.exp() * cos / scale``."""
        return self.model.logit_scale.exp() * cos / self.scale
