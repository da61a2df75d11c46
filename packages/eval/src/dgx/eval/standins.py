"""Offline stand-ins of the evaluations that read files or load scoring models (``dgx.grpo.contracts``: each
registry entry names its ``stand_in``): prompt files written into a folder, the rewards' tiny stand-in models, and the
node arguments that use them. They exercise the real evaluation code; their scores mean nothing."""

from __future__ import annotations

import json
from pathlib import Path

from dgx.rewards import standins


def _prompts(folder: Path, name: str, metadata: list[dict]) -> str:
    path = folder / name
    path.write_text("".join(json.dumps(m) + "\n" for m in metadata))
    return str(path)


def shapes_reward(folder: Path) -> dict:
    """A reward node of its own: the smooth ``ink``."""
    return {"args": {"reward": "ink"}}


def geneval(folder: Path) -> dict:
    """GenEval on real images: the GenEval reward's tiny detector and CLIP, and prompts with GenEval metadata."""
    made = standins.geneval(folder)
    return {"args": {**made["args"], "prompts_file": _prompts(folder, "geneval.jsonl", made["metadata"])}}


def pickscore(folder: Path) -> dict:
    """PickScore of prompts from a file: a tiny CLIP in its place."""
    prompts = _prompts(folder, "prompts.jsonl", [{"prompt": "a photo of a cat"}, {"prompt": "two red dogs"}])
    return {"args": {**standins.clip_reward(folder)["args"], "prompts_file": prompts}}


def ocr(folder: Path) -> dict:
    """OCR of prompts that quote a text (rapidocr ships its models)."""
    return {"args": {"prompts_file": _prompts(folder, "ocr.jsonl", standins.OCR_METADATA)}}


def drawbench(folder: Path) -> dict:
    """DrawBench's sheet as CSV, scored by PickScore on a tiny CLIP."""
    sheet = folder / "drawbench.csv"
    sheet.write_text("Prompts,Category\na red car,Colors\ntwo cats,Counting\n")
    return {"args": {"prompts_file": str(sheet), "metrics": {"pickscore": standins.clip_reward(folder)["args"]}}}
