"""Procedural renderer of the shapes world: flat coloured shapes on a grey background.

32 x 32 px was chosen over 64 px: four 8-11 px shapes still fit with gaps, the four
classes stay separable by fill ratio and vertical mass (see ``detector.py``), and every
model call, VAE decode and detector pass costs a quarter of what 64 px would, which is
what lets the whole method (dense rewards need ~T x more scoring) run on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 32
BACKGROUND = (150, 150, 150)
# GenEval's ten colour names with unambiguous RGB values (none close to the grey background).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "orange": (255, 140, 0),
    "yellow": (245, 225, 0),
    "green": (20, 160, 40),
    "blue": (20, 60, 230),
    "purple": (130, 30, 180),
    "pink": (255, 120, 200),
    "brown": (110, 60, 15),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
}
COLORS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "diamond"]
MIN_SIZE, MAX_SIZE = 8, 11
GAP = 2  # pixels kept free between objects so connected components never merge


@dataclass
class Shape:
    """One drawn object: class, colour name, centre (x, y) in pixels and side length."""

    cls: str
    color: str
    cx: float
    cy: float
    size: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


def shape_mask(shape: Shape, size: int = SIZE) -> np.ndarray:
    """Boolean mask of ``shape`` sampled at pixel centres."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy, h = x - shape.cx, y - shape.cy, shape.size / 2
    if shape.cls == "circle":
        return dx**2 + dy**2 <= h**2
    if shape.cls == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape.cls == "triangle":  # apex up, base down
        frac = (dy + h) / (2 * h)
        return (frac >= 0) & (frac <= 1) & (np.abs(dx) <= frac * h)
    if shape.cls == "diamond":
        return np.abs(dx) + np.abs(dy) <= h
    raise ValueError(f"unknown shape class {shape.cls!r}; expected one of {SHAPES}")


def draw(shapes: list[Shape], size: int = SIZE) -> np.ndarray:
    """Render shapes into an ``(size, size, 3)`` uint8 image."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUND
    for s in shapes:
        img[shape_mask(s, size)] = PALETTE[s.color]
    return img


def _overlaps(a: Shape, b: Shape, gap: int = GAP) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return not (ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0)


def pixel_box(shape: Shape, size: int = SIZE) -> tuple[float, float, float, float]:
    """The box a detector sees: bounds of the drawn pixels."""
    ys, xs = np.nonzero(shape_mask(shape, size))
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _relation_holds(a: Shape, b: Shape, relation: str) -> bool:
    """GenEval's relative-position rule (same code as the reward) on both the geometric and pixel boxes."""
    from dgx.rewards.geneval import relative_position

    return relation in relative_position(a.box, b.box) and relation in relative_position(pixel_box(a), pixel_box(b))


def satisfies(shapes: list[Shape], meta: dict) -> bool:
    """Whether a scene of ``shapes`` passes GenEval's strict rules for ``meta``, judged on the drawn objects themselves
    (their classes, colours and pixel boxes) instead of a detector's reading of the image."""
    from dgx.rewards.geneval import Detection, evaluate

    dets = [Detection(s.cls, pixel_box(s), 1.0, color=s.color) for s in shapes]
    return evaluate(np.zeros((SIZE, SIZE, 3), np.uint8), dets, meta).correct


def scene_for(
    meta: dict,
    rng: np.random.Generator,
    max_tries: int = 500,
    sizes: tuple[int, int] = (MIN_SIZE, MAX_SIZE),
    gap: int = GAP,
) -> list[Shape]:
    """Sample a scene that satisfies GenEval metadata ``meta`` (include/exclude clauses).

    Objects without a colour requirement get a random colour; counts and positions are
    honoured exactly; shapes never touch (``gap`` pixels apart); sides are drawn uniformly
    from ``sizes`` (inclusive).
    """
    for _ in range(max_tries):
        shapes: list[Shape] = []
        groups: list[list[Shape]] = []
        ok = True
        for req in meta["include"]:
            group = []
            for _ in range(req["count"]):
                s = _place(req, groups, shapes, rng, sizes, gap)
                if s is None:
                    ok = False
                    break
                group.append(s)
                shapes.append(s)
            if not ok:
                break
            groups.append(group)
        if ok:
            return shapes
    raise RuntimeError(f"could not place a scene for {meta['prompt']!r} in {max_tries} tries")


def _place(
    req: dict,
    groups: list[list[Shape]],
    placed: list[Shape],
    rng: np.random.Generator,
    sizes: tuple[int, int],
    gap: int,
) -> Shape | None:
    color = req.get("color") or COLORS[rng.integers(len(COLORS))]
    for _ in range(50):
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        lo, hi = size / 2 + 0.5, SIZE - size / 2 - 0.5
        s = Shape(req["class"], color, float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)), size)
        if any(_overlaps(s, p, gap) for p in placed):
            continue
        if "position" in req:
            rel, idx = req["position"]
            if not all(_relation_holds(s, t, rel) for t in groups[idx]):
                continue
        return s
    return None


def render_prompt(
    meta: dict, rng: np.random.Generator, sizes: tuple[int, int] = (MIN_SIZE, MAX_SIZE), gap: int = GAP
) -> tuple[np.ndarray, list[Shape]]:
    """A ground-truth image for one prompt's metadata, and the shapes drawn (``scene_for``'s layout)."""
    shapes = scene_for(meta, rng, sizes=sizes, gap=gap)
    return draw(shapes), shapes
