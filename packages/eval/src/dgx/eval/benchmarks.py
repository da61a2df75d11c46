"""Benchmarks: sample with the ODE sampler, score, write per-prompt JSONL, a summary and a few images
(``samples/``, for the report's sample grid; under several processes, from the first process's share).

Under several processes (``accelerate launch``) each process samples and scores its ``Shard`` of the
images; the per-image records are gathered in image order, so every process gets the summary a single
process would compute (image i's noise is keyed by (seed, i) wherever it is drawn).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from dgx.rewards.base import Reward, checked, frame_wise, to_uint8
from dgx.rewards.geneval import summarize
from dgx.rewards.geneval_reward import GenEvalReward
from dgx.rewards.geneval_reward import shapes_geneval as shapes_rules
from dgx.sampler import FlowModel, ode_step, rollout, sample_generator
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count`` scores images [index * n // count, (index + 1) * n // count) of n;
    ``gather`` joins every process's per-image records in process order (accelerate's ``gather_object``)."""

    index: int = 0
    count: int = 1
    gather: Callable[[list], list] = list

    def part(self, n: int) -> range:
        return range(self.index * n // self.count, (self.index + 1) * n // self.count)

    def batches(self, n: int, batch: int) -> int:
        """Forward batches of ``batch`` images the busiest process runs for n images: every process runs as many
        (``generate``), which a sharded transformer needs (each forward pass gathers its shards on all of them)."""
        return math.ceil(math.ceil(n / self.count) / batch)


S = TypeVar("S")


@dataclass(frozen=True)
class Protocol:
    """How every evaluation samples and where it writes (a config's ``eval`` keys; dgx fills it): ODE ``steps`` at
    CFG ``guidance``, ``images_per_prompt`` (raised per tag to ``min_images_per_tag`` where prompts have tags), the
    first ``max_prompts`` prompts (None: all), image i's noise keyed by (``seed``, i), ``batch`` images per forward
    pass, the folder ``out`` (None: nothing written) and this process's ``shard`` of the images."""

    steps: int = 20
    guidance: float = 1.0
    images_per_prompt: int = 1
    min_images_per_tag: int = 0
    max_prompts: int | None = None
    seed: int = 0
    batch: int = 16
    out: Path | None = None
    shard: Shard = Shard()


class Scorers:
    """The scoring models of a run's evaluations, built on first use and kept, so that the base model's evaluation,
    every evaluation during training and each run's final one share one PickScore, one detector, ... A benchmark
    given none builds its own."""

    def __init__(self) -> None:
        self.built: dict[tuple, object] = {}

    def get(self, key: tuple, build: Callable[[], S]) -> S:
        """The scorer stored under ``key`` (its class, paths and device), built by ``build()`` the first time."""
        if key not in self.built:
            self.built[key] = build()
        return self.built[key]


def generate(
    model: FlowModel,
    prompts: Sequence[str],
    steps: int,
    guidance: float,
    seed: int,
    batch: int = 64,
    desc: str = "eval",
    first: int = 0,
    batches: int = 0,
) -> torch.Tensor:
    """ODE samples for ``prompts`` (one image each): float [0, 1] NCHW. Image i uses seed (seed, first + i).

    Args:
        model: The generator.
        prompts: One prompt per image.
        steps: ODE steps.
        guidance: The classifier-free guidance scale.
        seed: The seed every image's noise is keyed by.
        batch: Images per forward pass.
        desc: The progress bar's label.
        first: The global index of the first image (a process's share starts there).
        batches: Run at least this many forward batches (``Shard.batches``), the ones past the prompts on one
            throwaway image.
    """
    out = []
    for b in tqdm(range(max(math.ceil(len(prompts) / batch), batches)), desc=desc, leave=False):
        chunk = list(prompts[b * batch : (b + 1) * batch])
        spare = not chunk
        chunk = chunk or [prompts[0] if prompts else ""]
        gens = [sample_generator(seed, first + b * batch + i) for i in range(len(chunk))]
        traj = rollout(model, model.encode(chunk), chunk, steps, ode_step, None, gens, guidance)
        if not spare:
            out.append(model.decode(traj.latents[:, -1]))
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)  # no prompts: a process with an empty shard


