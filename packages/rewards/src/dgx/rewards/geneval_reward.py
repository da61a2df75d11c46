"""GenEval as a reward: detector + colour classifier + the official rules (geneval.py)."""

from __future__ import annotations

from typing import Sequence

import torch
from dgx.rewards.base import RewardError, load_now, to_uint8
from dgx.rewards.geneval import ColorClassifier, Detector, Verdict, detector_color, evaluate


class GenEvalReward:
    """Strict (0/1) or partial-credit GenEval reward; needs each prompt's GenEval metadata.

    ``soft``: partial credit whose count clauses score the detector's class probabilities
    (see ``geneval.evaluate``); a smoother training reward, only with ``partial``.
    """

    def __init__(
        self,
        detector: Detector,
        color_of: ColorClassifier = detector_color,
        partial: bool = True,
        name: str = "geneval",
        soft: bool = False,
    ):
        if soft and not partial:
            raise RewardError(f"{name}: soft credit is a kind of partial credit; set partial: true or soft: false")
        self.detector, self.color_of, self.partial, self.name, self.soft = detector, color_of, partial, name, soft

    def load(self) -> None:
        """Load the detector's and the colour classifier's models now."""
        load_now(self.detector)
        load_now(self.color_of)

    def verdicts(self, images: torch.Tensor, metadata: Sequence[dict]) -> list[Verdict]:
        if metadata is None or len(metadata) != len(images):
            raise RewardError(
                f"{self.name} needs GenEval metadata for every image (got {0 if metadata is None else len(metadata)} for {len(images)})"
            )
        imgs = to_uint8(images)
        batch = getattr(self.detector, "detect_batch", None)  # a detector may take the whole batch at once
        dets = batch(imgs) if batch is not None else [self.detector(img) for img in imgs]
        return [evaluate(img, d, m, self.color_of, self.soft) for img, d, m in zip(imgs, dets, metadata)]

    def __call__(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None
    ) -> torch.Tensor:
        vs = self.verdicts(images, metadata)
        return torch.tensor([v.partial if self.partial else float(v.correct) for v in vs])


def shapes_geneval(partial: bool = True, soft: bool = False) -> GenEvalReward:
    """GenEval with the shapes-world programmatic detector."""
    from dgx.rewards.shapes.detector import ShapesDetector

    return GenEvalReward(ShapesDetector(), partial=partial, name="geneval_shapes", soft=soft)
