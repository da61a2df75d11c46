"""Prompt sources: a config's ``prompts`` node names one, called as ``source(split, **its arguments)`` for the
``"train"`` or ``"test"`` prompts (a list of metadata dicts, each with a ``prompt``), and ``choose_prompts`` draws
each iteration's prompts from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from dgx.grpo.errors import ConfigError


def prompt_file(split: str, *, path: str, test_path: str | None = None) -> list[dict]:
    """The prompts of a file, ``test_path`` for the test split when given, else ``path`` for both: a .jsonl file of
    objects with a ``prompt`` (and GenEval metadata where the reward reads it), or one prompt per line."""
    file = Path(test_path if split == "test" and test_path else path)
    key = "test_path" if split == "test" and test_path else "path"
    if not file.is_file():
        raise ConfigError(f"prompts.{key}: prompt file {str(file)!r} not found")
    lines = file.read_text().splitlines()
    if not any(ln.strip() for ln in lines):
        raise ConfigError(f"prompts.{key}: {file} has no prompts")
    jsonl = file.suffix == ".jsonl"
    for i, ln in enumerate(lines, 1):
        if why := line_problem(ln, jsonl):
            raise ConfigError(f"prompts.{key}: {file}, line {i}: {why}")
    return [json.loads(ln) if jsonl else {"prompt": ln.strip()} for ln in lines if ln.strip()]


def line_problem(line: str, jsonl: bool, needs_tag: bool = False) -> str | None:
    """Why one line of a prompt file cannot serve, or None: a NUL byte, or (JSONL) not a JSON object with a
    ``prompt`` string (and a ``tag`` where ``needs_tag``). A blank line is skipped."""
    if "\x00" in line:
        return "a NUL byte"
    if not jsonl or not line.strip():
        return None
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not JSON ({e.msg})"
    if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
        return "not an object with a 'prompt' string"
    if needs_tag and "tag" not in item:
        return "no 'tag' (train.prompt_sampling: by_tag needs one on every prompt)"
    return None


def choose_prompts(prompts: list[dict], n: int, rng: np.random.Generator, mode: str = "uniform") -> np.ndarray:
    """Indices of ``n`` prompts: uniformly (without replacement where possible), or ``by_tag``: for each
    pick a tag uniformly among the tags present, then a prompt of that tag."""
    if mode == "uniform":
        return rng.choice(len(prompts), n, replace=len(prompts) < n)
    if any("tag" not in m for m in prompts):
        raise ConfigError("train.prompt_sampling: by_tag needs a 'tag' in every prompt's metadata")
    by_tag: dict[str, list[int]] = {}
    for i, m in enumerate(prompts):
        by_tag.setdefault(m["tag"], []).append(i)
    tags = sorted(by_tag)
    return np.array([rng.choice(by_tag[tags[rng.integers(len(tags))]]) for _ in range(n)])


def file_stand_in(folder: Path) -> dict:
    """The ``file`` source's offline stand-in (dgx.grpo.contracts): a JSONL train file and a TXT test file."""
    (folder / "train.jsonl").write_text('{"prompt": "a red circle", "tag": "color"}\n{"prompt": "two squares"}\n')
    (folder / "test.txt").write_text("a blue square\n")
    return {"args": {"path": str(folder / "train.jsonl"), "test_path": str(folder / "test.txt")}}