def share_samples(
    model: FlowModel, metas: list[dict], protocol: Protocol, desc: str
) -> tuple[range, list[dict], list[str], torch.Tensor]:
    """This process's share of an evaluation's images (``metas``: one entry per image) and their ODE samples under
    ``protocol``: its indices, entries, prompts and images. Every process runs the busiest one's batch count.

    Args:
        model: The generator.
        metas: One metadata entry (with its ``prompt``) per image of the whole evaluation.
        protocol: How the evaluation samples, and this process's share.
        desc: The progress bar's label.
    """
    p, shard = protocol, protocol.shard
    mine = shard.part(len(metas))
    local = [metas[i] for i in mine]
    prompts = [m["prompt"] for m in local]
    batches = shard.batches(len(metas), p.batch)
    return (
        mine,
        local,
        prompts,
        generate(model, prompts, p.steps, p.guidance, p.seed, p.batch, desc, mine.start, batches),
    )


def images_per_prompt_by_tag(metadata: list[dict], images_per_prompt: int, min_images_per_tag: int = 0) -> list[int]:
    """Images for each prompt: ``images_per_prompt``, raised for tags with few prompts so that every
    tag gets at least ``min_images_per_tag`` images (0 keeps GenEval's fixed count)."""
    counts = Counter(m.get("tag", "") for m in metadata)
    return [max(images_per_prompt, math.ceil(min_images_per_tag / counts[m.get("tag", "")])) for m in metadata]


def images_by_tag(metadata: list[dict], images_per_prompt: int, min_images_per_tag: int = 0) -> list[dict]:
    """One metadata entry per image, each prompt repeated ``images_per_prompt_by_tag`` times, in order."""
    reps = images_per_prompt_by_tag(metadata, images_per_prompt, min_images_per_tag)
    return [m for m, k in zip(metadata, reps) for _ in range(k)]


# the fields of a GenEval-style per-image record; any other number in it is a score of the same image (a reward's)
VERDICT_FIELDS = ("index", "tag", "prompt", "correct", "partial", "reasons", "kinds")

SAMPLES_SAVED = 12  # images per evaluation kept as PNG for viewing (the report's sample grid)


