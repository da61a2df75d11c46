"""For a shapes model trained with ``--caption-swap``: how often does a test image show its prompt, how often
the prompt's swapped twin (``prompts.swapped``), and how often neither? Base model and trained adapters, on the
evaluation's own images (same prompts, noise keys and ODE sampler as ``dgx eval`` with that seed).

    python research/scripts/diagnose_twins.py configs/shapes_geneval.yaml --set model.path=runs/shapes_bias/step_09000 \\
        --adapters runs/quick_bias/flow_grpo/seed_0 runs/quick_bias/dense_grpo/seed_0

Prints one JSON line per model and tag: shares of images that are right, that are the twin, and neither
(strict GenEval verdicts against each caption's metadata).
"""

import argparse
import json
from pathlib import Path

from dgx.eval.benchmarks import generate, images_by_tag
from dgx.grpo.adapter import load_adapter
from dgx.grpo.build import build_model
from dgx.grpo.cli import SET_HELP
from dgx.grpo.config import load, parse_sets
from dgx.grpo.runner import EVAL_SEED
from dgx.rewards.geneval_reward import shapes_geneval as shapes_reward
from dgx.rewards.shapes.prompts import all_prompts, split, swapped

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("config", type=Path)
ap.add_argument("--variant", default=None, help="the variant whose model, LoRA and eval settings are used")
ap.add_argument("--adapters", nargs="*", default=[], help="run folders or checkpoint folders")
ap.add_argument("--seed", type=int, default=EVAL_SEED)
ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
args = ap.parse_args()

abl = load(args.config, overrides=parse_sets(args.sets))
cfg, registry = abl.variant(args.variant)[1], abl.registry()
metas = images_by_tag(split("test"), cfg.eval.images_per_prompt, cfg.eval.min_images_per_tag)
twin = swapped(all_prompts())
twins = [twin[m["prompt"]] for m in metas]
reward = shapes_reward(partial=False)
for adapter in [None, *args.adapters]:
    model = build_model(cfg, registry)
    if adapter is not None:
        load_adapter(model, cfg, Path(adapter))
    images = generate(model, [m["prompt"] for m in metas], cfg.eval.steps, cfg.eval_guidance, args.seed, cfg.eval.batch)
    right = [v.correct for v in reward.verdicts(images, metas)]
    wrong = [v.correct for v in reward.verdicts(images, twins)]
    for tag in ["all", *sorted({m["tag"] for m in metas})]:
        idx = [i for i, m in enumerate(metas) if tag in ("all", m["tag"])]
        share = {
            "right": sum(right[i] for i in idx),
            "twin": sum(wrong[i] for i in idx),
            "neither": sum(not (right[i] or wrong[i]) for i in idx),
        }
        print(
            json.dumps(
                {
                    "model": "base" if adapter is None else "_".join(Path(adapter).parts[-2:]),
                    "tag": tag,
                    "images": len(idx),
                    **{k: round(v / len(idx), 3) for k, v in share.items()},
                }
            ),
            flush=True,
        )
