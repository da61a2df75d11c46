"""Benchmarks: sample with the ODE sampler, score, write per-prompt JSONL and a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from dgx.rewards.geneval import summarize
from dgx.rewards.geneval_reward import GenEvalReward
from dgx.rewards.geneval_reward import shapes_geneval as shapes_reward
from dgx.sampler import FlowModel, ode_step, rollout, sample_generator
from tqdm.auto import tqdm


def generate(model: FlowModel, prompts: Sequence[str], steps: int, guidance: float, seed: int,
             batch: int = 64, desc: str = "eval") -> torch.Tensor:
    """ODE samples for ``prompts`` (one image each): float [0, 1] NCHW. Image i uses seed (seed, i)."""
    out = []
    for s in tqdm(range(0, len(prompts), batch), desc=desc, leave=False):
        chunk = list(prompts[s : s + batch])
        gens = [sample_generator(seed, s + i) for i in range(len(chunk))]
        traj = rollout(model, model.encode(chunk), chunk, steps, ode_step, None, gens, guidance)
        out.append(model.decode(traj.latents[:, -1]))
    return torch.cat(out)


def geneval_benchmark(model: FlowModel, reward: GenEvalReward, metadata: list[dict], *, steps: int, guidance: float,
                      images_per_prompt: int = 4, seed: int = 0, batch: int = 64, out: Path | None = None) -> dict[str, float]:
    """GenEval protocol: N images per prompt, strict per-image verdicts, per-tag and overall."""
    metas = [m for m in metadata for _ in range(images_per_prompt)]
    images = generate(model, [m["prompt"] for m in metas], steps, guidance, seed, batch, desc=reward.name)
    verdicts = reward.verdicts(images, metas)
    summary = summarize([m["tag"] for m in metas], [v.correct for v in verdicts])
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "per_image.jsonl", "w") as f:
            for i, (m, v) in enumerate(zip(metas, verdicts)):
                f.write(json.dumps({"index": i, "tag": m["tag"], "prompt": m["prompt"], "correct": v.correct,
                                    "partial": v.partial, "reasons": v.reasons}) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def shapes_geneval(model: FlowModel, *, steps: int, guidance: float, images_per_prompt: int = 4, seed: int = 0,
                   batch: int = 64, max_prompts: int | None = None, out: Path | None = None, **_) -> dict[str, float]:
    """GenEval-style score on the shapes-world test split."""
    from dgx.rewards.shapes.prompts import split

    meta = split("test")[:max_prompts] if max_prompts else split("test")
    return geneval_benchmark(model, shapes_reward(partial=False), meta, steps=steps, guidance=guidance,
                             images_per_prompt=images_per_prompt, seed=seed, batch=batch, out=out)


def read_prompts(path: str | Path) -> list[dict]:
    """Prompts from a .txt (one per line) or .jsonl (objects with 'prompt') file."""
    path = Path(path or "")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} not found; set eval.prompts_file")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines] if path.suffix == ".jsonl" else [{"prompt": ln.strip()} for ln in lines]


def reward_benchmark(model: FlowModel, reward, metadata: list[dict], *, steps: int, guidance: float, images_per_prompt: int = 1,
                     seed: int = 0, batch: int = 16, out: Path | None = None) -> dict[str, float]:
    """Mean (and std) of ``reward`` over ODE samples of the prompts; per-image JSONL."""
    metas = [m for m in metadata for _ in range(images_per_prompt)]
    prompts = [m["prompt"] for m in metas]
    images = generate(model, prompts, steps, guidance, seed, batch, desc=reward.name)
    scores = torch.cat([reward(images[s : s + batch], prompts[s : s + batch], metas[s : s + batch]) for s in range(0, len(images), batch)])
    summary = {reward.name: scores.mean().item(), f"{reward.name}_std": scores.std().item() if len(scores) > 1 else 0.0}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "per_image.jsonl", "w") as f:
            for i, (p, r) in enumerate(zip(prompts, scores.tolist())):
                f.write(json.dumps({"index": i, "prompt": p, reward.name: r}) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def pickscore(model: FlowModel, *, prompts_file: str, max_prompts: int | None = None, **kw) -> dict[str, float]:
    """Mean PickScore of ODE samples on test prompts from a file."""
    from dgx.rewards.pickscore import PickScore

    return reward_benchmark(model, PickScore(), read_prompts(prompts_file)[:max_prompts], **_sampling(kw))


def ocr(model: FlowModel, *, prompts_file: str, max_prompts: int | None = None, **kw) -> dict[str, float]:
    """OCR accuracy of ODE samples on test prompts (with quoted text) from a file."""
    from dgx.rewards.ocr import OCRReward

    return reward_benchmark(model, OCRReward(), read_prompts(prompts_file)[:max_prompts], **_sampling(kw))


def _sampling(kw: dict) -> dict:
    return {k: kw[k] for k in ("steps", "guidance", "images_per_prompt", "seed", "batch", "out") if k in kw}


def geneval(model: FlowModel, *, prompts_file: str | None = None, max_prompts: int | None = None, path: str | None = None,
            processor_path: str | None = None, **kw) -> dict[str, float]:
    """GenEval on real images: ``prompts_file`` (evaluation_metadata.jsonl) or the suite built like GenEval's."""
    from dgx.eval.geneval_prompts import build_suite
    from dgx.rewards.geneval_hf import hf_geneval

    meta = read_prompts(prompts_file) if prompts_file else build_suite()
    return geneval_benchmark(model, hf_geneval(partial=False, path=path, processor_path=processor_path), meta[:max_prompts],
                             **_sampling(kw))
