"""Score the base model and trained adapters on the same test images over several evaluation seeds,
and report each adapter's gain over the base model paired image by image (same prompt and noise).

One evaluation seed of the quick protocol has a standard error near 0.03 on the overall score, so
a single seed can make the base model look better or worse than it is; this script measures both.

    python research/scripts/paired_eval.py configs/shapes_geneval.yaml --seeds 1000 1001 --out runs/paired \\
        --adapters runs/shapes_quick/flow_grpo/seed_0 runs/shapes_quick/dense_grpo/seed_0

Prints one JSON line per (model, seed): the summary and, for adapters, ``gain`` = [overall gain,
its standard error] (dgx.eval.tables.paired_gain); then one line per adapter with the gain pooled
over the seeds. Per-image records go to OUT/NAME/seed_S/eval/ (reused for the base on a rerun).
"""

import argparse
import json
from pathlib import Path

from dgx.eval.tables import paired_gain, pool
from dgx.grpo.adapter import load_adapter
from dgx.grpo.assembly import assemble
from dgx.grpo.cli import SET_HELP
from dgx.grpo.config import load, parse_sets
from dgx.grpo.results import per_image
from dgx.grpo.runner import evaluate

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("config", type=Path)
ap.add_argument("--variant", default=None, help="the variant whose model, LoRA and eval settings are used")
ap.add_argument("--adapters", nargs="*", default=[], help="run folders or checkpoint folders")
ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001])
ap.add_argument("--images", type=int, default=None, help="eval.images_per_prompt (default: the config's)")
ap.add_argument("--min-per-tag", type=int, default=None, help="eval.min_images_per_tag (default: the config's)")
ap.add_argument("--out", type=Path, default=Path("runs/paired_eval"))
ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
args = ap.parse_args()

abl = load(args.config, overrides=parse_sets(args.sets))
cfg = abl.variant(args.variant)[1]
if args.images is not None:
    cfg.eval.images_per_prompt = args.images
if args.min_per_tag is not None:
    cfg.eval.min_images_per_tag = args.min_per_tag
registry = abl.registry()
gains: dict[str, list[tuple[float, float]]] = {}
for adapter in [None, *args.adapters]:
    name = "base" if adapter is None else "_".join(Path(adapter).parts[-2:])
    parts = assemble(cfg, registry)
    if adapter is not None:
        load_adapter(parts.model, cfg, Path(adapter))
    for seed in args.seeds:
        d = args.out / name / f"seed_{seed}"
        summary_file = d / "eval" / "summary.json"
        if adapter is None and summary_file.is_file():
            summary = json.loads(summary_file.read_text())
        else:
            summary = evaluate(parts, d / "eval", seed=seed)
        row = {"model": name, "seed": seed, **{k: round(v, 4) for k, v in summary.items()}}
        if adapter is not None:
            g = paired_gain(per_image(args.out / "base" / f"seed_{seed}"), per_image(d))["overall"]
            gains.setdefault(name, []).append(g)
            row["gain"] = [round(x, 4) for x in g]
        print(json.dumps(row), flush=True)
for name, g in gains.items():
    mean, se = pool(g)
    print(
        json.dumps({"model": name, "seeds": args.seeds, "pooled_gain": round(mean, 4), "se": round(se, 4)}), flush=True
    )