def sample_picks(metas: Sequence[dict], key: str, n: int = SAMPLES_SAVED) -> list[int]:
    """Positions of the images to keep for viewing: for each value of ``key`` (GenEval's tag, DrawBench's
    category; absent = one group) the first ``n // groups`` (at least 1) images of distinct prompts, in image order.
    Image i has the same prompt and noise in every model's evaluation, so the picks line up across models."""
    groups: dict[str, set[str]] = {}
    for m in metas:
        groups.setdefault(m.get(key, ""), set())
    per_group = max(1, n // max(1, len(groups)))
    picks = []
    for j, m in enumerate(metas):
        seen = groups[m.get(key, "")]
        if len(seen) < per_group and m["prompt"] not in seen:
            seen.add(m["prompt"])
            picks.append(j)
    return picks


def _write(
    out: Path | None,
    records: list[dict],
    summary: dict,
    images: torch.Tensor | None = None,
    picks: Sequence[int] = (),
    first: int = 0,
) -> None:
    """per_image.jsonl, summary.json, and ``images[j]`` for j in ``picks`` as samples/INDEX.png (INDEX = first + j);
    a video as samples/INDEX.webp (animated) and its frame grid as the PNG."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if picks and images is not None:
            (out / "samples").mkdir(exist_ok=True)
            for j in picks:
                save_sample(images[j], out / "samples" / f"{first + j:05d}")


def save_sample(sample: torch.Tensor, stem: Path, fps: int = 16) -> None:
    """An image (3, H, W) as ``stem``.png; a video (F, 3, H, W) also as ``stem``.webp, looping at ``fps``, with the
    PNG showing its scored frames side by side (``to_uint8``)."""
    from PIL import Image

    Image.fromarray(to_uint8(sample[None])[0]).save(stem.with_suffix(".png"))
    if sample.ndim == 4:
        frames = [Image.fromarray(f) for f in to_uint8(sample)]
        frames[0].save(stem.with_suffix(".webp"), save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0)


def score_batches(rewards: dict, images: torch.Tensor, prompts: list[str], metas: list[dict], batch: int) -> dict:
    """Each reward (name -> reward) of ``images`` in batches of ``batch``: name -> (N,) float32 on the CPU; every
    batch's scores are ``checked`` (one finite float per image)."""
    return {
        name: torch.cat(
            [
                checked(
                    frame_wise(r, images[s : s + batch], prompts[s : s + batch], metas[s : s + batch]),
                    len(images[s : s + batch]),
                    name,
                    prompts[s : s + batch],
                )
                .float()
                .cpu()
                for s in range(0, len(images), batch)
            ]
        )
        if len(images)
        else torch.zeros(0)
        for name, r in rewards.items()
    }


def geneval_benchmark(
    model: FlowModel, reward: GenEvalReward, metadata: list[dict], protocol: Protocol, scores: dict | None = None
) -> dict[str, float]:
    """GenEval protocol: N images per prompt, strict per-image verdicts, per-tag and overall. ``scores`` (name ->
    reward) also scores the same images: each per image in the records, its mean first in the summary."""
    p, shard = protocol, protocol.shard
    metas = images_by_tag(metadata[: p.max_prompts], p.images_per_prompt, p.min_images_per_tag)
    mine, local, prompts, images = share_samples(model, metas, p, reward.name)
    verdicts = reward.verdicts(images, local)
    extra = score_batches(scores or {}, images, prompts, local, p.batch)
    records = shard.gather(
        [
            {
                "index": i,
                "tag": metas[i]["tag"],
                "prompt": metas[i]["prompt"],
                "correct": v.correct,
                "partial": v.partial,
                "reasons": v.reasons,
                "kinds": v.kinds,
                **{n: x[j].item() for n, x in extra.items()},
            }
            for j, (i, v) in enumerate(zip(mine, verdicts))
        ]
    )
    summary = {n: float(sum(r[n] for r in records) / len(records)) for n in extra}  # the scores lead, then overall
    verdicts = summarize([r["tag"] for r in records], [r["correct"] for r in records])
    summary |= {"overall": verdicts.pop("overall"), **verdicts}
    _write(p.out, records, summary, images, sample_picks(local, "tag"), mine.start)
    return summary


def _shapes(model: FlowModel, protocol: Protocol, scores: dict, scorers: Scorers | None) -> dict[str, float]:
    """The strict GenEval verdicts of ODE samples of the shapes world's test split, and ``scores`` of the same images."""
    from dgx.rewards.shapes.prompts import split

    rules = (scorers or Scorers()).get(("shapes_geneval",), lambda: shapes_rules(partial=False))
    return geneval_benchmark(model, rules, split("test"), protocol, scores)


def shapes_geneval(model: FlowModel, protocol: Protocol, *, scorers: Scorers | None = None) -> dict[str, float]:
    """GenEval-style score on the shapes-world test split."""
    return _shapes(model, protocol, {}, scorers)


def shapes_pickscore(
    model: FlowModel,
    protocol: Protocol,
    *,
    path: str | None = None,
    processor_path: str | None = None,
    scorers: Scorers | None = None,
) -> dict[str, float]:
    """The shapes world's PickScore (``pickscore``; ``path``: its model folder, default the one dgx-rewards ships) of
    ODE samples of its test split, and the strict GenEval verdicts of the same images (``overall`` and per tag):
    does a preference gain carry over to the rules?"""
    from importlib import resources

    from dgx.rewards.pickscore import PickScore

    path = path or str(resources.files("dgx.rewards.shapes").joinpath("pickscore"))
    scorers = scorers or Scorers()
    where = (path, processor_path or path, _device(model))
    ps = scorers.get(("pickscore", *where), lambda: PickScore(*where[:2], device=where[2]))
    return _shapes(model, protocol, {"pickscore": ps}, scorers)


def shapes_reward(
    model: FlowModel, protocol: Protocol, *, reward: Reward, scorers: Scorers | None = None
) -> dict[str, float]:
    """Any reward (``reward``: a reward node, built on the run's device; left out, the run's own reward) of ODE
    samples of the shapes world's test split, under the reward's name, and the strict GenEval verdicts of the same
    images; image i has the same prompt and initial noise for every model, so gains pair image by image."""
    return _shapes(model, protocol, {reward.name: reward}, scorers)


def read_prompts(path: str | Path) -> list[dict]:
    """Prompts from a .txt (one per line), .jsonl (objects with 'prompt') or .csv file (a 'prompt' or
    'Prompts' column and optionally 'category' / 'Category', as DrawBench's own sheet)."""
    path = Path(path or "")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} not found; set eval.prompts_file")
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        keys = {k.lower(): k for k in (rows[0] if rows else {})}
        if "prompt" not in keys and "prompts" not in keys:
            raise ValueError(f"{path}: no 'prompt' or 'Prompts' column (columns: {list(keys.values())})")
        pk, ck = keys.get("prompt", keys.get("prompts")), keys.get("category")
        return [{"prompt": r[pk], **({"category": r[ck]} if ck else {})} for r in rows if r[pk].strip()]
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines] if path.suffix == ".jsonl" else [{"prompt": ln.strip()} for ln in lines]


