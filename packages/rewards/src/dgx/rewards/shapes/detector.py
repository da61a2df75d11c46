"""Programmatic detector for the shapes world, returning GenEval-style detections.

Each pixel is labelled with the nearest palette colour or the background; connected
components of one colour are objects. A component's class comes from two features of its
mask: fill ratio (area / box area: square ~1, circle ~0.78, triangle and diamond ~0.5)
and the share of its mass in the upper half of its box (triangle ~0.25, others ~0.5).
Confidence = softmax(-d^2 / TAU) over the distances d to the class prototypes (an
ambiguous blob halfway between two classes gets 0.5), times a fit factor
exp(-max(0, d1 - SLACK)^2 / (2 * SLACK_STD^2)) that is 1 for any rendered shape and
falls for blobs far from every prototype. ``Detection.scores`` is the same posterior at a
10x softer temperature (SOFT_TAU), times the fit factor: a graded "how square is this blob"
for soft GenEval credit, where the confidence is nearly 0/1.
"""

from __future__ import annotations

import numpy as np
from dgx.rewards.geneval import Detection
from dgx.rewards.shapes.render import BACKGROUND, PALETTE
from scipy import ndimage

MIN_AREA = 12
TAU, SLACK, SLACK_STD = 0.005, 0.12, 0.05
SOFT_TAU = 0.05
# (fill ratio, upper-half mass share) per class, measured on rendered shapes of size 8-11.
PROTOTYPES = {
    "square": (1.0, 0.5),
    "circle": (0.79, 0.5),
    "diamond": (0.56, 0.5),
    "triangle": (0.56, 0.28),
}


# 4-connected components within each image of a batch, never across images
IN_IMAGE = np.zeros((3, 3, 3), bool)
IN_IMAGE[1] = ndimage.generate_binary_structure(2, 1)


class ShapesDetector:
    """Callable detector: ``detector(image_uint8_hwc) -> list[Detection]``; ``detect_batch`` for many."""

    def __init__(self, min_area: int = MIN_AREA):
        self.min_area = min_area
        self.names = list(PALETTE)
        self.colors = np.array([PALETTE[n] for n in self.names] + [BACKGROUND], np.float32)
        self.protos = np.array(list(PROTOTYPES.values()), np.float32)
        self.classes = list(PROTOTYPES)

    def labels(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel index of the nearest palette colour; ``len(PALETTE)`` is background."""
        # |x - c|^2 - |x|^2 = |c|^2 - 2 x.c: the same argmin, exact in float32 for uint8 pixels
        d = (self.colors**2).sum(-1) - 2 * image.astype(np.float32) @ self.colors.T
        return d.argmin(-1)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        return self.detect_batch(image[None])[0]

    def detect_batch(self, images: np.ndarray) -> list[list[Detection]]:
        """Detections of each uint8 NHWC image, colour by colour, components in raster order. One
        component labelling per colour for the whole batch (the per-image loop cost more than the
        dense reward's model calls on a GPU)."""
        lab = self.labels(images)
        out: list[list[Detection]] = [[] for _ in range(len(images))]
        for ci, cname in enumerate(self.names):
            comps, n = ndimage.label(lab == ci, structure=IN_IMAGE)
            areas = np.bincount(comps.ravel(), minlength=n + 1)
            for k, box in enumerate(ndimage.find_objects(comps), start=1):
                if areas[k] >= self.min_area:
                    b = box[0].start
                    out[b].append(self._classify(comps[b] == k, cname))
        return out

    def _classify(self, mask: np.ndarray, color: str) -> Detection:
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        area = float(mask.sum())
        fill = area / ((y1 - y0) * (x1 - x0))
        h = y1 - y0  # upper-half mass; an odd middle row counts half
        upper = (mask[y0 : y0 + h // 2].sum() + (0.5 * mask[y0 + h // 2].sum() if h % 2 else 0.0)) / area
        d = np.linalg.norm(self.protos - np.array([fill, upper], np.float32), axis=1)
        best = int(d.argmin())
        fit = np.exp(-(max(0.0, float(d[best]) - SLACK) ** 2) / (2 * SLACK_STD**2))
        conf, soft = (_softmax(-(d**2) / tau) * fit for tau in (TAU, SOFT_TAU))
        scores = {c: float(v) for c, v in zip(self.classes, soft)}
        return Detection(
            self.classes[best], (float(x0), float(y0), float(x1), float(y1)), float(conf[best]), mask, color, scores
        )


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max())
    return p / p.sum()
