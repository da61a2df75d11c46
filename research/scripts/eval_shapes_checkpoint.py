"""Score a shapes-model checkpoint folder with the GenEval-style test benchmark (ODE sampler).

python research/scripts/eval_shapes_checkpoint.py runs/shapes_model/step_05000 [--guidance 1 3 5] [--steps 20]
"""

import argparse
import json

from dgx.eval.benchmarks import Protocol, shapes_geneval
from dgx.sampler import SD3Model

ap = argparse.ArgumentParser()
ap.add_argument("path")
ap.add_argument("--guidance", type=float, nargs="+", default=[3.0])
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--images", type=int, default=4)
args = ap.parse_args()
model = SD3Model.from_pretrained(args.path, max_sequence_length=0)
for g in args.guidance:
    s = shapes_geneval(model, Protocol(steps=args.steps, guidance=g, images_per_prompt=args.images, seed=12345))
    print(json.dumps({"path": args.path, "guidance": g, "steps": args.steps, **{k: round(v, 3) for k, v in s.items()}}))
