"""What a shapes-model checkpoint can draw: its VAE's ceiling per tag, and what it draws for one shape.

1. VAE ceiling: for N rendered ground-truth scenes per tag (shape sides and gaps as the checkpoint
   was trained on), the share the strict GenEval rules accept as drawn and after a round trip
   through the VAE (encode, posterior mean, decode). No model on this VAE can score above it.
2. Single objects: N ODE samples of "a photo of a <shape>" per shape and what the detector finds.

    python research/scripts/diagnose_shapes_model.py packages/rewards/src/dgx/rewards/shapes/weights
    python research/scripts/diagnose_shapes_model.py runs/shapes_v2/step_06000 --grid runs/shapes_v2/single_object.png

Prints one JSON line per tag, then one per shape.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from dgx.eval.benchmarks import generate
from dgx.rewards.base import to_uint8
from dgx.rewards.geneval import evaluate
from dgx.rewards.shapes import prompts as P
from dgx.rewards.shapes import render as R
from dgx.rewards.shapes.detector import ShapesDetector
from dgx.sampler import SD3Model

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("path", type=Path, help="a pipeline folder written by scripts/train_shapes_model.py")
ap.add_argument("-n", type=int, default=64, help="scenes per tag and samples per shape")
ap.add_argument("--guidance", type=float, default=5.0)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--grid", type=Path, help="also save 12 samples per shape as a PNG (rows: shapes)")
ap.add_argument(
    "--sizes",
    type=int,
    nargs=2,
    metavar=("MIN", "MAX"),
    help="rendered shape sides (default: the checkpoint's shapes_model.json, else the renderer's)",
)
ap.add_argument("--gap", type=int, help="px between rendered shapes (default as --sizes)")
args = ap.parse_args()

info = json.loads((args.path / "shapes_model.json").read_text())
layout = info.get("render", {"sizes": [R.MIN_SIZE, R.MAX_SIZE], "gap": R.GAP})  # older checkpoints: the defaults
layout = {"sizes": args.sizes or layout["sizes"], "gap": layout["gap"] if args.gap is None else args.gap}
model = SD3Model.from_pretrained(args.path, max_sequence_length=0)
detector = ShapesDetector()

rng = np.random.default_rng(args.seed)
for tag in P.TAGS:
    metas = [m for m in P.all_prompts() if m["tag"] == tag]
    metas = [metas[i] for i in rng.integers(len(metas), size=args.n)]
    drawn = np.stack([R.render_prompt(m, rng, tuple(layout["sizes"]), layout["gap"])[0] for m in metas])
    x = torch.from_numpy(drawn).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        vae = model.pipe.vae
        rec = to_uint8((vae.decode(vae.encode(x).latent_dist.mean).sample + 1) / 2)
    ok = [np.mean([evaluate(im, detector(im), m).correct for im, m in zip(ims, metas)]) for ims in (drawn, rec)]
    print(
        json.dumps({"tag": tag, "layout": layout, "rendered": round(ok[0], 3), "after_vae": round(ok[1], 3)}),
        flush=True,
    )

rows = []
for shape in R.SHAPES:
    images = generate(model, [f"a photo of a {shape}"] * args.n, args.steps, args.guidance, args.seed)
    found = Counter(" + ".join(sorted(d.cls for d in detector(im))) or "nothing" for im in to_uint8(images))
    print(
        json.dumps({"prompt": f"a photo of a {shape}", "n": args.n, "detected": dict(found.most_common())}), flush=True
    )
    rows.append(torch.cat(list(images[:12]), dim=2))
if args.grid:
    from PIL import Image

    grid = to_uint8(torch.cat(rows, dim=1)[None])[0]
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(args.grid)
