"""GenEval as a reward: detector + colour classifier + the official rules (geneval.py)."""

from __future__ import annotations

from typing import Sequence

import torch
from dgx.rewards.base import RewardError, to_uint8
from dgx.rewards.geneval import ColorClassifier, Detector, Verdict, detector_color, evaluate


class GenEvalReward:
    """Strict (0/1) or partial-credit GenEval reward; needs each prompt's GenEval metadata."""

    def __init__(self, detector: Detector, color_of: ColorClassifier = detector_color, partial: bool = True, name: str = "geneval"):
        self.detector, self.color_of, self.partial, self.name = detector, color_of, partial, name

    def verdicts(self, images: torch.Tensor, metadata: Sequence[dict]) -> list[Verdict]:
        if metadata is None or len(metadata) != len(images):
            raise RewardError(f"{self.name} needs GenEval metadata for every image (got {0 if metadata is None else len(metadata)} for {len(images)})")
        return [evaluate(img, self.detector(img), m, self.color_of) for img, m in zip(to_uint8(images), metadata)]

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None) -> torch.Tensor:
        vs = self.verdicts(images, metadata)
        return torch.tensor([v.partial if self.partial else float(v.correct) for v in vs])


def shapes_geneval(partial: bool = True, **_) -> GenEvalReward:
    """GenEval with the shapes-world programmatic detector."""
    from dgx.rewards.shapes.detector import ShapesDetector

    return GenEvalReward(ShapesDetector(), partial=partial, name="geneval_shapes")
