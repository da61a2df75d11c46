"""OCR accuracy reward, Flow-GRPO's formula (docs/method.md, section 2).

target = the text between the first pair of double quotes in the prompt; OCR all text in
the image, join, remove spaces, lowercase both. distance = 0 if the target is a substring
of the recognition, else Levenshtein distance capped at len(target);
reward = 1 - distance / len(target). No recognised text -> reward 0.
A prompt with no quoted text (or empty quotes) is a user error: ``RewardError`` says so,
unless ``missing_target="zero"`` was chosen, which scores such images 0.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import Levenshtein
import numpy as np
import torch
from dgx.rewards.base import RewardError, to_uint8

QUOTED = re.compile(r'"([^"]*)"')


def target_text(prompt: str) -> str | None:
    m = QUOTED.search(prompt)
    return m.group(1) if m else None


def ocr_accuracy(recognized: str, target: str) -> float:
    """1 - min(Levenshtein, len) / len on space-free lowercase text; substring -> 1."""
    rec, tgt = recognized.replace(" ", "").lower(), target.replace(" ", "").lower()
    if not tgt:
        raise RewardError("OCR target is empty after removing spaces")
    if not rec:
        return 0.0
    dist = 0 if tgt in rec else min(Levenshtein.distance(rec, tgt), len(tgt))
    return 1.0 - dist / len(tgt)


# Flow-GRPO's OcrScorer: PaddleOCR(use_angle_cls=False, lang="en"), whose text detector scales an image's longer
# side down to 960 px at most (PaddleOCR's default) and never up; rapidocr's own default scales the shorter side to
# 736 (a 512 px image to 736, 2x the pixels) and runs the angle classifier. Its wheel ships the Chinese PP-OCR
# models only (they read Latin text too); PaddleOCR's English recogniser needs `engine: paddleocr`.
FLOW_GRPO_SETTINGS = {"Global.use_cls": False, "Det.limit_type": "max", "Det.limit_side_len": 960}


def rapidocr_engine(params: dict | None = None) -> Callable[[np.ndarray], list[str]]:
    """PP-OCR (PaddleOCR's models) through rapidocr/onnxruntime, offline on CPU, with Flow-GRPO's settings
    (``FLOW_GRPO_SETTINGS``) unless ``params`` (rapidocr's keys, e.g. ``{"Det.limit_type": "min"}``) override them."""
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error", **FLOW_GRPO_SETTINGS, **(params or {})})

    def run(img: np.ndarray) -> list[str]:
        res = engine(img)
        return list(res.txts or []) if res is not None and getattr(res, "txts", None) else []

    return run


def paddleocr_engine() -> Callable[[np.ndarray], list[str]]:
    """The original PaddleOCR package (optional extra ``dgx-rewards[paddle]``)."""
    try:
        from paddleocr import PaddleOCR
    except ImportError as e:
        raise RewardError(
            "engine 'paddleocr' needs `pip install dgx-rewards[paddle]`; the default 'rapidocr' runs offline"
        ) from e
    ocr = PaddleOCR(use_angle_cls=False, lang="en")

    def run(img: np.ndarray) -> list[str]:
        res = ocr.ocr(img)
        return [line[1][0] for page in (res or []) for line in (page or [])]

    return run


ENGINES = {"rapidocr": rapidocr_engine, "paddleocr": paddleocr_engine}
SINGLE_THREAD = {"EngineConfig.onnxruntime.intra_op_num_threads": 1}


def make_engine(engine: str, params: dict | None = None) -> Callable[[np.ndarray], list[str]]:
    """The named engine, with rapidocr ``params`` where given."""
    return ENGINES[engine](**({"params": params} if params else {}))


_worker_engine: Callable[[np.ndarray], list[str]] | None = None  # set in each pool worker process only


def _start_worker(engine: str, params: dict | None) -> None:
    global _worker_engine
    _worker_engine = make_engine(engine, params)


def _recognize_in_worker(img: np.ndarray) -> str:
    return "".join(_worker_engine(img))


class OCRReward:
    """OCR accuracy of each image against its prompt's quoted text. ``workers`` > 0 reads the images in that many
    processes (spawned once, each a single-threaded rapidocr), the same text as in-process; OCR is CPU work, and on
    a machine with cores to spare this overlaps it with the GPU (with ``reward.pipeline``) and spreads it over them."""

    name = "ocr"

    def __init__(
        self, engine: str = "rapidocr", missing_target: str = "error", params: dict | None = None, workers: int = 0
    ):
        """``params``: rapidocr settings over Flow-GRPO's (``{}`` keeps them; engine rapidocr only)."""
        if engine not in ENGINES:
            raise RewardError(f"unknown OCR engine {engine!r}; valid: {', '.join(ENGINES)}")
        if missing_target not in ("error", "zero"):
            raise RewardError("missing_target must be 'error' or 'zero'")
        if params and engine != "rapidocr":
            raise RewardError(f"OCR params are rapidocr settings; engine {engine!r} takes none")
        if workers and engine != "rapidocr":
            raise RewardError(f"OCR workers run rapidocr; engine {engine!r} reads in-process (workers: 0)")
        if not isinstance(workers, int) or workers < 0:
            raise RewardError(f"OCR workers must be a whole number >= 0, got {workers!r}")
        self.engine_name, self.missing_target, self.params, self.workers = engine, missing_target, params, workers
        self._engine = self._pool = None

    def engine(self) -> Callable[[np.ndarray], list[str]]:
        """The in-process engine, started on first use."""
        if self._engine is None:
            self._engine = make_engine(self.engine_name, self.params)
        return self._engine

    def load(self) -> None:
        """Start the OCR engine now (in-process; worker processes start on the first call)."""
        if not self.workers:
            self.engine()

    def recognize(self, img: np.ndarray) -> str:
        return "".join(self.engine()(img))

    def recognize_all(self, images: list[np.ndarray]) -> list[str]:
        """The text of each image, in a process pool when ``workers`` > 0."""
        if not self.workers:
            return [self.recognize(img) for img in images]
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            params = {**(self.params or {}), **SINGLE_THREAD}
            self._pool = ProcessPoolExecutor(
                self.workers, multiprocessing.get_context("spawn"), _start_worker, (self.engine_name, params)
            )
        return list(self._pool.map(_recognize_in_worker, images))

    def __call__(
        self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict] | None = None
    ) -> torch.Tensor:
        targets = []
        for p in prompts:
            tgt = target_text(p)
            if (not tgt or not tgt.strip()) and self.missing_target != "zero":
                raise RewardError(
                    f'OCR reward: prompt {p!r} has no text in double quotes to check, e.g. a sign that says "hello"'
                )
            targets.append(tgt if tgt and tgt.strip() else None)
        pixels = to_uint8(images)
        read = iter(self.recognize_all([img for img, t in zip(pixels, targets) if t is not None]))
        return torch.tensor([0.0 if t is None else ocr_accuracy(next(read), t) for t in targets])
