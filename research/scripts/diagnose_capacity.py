"""Can the LoRA adapter represent a better policy at all? Reward-filtered fine-tuning on the model's winners.

GRPO has not raised the shapes-world GenEval reward at CPU scale. Either the adapter cannot express
a model that scores better, or the policy-gradient estimate from a few thousand samples is too
noisy to find one. This script gives the same adapter (the config's rank, alpha, targets and lr) a
low-noise signal instead: it draws N ODE samples (eval steps and guidance) of the training prompts from
the base model, keeps those the reward scores 1, and fine-tunes the adapter on them with the
rectified-flow loss (x_t = (1 - t) x_0 + t eps, target v = eps - x_0, logit-normal t; the
"RAFT" / rejection-sampling recipe). At each --eval-at step it prints the paired ODE reward on
test prompts, adapter minus base model on the same noise (as ``research/scripts/sweep.py --paired``).
``--no-filter`` fine-tunes on all the samples instead: the control for what the filtering adds.
``--guidance 1`` samples, fine-tunes and tests without classifier-free guidance, where the model's
velocity is the flow of its own samples (with CFG it is not, and fitting them moves the model).

    python research/scripts/diagnose_capacity.py research/experiments/single_prompt/square.yaml --samples 512 --steps 400
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from dgx.grpo.adapter import add_lora
from dgx.grpo.build import build_model, build_reward, load_prompts
from dgx.grpo.config import load
from dgx.grpo.prompts import choose_prompts
from dgx.grpo.registry import Registry
from dgx.grpo.runner import paired_reward_gain
from dgx.sampler import ode_step, rollout, sample_generator
from tqdm.auto import tqdm

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("config", type=Path)
ap.add_argument("--variant", default=None)
ap.add_argument("--samples", type=int, default=512, help="base-model ODE samples to filter")
ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps")
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--lr", type=float, default=None, help="default: the config's train.lr")
ap.add_argument("--eval-at", type=int, nargs="+", default=[100, 200, 400])
ap.add_argument("--paired", type=int, default=128, help="ODE test samples for the paired gain")
ap.add_argument("--seed", type=int, default=777)
ap.add_argument(
    "--guidance",
    type=float,
    default=None,
    help="CFG scale for sampling, fine-tuning and the paired test (default: the config's)",
)
ap.add_argument("--no-filter", action="store_true", help="control: fine-tune on all samples, winners or not")
ap.add_argument("--out", type=Path, default=None, help="append one JSON line per evaluation here")
args = ap.parse_args()

cfg = load(args.config).variant(args.variant)[1]
if args.guidance is not None:
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"guidance": args.guidance})})
registry = Registry()
model = build_model(cfg, registry)
reward = build_reward(cfg.reward, registry)
prompts = load_prompts(cfg, registry, "train")
metas = [
    prompts[i]
    for i in choose_prompts(prompts, args.samples, np.random.default_rng(args.seed), cfg.train.prompt_sampling)
]

# 1. the base model's winners (strict: reward exactly 1)
t0 = time.perf_counter()
winners, texts_w = [], []
with torch.no_grad():
    for s in tqdm(range(0, len(metas), 64), desc="sample base"):
        m = metas[s : s + 64]
        texts = [x["prompt"] for x in m]
        gens = [sample_generator(args.seed, s + i) for i in range(len(m))]
        traj = rollout(model, model.encode(texts), texts, cfg.eval.steps, ode_step, None, gens, cfg.eval_guidance)
        x0 = traj.latents[:, -1]
        keep = reward(model.decode(x0), texts, m).float() >= 1.0
        keep |= args.no_filter
        winners.append(x0[keep])
        texts_w += [t for t, k in zip(texts, keep.tolist()) if k]
x0_w = torch.cat(winners)
print(
    f"{len(x0_w)} winners of {len(metas)} base samples ({len(x0_w) / len(metas):.3f}); {time.perf_counter() - t0:.0f} s"
)
if len(x0_w) < 2:
    raise SystemExit("fewer than 2 winners: nothing to fine-tune on")
cond_w = model.encode(texts_w)

# 2. rectified-flow fine-tuning of a fresh adapter on them
torch.manual_seed(args.seed)
params = add_lora(model, cfg)
lr = args.lr or cfg.train.lr
opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay)
g = torch.Generator().manual_seed(args.seed)
losses = []
for step in tqdm(range(1, args.steps + 1), desc="fine-tune"):
    idx = torch.randint(len(x0_w), (args.batch,), generator=g)
    x0 = x0_w[idx]
    eps = torch.randn(x0.shape, generator=g)
    t = torch.sigmoid(torch.randn(args.batch, generator=g))
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    v = model.velocity(x_t, t, cond_w.index(idx), cfg.eval_guidance)  # the guided velocity that draws the samples
    loss = torch.nn.functional.mse_loss(v, eps - x0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
    if step in args.eval_at:
        row = {
            "config": str(args.config),
            "filter": not args.no_filter,
            "guidance": cfg.eval_guidance,
            "winners": len(x0_w),
            "samples": len(metas),
            "step": step,
            "lr": lr,
            "loss": round(float(np.mean(losses[-50:])), 4),
            "paired": paired_reward_gain(model, cfg, reward, load_prompts(cfg, registry, "test"), args.paired),
            "seconds": round(time.perf_counter() - t0),
        }
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
