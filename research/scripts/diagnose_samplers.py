"""Compare samplers on the shapes test split: is the training sampler's reward the test score?

Scores the same prompts (GenEval-style, strict and partial credit, per tag) with the ODE
at the eval steps, the ODE at the training steps and the training SDE, for the base model
or a trained adapter. Shows whether what RL optimises (partial credit on SDE samples)
moves with what is tested (strict verdicts on ODE samples), and per tag which kind of clause
failed first (count, colour, position, exclude) in the failed images.

    python research/scripts/diagnose_samplers.py configs/shapes_geneval.yaml [--adapter RUN_DIR] [--a 0.3 0.7] [--split train]

``--records FILE`` also writes one JSON line per image and sampler (tag, prompt, strict and partial verdict): with the
same ``--seed``, image i has the same prompt and noise for every model, so two models' files pair image by image.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from dgx.eval.benchmarks import images_by_tag
from dgx.grpo.adapter import load_adapter
from dgx.grpo.build import build_model
from dgx.grpo.cli import SET_HELP
from dgx.grpo.config import load, parse_sets
from dgx.grpo.registry import Registry
from dgx.rewards.geneval import summarize
from dgx.rewards.geneval_reward import shapes_geneval
from dgx.rewards.shapes.prompts import split
from dgx.sampler import UniformNoise, ode_step, rollout, sample_generator, sde_step

ap = argparse.ArgumentParser()
ap.add_argument("config")
ap.add_argument("--variant", default=None)
ap.add_argument("--adapter", default=None)
ap.add_argument("--a", type=float, nargs="+", default=[0.7])
ap.add_argument("--images", type=int, default=4)
ap.add_argument("--min-per-tag", type=int, default=32)
ap.add_argument("--seed", type=int, default=777)
ap.add_argument("--split", choices=["test", "train"], default="test", help="the prompts scored")
ap.add_argument("--records", type=Path, default=None, help="per-image verdicts (JSON lines) to this file")
ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
args = ap.parse_args()

cfg = load(Path(args.config), overrides=parse_sets(args.sets)).variant(args.variant)[1]
model = build_model(cfg, Registry())
if args.adapter:
    load_adapter(model, cfg, Path(args.adapter))
meta = split(args.split)
metas = images_by_tag(meta, args.images, args.min_per_tag)
texts = [m["prompt"] for m in metas]
reward = shapes_geneval(partial=False)

samplers = {
    f"ode{cfg.eval.steps}": (cfg.eval.steps, ode_step, None),
    f"ode{cfg.sampler.steps}": (cfg.sampler.steps, ode_step, None),
}
samplers.update({f"sde{cfg.sampler.steps}_a{a}": (cfg.sampler.steps, sde_step, UniformNoise(a)) for a in args.a})
records = []
with torch.no_grad():
    cond = model.encode(texts)
    for name, (steps, step_fn, sched) in samplers.items():
        gens = [sample_generator(args.seed, i) for i in range(len(texts))]
        traj = rollout(model, cond, texts, steps, step_fn, sched, gens, cfg.sampler.guidance)
        verdicts = reward.verdicts(model.decode(traj.latents[:, -1]), metas)
        tags = [m["tag"] for m in metas]
        strict = summarize(tags, [v.correct for v in verdicts])
        partial = {
            t: sum(v.partial for v, g in zip(verdicts, tags) if g == t) / tags.count(t)
            for t in strict
            if t != "overall"
        }
        partial["overall"] = sum(partial.values()) / len(partial)
        first = {
            t: dict(Counter(v.kinds[0] for v, g in zip(verdicts, tags) if g == t and not v.correct))
            for t in strict
            if t != "overall"
        }
        records += [
            {
                "sampler": name,
                "i": i,
                "tag": m["tag"],
                "prompt": m["prompt"],
                "correct": v.correct,
                "partial": v.partial,
            }
            for i, (m, v) in enumerate(zip(metas, verdicts))
        ]
        print(
            json.dumps(
                {
                    "sampler": name,
                    "split": args.split,
                    "adapter": args.adapter,
                    "strict": {k: round(v, 3) for k, v in strict.items()},
                    "partial": {k: round(v, 3) for k, v in partial.items()},
                    "first_failure": first,
                }
            ),
            flush=True,
        )
if args.records:
    args.records.parent.mkdir(parents=True, exist_ok=True)
    args.records.write_text("".join(json.dumps(r) + "\n" for r in records))
