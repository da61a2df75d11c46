"""GenEval's rule engine, as the official evaluation script applies it (docs/method.md, section 2).

Detections come from a pluggable detector (shapes world, transformers Mask2Former, or
mmdetection); the rules here are plain code: confidence threshold (0.3, or 0.9 for the
``counting`` tag), at most 16 objects per class most confident first, then every
``include`` clause (count, colour, position) and ``exclude`` clause must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16
POSITION_THRESHOLD = 0.1
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]


@dataclass
class Detection:
    """One detected object: box (x0, y0, x1, y1) in pixels, confidence, optional mask and colour."""

    cls: str
    box: tuple[float, float, float, float]
    confidence: float
    mask: np.ndarray | None = None
    color: str | None = None
    scores: dict[str, float] | None = None  # per-class probabilities, when the detector has them

    def score(self, cls: str) -> float:
        """How much this object looks like ``cls``: its class probability, else its confidence if it is one."""
        if self.scores is not None:
            return self.scores.get(cls, 0.0)
        return self.confidence if self.cls == cls else 0.0


class Detector(Protocol):
    """Returns detections for one image (uint8 HWC array)."""

    def __call__(self, image: np.ndarray) -> list[Detection]: ...


ColorClassifier = Callable[[np.ndarray, list[Detection]], list[str]]


def detector_color(image: np.ndarray, objects: list[Detection]) -> list[str]:
    """Colour classifier that trusts the colour the detector attached to each object."""
    return [o.color or "" for o in objects]


@dataclass
class Verdict:
    """The outcome for one image: strict correctness, partial credit in [0, 1], and per failed clause
    a reason and its kind (``count``, ``colour``, ``position`` or ``exclude``), in clause order."""

    correct: bool
    partial: float
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def relative_position(box_a: Sequence[float], box_b: Sequence[float]) -> set[str]:
    """Relations of A to B: offset of centres, each axis shrunk by 0.1 * (size_A + size_B).

    No relation when both shrunk offsets are ~0; otherwise divide by the ORIGINAL offset's
    norm: dx < -0.5 left of, dx > 0.5 right of, dy < -0.5 above, dy > 0.5 below.
    """
    boxes = np.array([box_a, box_b], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def filter_detections(detections: list[Detection], tag: str) -> dict[str, list[Detection]]:
    """Per class, objects above the tag's threshold, most confident first, at most 16."""
    thr = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    by_cls: dict[str, list[Detection]] = {}
    for d in sorted(detections, key=lambda d: -d.confidence):
        if d.confidence > thr and len(by_cls.setdefault(d.cls, [])) < MAX_OBJECTS:
            by_cls[d.cls].append(d)
    return by_cls


def evaluate(
    image: np.ndarray,
    detections: list[Detection],
    meta: dict,
    color_of: ColorClassifier = detector_color,
    soft: bool = False,
) -> Verdict:
    """Apply every clause of ``meta`` to the detections of ``image``.

    Partial credit (our documented variant of Flow-GRPO's training reward): each clause
    scores in [0, 1] - count: min(found, count) / count; colour: matching / count;
    position: fraction of (object, target) pairs in relation; exclude: 0 or 1 - and the
    partial reward is their mean. Strict correctness is the official all-clauses rule.
    ``soft`` (a training-reward option, never a test rule) scores each count clause by the
    detector's belief instead: the ``count`` highest ``Detection.score(class)`` over all
    detections, unthresholded, summed and divided by ``count``, so a square drawn half-round
    earns part of its clause.
    """
    objects = filter_detections(detections, meta["tag"])
    correct, reasons, kinds, credits = True, [], [], []

    def fail(kind: str, reason: str) -> None:
        kinds.append(kind)
        reasons.append(reason)

    groups: list[list[Detection] | None] = []
    for req in meta.get("include", []):
        cls, count = req["class"], req["count"]
        found = objects.get(cls, [])[:count]
        matched = True
        if soft:
            credits.append(sum(sorted((d.score(cls) for d in detections), reverse=True)[:count]) / count)
        else:
            credits.append(min(len(found), count) / count)
        if len(found) < count:
            matched = False
            fail("count", f"expected {cls}>={count}, found {len(found)}")
            if "color" in req:
                credits.append(0.0)
            if "position" in req:
                credits.append(0.0)
        else:
            if "color" in req:
                colors = color_of(image, found)
                hits = colors.count(req["color"])
                credits.append(hits / count)
                if hits < count:
                    matched = False
                    fail("colour", f"expected {req['color']} {cls}>={count}, found {hits} {req['color']}; and {colors}")
            if "position" in req:
                rel, target = req["position"]
                targets = groups[target]
                if not matched or targets is None:
                    if matched:
                        fail("position", f"no target for {cls} to be {rel}")
                    matched = False
                    credits.append(0.0)
                else:
                    pairs = [rel in relative_position(o.box, t.box) for o in found for t in targets]
                    credits.append(sum(pairs) / len(pairs))
                    if not all(pairs):
                        matched = False
                        fail("position", f"expected {cls} {rel} target")
        correct &= matched
        groups.append(found if matched else None)
    for req in meta.get("exclude", []):
        n = len(objects.get(req["class"], []))
        ok = n < req["count"]
        credits.append(float(ok))
        if not ok:
            correct = False
            fail("exclude", f"expected {req['class']}<{req['count']}, found {n}")
    partial = float(np.mean(credits)) if credits else 1.0
    return Verdict(bool(correct), partial, reasons, kinds)


def summarize(tags: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    """GenEval score: per-tag accuracy and ``overall`` = mean over the tags present."""
    per: dict[str, list[bool]] = {}
    for t, c in zip(tags, correct):
        per.setdefault(t, []).append(bool(c))
    out = {t: float(np.mean(v)) for t, v in per.items()}
    out["overall"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out