def reward_benchmark(
    model: FlowModel, rewards: dict[str, Reward], metadata: list[dict], protocol: Protocol
) -> dict[str, float]:
    """Score the same ODE samples of the prompts with every reward (name -> reward): mean and std per metric, and the
    mean per ``category`` (``metric/category``) where the prompts have one; per-image JSONL."""
    p, shard = protocol, protocol.shard
    metas = [m for m in metadata[: p.max_prompts] for _ in range(p.images_per_prompt)]
    mine, local, prompts, images = share_samples(model, metas, p, "+".join(rewards))
    scores = score_batches(rewards, images, prompts, local, p.batch)
    records = shard.gather(
        [
            {
                "index": i,
                "prompt": m["prompt"],
                **({"category": m["category"]} if "category" in m else {}),
                **{n: v[j].item() for n, v in scores.items()},
            }
            for j, (i, m) in enumerate(zip(mine, local))
        ]
    )
    summary: dict[str, float] = {}
    categories = sorted({r.get("category") for r in records} - {None})
    for name in rewards:
        v = torch.tensor([r[name] for r in records])
        summary[name], summary[f"{name}_std"] = v.mean().item(), v.std().item() if len(v) > 1 else 0.0
        for c in categories:
            summary[f"{name}/{c}"] = v[torch.tensor([r.get("category") == c for r in records])].mean().item()
    _write(p.out, records, summary, images, sample_picks(local, "category"), mine.start)
    return summary


DRAWBENCH_METRICS = ("aesthetic", "pickscore", "imagereward")


def drawbench_rewards(metrics: dict[str, dict] | None = None, device: str | torch.device = "cpu") -> dict:
    """The DrawBench metrics: ``metrics`` maps a name (aesthetic, pickscore, imagereward) to its reward's
    keyword arguments (path, head_path, ...). By default all three, ImageReward only where its package is
    installed (skipped with a warning otherwise); naming it explicitly makes a missing package an error."""
    from dgx.rewards.aesthetic import Aesthetic
    from dgx.rewards.imagereward import ImageReward
    from dgx.rewards.pickscore import PickScore

    classes = {"aesthetic": Aesthetic, "pickscore": PickScore, "imagereward": ImageReward}
    if metrics is None:
        metrics = {n: {} for n in DRAWBENCH_METRICS}
        if importlib.util.find_spec("ImageReward") is None:
            warnings.warn(
                "DrawBench: ImageReward is not installed (pip install dgx-rewards[imagereward]); scoring without it",
                stacklevel=2,
            )
            del metrics["imagereward"]
    unknown = sorted(set(metrics) - set(classes))
    if unknown:
        raise ValueError(f"unknown DrawBench metric(s) {unknown}; choose from {sorted(classes)}")
    return {n: classes[n](**{"device": device, **kw}) for n, kw in metrics.items()}


