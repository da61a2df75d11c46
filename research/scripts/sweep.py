"""Train override sets of one variant of a config, score each on its benchmark, and compare training
rewards with a reference run on the same prompts and noise (every draw is keyed by seed, iteration
and sample, so runs with the same sampling settings see identical prompts and initial noise).

    python research/scripts/sweep.py configs/shapes_geneval.yaml --variant flow_grpo --out runs/sweep \\
        'frozen={"train": {"lr": 1e-12}}' 'lr3e-3={"train": {"lr": 3e-3}}' --reference frozen

Each NAME=JSON deep-merges JSON into the variant; results go to OUT/NAME and one JSON line per run
to OUT/results.jsonl (test scores, seconds, and the mean training-reward gain over the reference in
blocks of 10 iterations). Use --no-eval to train only. --paired N also scores N ODE samples of
test prompts with the training reward (or the one --paired-reward sets), for the trained adapter
and for the base model (adapter disabled) on the same noise, and reports the mean gain and its
standard error.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from dgx.grpo.assembly import assemble
from dgx.grpo.build import build_reward, load_prompts
from dgx.grpo.config import RewardConfig, deep_merge, load, validate
from dgx.grpo.runner import evaluate, paired_reward_gain
from dgx.grpo.trainer import train


def rewards(run: Path) -> np.ndarray:
    return np.array([json.loads(line)["reward_mean"] for line in (run / "metrics.jsonl").read_text().splitlines()])


ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("config", type=Path)
ap.add_argument("specs", nargs="+", help="NAME=JSON overrides")
ap.add_argument("--variant", default=None)
ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
ap.add_argument("--reference", default=None, help="NAME of a run (in --out) to pair training rewards with")
ap.add_argument("--no-eval", action="store_true")
ap.add_argument(
    "--paired", type=int, default=0, metavar="N", help="paired trained-vs-base reward on N ODE test samples"
)
ap.add_argument(
    "--paired-reward",
    default="{}",
    metavar="JSON",
    help="override of the reward section for --paired (e.g. a soft-reward run scored by partial credit)",
)
args = ap.parse_args()
paired_reward = json.loads(args.paired_reward)

abl = load(args.config)
base = abl.variant(args.variant)[1].model_dump(mode="json")
for spec in args.specs:
    name, _, over = spec.partition("=")
    change = json.loads(over or "{}")
    cfg = validate(deep_merge(base, change), args.config, change, name, abl.registry())  # every node checked
    run = args.out / name
    t0 = time.perf_counter()
    model = train(assemble(cfg, abl.registry()), run, resume=True)
    row = {"name": name, "override": json.loads(over or "{}"), "train_s": round(time.perf_counter() - t0, 1)}
    if not args.no_eval:
        parts = assemble(cfg, abl.registry(), model=model)
        row["test"] = {k: round(v, 4) for k, v in evaluate(parts, run / "eval").items()}
    if args.paired:
        node = RewardConfig.model_validate(deep_merge(cfg.reward.model_dump(), paired_reward))
        test = load_prompts(cfg, abl.registry(), "test")
        row["paired"] = paired_reward_gain(model, cfg, build_reward(node, abl.registry()), test, args.paired)
        row["paired_reward"] = paired_reward
    ref = args.out / (args.reference or "")
    if args.reference and (ref / "metrics.jsonl").is_file() and ref != run:
        r, f = rewards(run), rewards(ref)
        d = r[: len(f)] - f[: len(r)]
        row["train_gain_vs_reference_by_10"] = [round(float(d[i : i + 10].mean()), 4) for i in range(0, len(d), 10)]
    print(json.dumps(row), flush=True)
    with open(args.out / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
