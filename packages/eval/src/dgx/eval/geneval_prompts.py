"""Build a GenEval prompt suite the way GenEval's ``create_prompts.py`` does (seed 43, n = 100).

All 80 classes once as single objects, then n samples each of two_object, counting (2-4),
colors, position and color_attr, de-duplicated; no colour prompts for "person". Classes
are COCO's 80 category names (the label names of COCO detectors); GenEval's released
``evaluation_metadata.jsonl`` can be used instead (``eval.prompts_file``) for the exact set.
"""

from __future__ import annotations

import json

import numpy as np

COCO_CLASSES = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
]
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]
POSITIONS = ["left of", "right of", "above", "below"]
NUMBERS = ["zero", "one", "two", "three", "four"]


def _a(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _plural(name: str) -> str:
    return f"{name}es" if name.endswith("s") else f"{name}s"


def build_suite(classes: list[str] = COCO_CLASSES, n: int = 100, seed: int = 43) -> list[dict]:
    """GenEval-style metadata dicts (tag, prompt, include, exclude?)."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    colorable = lambda i: (i + classes.index("person")) % k if "person" in classes else i  # noqa: E731
    out = [
        {
            "tag": "single_object",
            "include": [{"class": classes[i], "count": 1}],
            "prompt": f"a photo of {_a(classes[i])}",
        }
        for i in rng.choice(k, size=k, replace=False)
    ]
    for _ in range(n):
        a, b = rng.choice(k, size=2, replace=False)
        out.append(
            {
                "tag": "two_object",
                "include": [{"class": classes[a], "count": 1}, {"class": classes[b], "count": 1}],
                "prompt": f"a photo of {_a(classes[a])} and {_a(classes[b])}",
            }
        )
    for _ in range(n):
        i, num = rng.choice(k), int(rng.integers(2, 4, endpoint=True))
        out.append(
            {
                "tag": "counting",
                "include": [{"class": classes[i], "count": num}],
                "exclude": [{"class": classes[i], "count": num + 1}],
                "prompt": f"a photo of {NUMBERS[num]} {_plural(classes[i])}",
            }
        )
    for _ in range(n):
        i = colorable(rng.choice(k - 1) + 1)
        c = COLORS[rng.choice(len(COLORS))]
        out.append(
            {
                "tag": "colors",
                "include": [{"class": classes[i], "count": 1, "color": c}],
                "prompt": f"a photo of {_a(c)} {classes[i]}",
            }
        )
    for _ in range(n):
        a, b = rng.choice(k, size=2, replace=False)
        rel = POSITIONS[rng.choice(len(POSITIONS))]
        out.append(
            {
                "tag": "position",
                "include": [{"class": classes[b], "count": 1}, {"class": classes[a], "count": 1, "position": [rel, 0]}],
                "prompt": f"a photo of {_a(classes[a])} {rel} {_a(classes[b])}",
            }
        )
    for _ in range(n):
        a, b = (colorable(i) for i in rng.choice(k - 1, size=2, replace=False) + 1)
        ca, cb = rng.choice(len(COLORS), size=2, replace=False)
        out.append(
            {
                "tag": "color_attr",
                "include": [
                    {"class": classes[a], "count": 1, "color": COLORS[ca]},
                    {"class": classes[b], "count": 1, "color": COLORS[cb]},
                ],
                "prompt": f"a photo of {_a(COLORS[ca])} {classes[a]} and {_a(COLORS[cb])} {classes[b]}",
            }
        )
    seen, unique = set(), []
    for m in out:
        key = json.dumps(m, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(m)
    return unique