def drawbench(
    model: FlowModel,
    protocol: Protocol,
    *,
    prompts_file: str | None = None,
    metrics: dict[str, dict] | None = None,
    scorers: Scorers | None = None,
) -> dict[str, float]:
    """DrawBench: the 200 prompts (11 categories) from a file, scored with several metrics (``metrics``: name ->
    the reward's arguments; default aesthetic, PickScore and ImageReward where installed).

    ``prompts_file``: DrawBench's sheet exported as CSV (columns Prompts, Category), or a TXT/JSONL file.
    """
    if not prompts_file:
        raise FileNotFoundError(
            "drawbench needs eval.prompts_file: DrawBench's prompt sheet as CSV (Prompts, Category) "
            "or one prompt per line; it is not bundled with dgx"
        )
    key = ("drawbench", json.dumps(metrics, sort_keys=True), _device(model))
    rewards = (scorers or Scorers()).get(key, lambda: drawbench_rewards(metrics, _device(model)))
    return reward_benchmark(model, rewards, read_prompts(prompts_file), protocol)


def pickscore(
    model: FlowModel,
    protocol: Protocol,
    *,
    prompts_file: str,
    path: str | None = None,
    processor_path: str | None = None,
    scorers: Scorers | None = None,
) -> dict[str, float]:
    """Mean PickScore of ODE samples on test prompts from a file (``path`` / ``processor_path``: the PickScore model
    and processor, Hub ids or folders; default PickScore_v1 and its CLIP-H processor)."""
    from dgx.rewards.pickscore import PickScore

    where = {k: v for k, v in (("path", path), ("processor_path", processor_path)) if v}
    key = ("pickscore", path, processor_path, _device(model))
    reward = (scorers or Scorers()).get(key, lambda: PickScore(device=_device(model), **where))
    return reward_benchmark(model, {reward.name: reward}, read_prompts(prompts_file), protocol)


def ocr(model: FlowModel, protocol: Protocol, *, prompts_file: str, scorers: Scorers | None = None) -> dict[str, float]:
    """OCR accuracy of ODE samples on test prompts (with quoted text) from a file."""
    from dgx.rewards.ocr import OCRReward

    reward = (scorers or Scorers()).get(("ocr",), OCRReward)
    return reward_benchmark(model, {reward.name: reward}, read_prompts(prompts_file), protocol)


def _device(model: FlowModel) -> torch.device:
    return getattr(model, "device", torch.device("cpu"))


def geneval(
    model: FlowModel,
    protocol: Protocol,
    *,
    prompts_file: str | None = None,
    path: str | None = None,
    processor_path: str | None = None,
    scorers: Scorers | None = None,
) -> dict[str, float]:
    """GenEval on real images: ``prompts_file`` (evaluation_metadata.jsonl) or the suite built like GenEval's;
    ``path`` / ``processor_path``: the detector and the CLIP colour classifier (default their Hub ids)."""
    from dgx.eval.geneval_prompts import build_suite
    from dgx.rewards.geneval_hf import hf_geneval

    meta = read_prompts(prompts_file) if prompts_file else build_suite()
    where = dict(path=path, processor_path=processor_path, device=_device(model))
    reward = (scorers or Scorers()).get(("geneval", *where.values()), lambda: hf_geneval(partial=False, **where))
    return geneval_benchmark(model, reward, meta, protocol)
