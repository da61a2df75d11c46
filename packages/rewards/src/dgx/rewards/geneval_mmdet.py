"""GenEval with the official detector: mmdetection's Mask2Former (optional, ``pip install dgx-rewards[mmdet]``).

GenEval's own evaluation runs ``mmdet.apis.init_detector(config, checkpoint)`` with
``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`` and ``inference_detector(model, image)``.
mmdetection 2.x returns ``(bbox_result, segm_result)``: per class an (n, 5) array of
``x0, y0, x1, y1, score`` and n masks; 3.x returns a ``DetDataSample`` whose
``pred_instances`` hold ``bboxes``, ``scores``, ``labels`` and ``masks``. Both become
``Detection``s; thresholds, top-k and the rules stay in geneval.py. Colours: the CLIP
classifier of geneval_hf.py, as GenEval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from dgx.rewards.base import LazyModel, RewardError
from dgx.rewards.geneval import Detection

CONFIG = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"


class MMDetDetector(LazyModel):
    """``detector(image_uint8_hwc) -> list[Detection]`` from an mmdetection model (lazy)."""

    def __init__(
        self, config: str, checkpoint: str, device: str | torch.device = "cpu", classnames: Sequence[str] | None = None
    ):
        self.config, self.checkpoint, self.device = config, checkpoint, str(device)
        self.classnames = list(classnames) if classnames else None
        self.model = None

    def _load(self) -> None:
        try:
            from mmdet.apis import init_detector
        except ImportError as e:
            raise RewardError(
                "the mmdet GenEval detector needs mmdetection and mmcv (GenEval pins mmdet 2.x with "
                "mmcv-full 1.x); install them, or use reward `geneval` (transformers Mask2Former)"
            ) from e
        self.model = init_detector(self.config, self.checkpoint, device=self.device)
        if self.classnames is None:
            meta = getattr(self.model, "dataset_meta", None) or {}
            self.classnames = list(meta.get("classes") or getattr(self.model, "CLASSES", []) or [])
        if not self.classnames:
            raise RewardError(f"{self.config}: the model names no classes; pass classnames")

    def __call__(self, image: np.ndarray) -> list[Detection]:
        from mmdet.apis import inference_detector

        self.load()
        result = inference_detector(self.model, image[..., ::-1].copy())  # mmdet reads BGR arrays, as cv2
        if hasattr(result, "pred_instances"):
            return self._from_instances(result.pred_instances)
        bbox, segm = (
            (result[0], result[1] if len(result) > 1 else None) if isinstance(result, tuple) else (result, None)
        )
        dets = []
        for c, boxes in enumerate(bbox):
            for i, row in enumerate(np.asarray(boxes)):
                mask = None if segm is None else np.asarray(segm[c][i], dtype=bool)
                dets.append(Detection(self.classnames[c], tuple(float(v) for v in row[:4]), float(row[4]), mask))
        return dets

    def _from_instances(self, inst) -> list[Detection]:
        def arr(x):
            return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

        boxes, scores, labels = arr(inst.bboxes), arr(inst.scores), arr(inst.labels)
        masks = None if getattr(inst, "masks", None) is None else arr(inst.masks).astype(bool)
        return [
            Detection(
                self.classnames[int(labels[i])],
                tuple(float(v) for v in boxes[i]),
                float(scores[i]),
                None if masks is None else masks[i],
            )
            for i in range(len(scores))
        ]


def mmdet_geneval(
    partial: bool = True,
    soft: bool = False,
    path: str | None = None,
    processor_path: str | None = None,
    config: str | None = None,
    device: str | torch.device = "cpu",
):
    """GenEval reward with the official detector: ``path`` = the Mask2Former checkpoint (.pth), ``config`` =
    its mmdetection config (default: GenEval's, from mmdet's own configs folder), ``processor_path`` = CLIP."""
    from dgx.rewards.geneval_hf import ClipColorClassifier
    from dgx.rewards.geneval_reward import GenEvalReward

    if not path:
        raise RewardError(
            f"geneval_mmdet needs reward.path: the {CONFIG}.pth checkpoint (GenEval's download_models.sh)"
        )
    if config is None:
        try:
            import os

            import mmdet
        except ImportError as e:
            raise RewardError(
                "geneval_mmdet needs mmdetection: pip install dgx-rewards[mmdet] (mmdet 2.x, mmcv-full 1.x)"
            ) from e
        config = os.path.join(os.path.dirname(mmdet.__file__), f"../configs/mask2former/{CONFIG}.py")
    col = ClipColorClassifier(processor_path, device) if processor_path else ClipColorClassifier(device=device)
    return GenEvalReward(MMDetDetector(config, path, device), col, partial=partial, name="geneval", soft=soft)
