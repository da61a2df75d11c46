"""GenEval on real images: a transformers instance-segmentation detector + CLIP colours.

The official GenEval uses mmdetection's Mask2Former (COCO); here the detector is any
transformers ``AutoModelForUniversalSegmentation`` checkpoint (default
``facebook/mask2former-swin-small-coco-instance``), its processor's
``post_process_instance_segmentation`` giving masks, labels and scores. Colours follow
GenEval: the object's box crop with the background outside its mask set to grey #999999,
classified zero-shot by CLIP ViT-L/14 over the ten colours with three templates.
"""

from __future__ import annotations

import numpy as np
import torch
from dgx.rewards.base import LazyModel, load_error
from dgx.rewards.geneval import COLORS, Detection
from dgx.rewards.pickscore import _features

TEMPLATES = ["a photo of a {c} {obj}", "a photo of a {c}-colored {obj}", "a photo of a {c} object"]


class HFDetector(LazyModel):
    """``detector(image_uint8_hwc) -> list[Detection]`` from a transformers segmentation model."""

    def __init__(
        self,
        path: str = "facebook/mask2former-swin-small-coco-instance",
        device: str | torch.device = "cpu",
        min_score: float = 0.0,
        batch_size: int = 8,
    ):
        self.path, self.device, self.min_score, self.batch_size = path, torch.device(device), min_score, batch_size
        self.model = self.processor = None

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        try:
            self.processor = AutoImageProcessor.from_pretrained(self.path)
            self.model = AutoModelForUniversalSegmentation.from_pretrained(self.path).eval().to(self.device)
        except (OSError, ValueError) as e:
            raise load_error(self.path, "the GenEval detector", e) from e

    def __call__(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch([image])[0]

    @torch.no_grad()
    def detect_batch(self, images: list[np.ndarray] | np.ndarray) -> list[list[Detection]]:
        """The detections of each image, ``batch_size`` images per forward pass (the images of one batch share a
        size, as a generator's do, so that none is padded)."""
        self.load()
        out: list[list[Detection]] = []
        for s in range(0, len(images), self.batch_size):
            part = list(images[s : s + self.batch_size])
            inputs = self.processor(images=part, return_tensors="pt").to(self.device)
            results = self.processor.post_process_instance_segmentation(
                self.model(**inputs),
                threshold=self.min_score,
                target_sizes=[img.shape[:2] for img in part],
                return_binary_maps=True,
            )
            out += [self._detections(r) for r in results]
        return out

    def _detections(self, res: dict) -> list[Detection]:
        dets = []
        masks = res["segmentation"]
        for i, info in enumerate(res["segments_info"]):
            mask = (masks[i] if masks.ndim == 3 else masks == info["id"]).cpu().numpy().astype(bool)
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            dets.append(Detection(self.model.config.id2label[info["label_id"]], box, float(info["score"]), mask))
        return dets


class ClipColorClassifier(LazyModel):
    """GenEval's colour check: CLIP zero-shot over COLORS on the masked box crop."""

    def __init__(self, path: str = "openai/clip-vit-large-patch14", device: str | torch.device = "cpu"):
        self.path, self.device = path, torch.device(device)
        self.model = self.processor = None
        self._text: dict[str, torch.Tensor] = {}

    def _load(self) -> None:
        from transformers import CLIPModel, CLIPProcessor

        try:
            self.model = CLIPModel.from_pretrained(self.path).eval().to(self.device)
            self.processor = CLIPProcessor.from_pretrained(self.path)
        except (OSError, ValueError) as e:
            raise load_error(self.path, "the GenEval colour classifier", e) from e

    def text_embeddings(self, obj: str) -> torch.Tensor:
        """(10, D): per colour the normalised mean of the normalised template embeddings."""
        if obj not in self._text:
            rows = []
            for c in COLORS:
                tx = self.processor(
                    text=[t.format(c=c, obj=obj) for t in TEMPLATES], padding=True, return_tensors="pt"
                ).to(self.device)
                e = _features(
                    self.model.get_text_features(input_ids=tx["input_ids"], attention_mask=tx.get("attention_mask"))
                )
                e = (e / e.norm(dim=-1, keepdim=True)).mean(0)
                rows.append(e / e.norm())
            self._text[obj] = torch.stack(rows)
        return self._text[obj]

    @staticmethod
    def crop(image: np.ndarray, det: Detection) -> np.ndarray:
        """The detection's box, pixels outside its mask set to grey #999999."""
        img = image.copy()
        if det.mask is not None:
            img[~det.mask] = 0x99
        x0, y0, x1, y1 = (int(round(v)) for v in det.box)
        return img[y0:y1, x0:x1]

    @torch.no_grad()
    def __call__(self, image: np.ndarray, objects: list[Detection]) -> list[str]:
        if not objects:
            return []
        self.load()
        px = self.processor(images=[self.crop(image, d) for d in objects], return_tensors="pt")["pixel_values"].to(
            self.device
        )
        img = _features(self.model.get_image_features(pixel_values=px))
        img = img / img.norm(dim=-1, keepdim=True)
        return [COLORS[int((img[i] @ self.text_embeddings(d.cls).T).argmax())] for i, d in enumerate(objects)]


def hf_geneval(
    partial: bool = True,
    soft: bool = False,
    path: str | None = None,
    processor_path: str | None = None,
    device: str | torch.device = "cpu",
):
    """GenEval reward for real images (``path``: detector, ``processor_path``: CLIP for colours), both on ``device``."""
    from dgx.rewards.geneval_reward import GenEvalReward

    det = HFDetector(path, device) if path else HFDetector(device=device)
    col = ClipColorClassifier(processor_path, device) if processor_path else ClipColorClassifier(device=device)
    return GenEvalReward(det, col, partial=partial, name="geneval", soft=soft)
