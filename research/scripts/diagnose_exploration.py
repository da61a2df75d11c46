"""How much of the reward do the SDE's step noises decide, and how much the initial noise x_T?

GRPO's gradient comes from how a rollout's reward moves with the noise of its own SDE steps (the
actions whose log-probs are trained). The part of the reward that the initial noise x_T fixes is not
reachable that way: given x_T, it does not correlate with any action, so it only adds noise to the
advantages. This script draws N initial noises per prompt and K SDE rollouts from each, and splits
the reward variance within prompt groups into a between-x_T part and a within-x_T part (the
fraction of the variance that exploration decides), for each noise level a.

It also reports, per step k, how often the ODE continuation of x_k already gives the final
outcome (decided_k: the reward of ODE(x_k) equals the rollout's reward), i.e. how early the
outcome is set.

    python research/scripts/diagnose_exploration.py configs/shapes_geneval.yaml --prompts 8 --x0 8 --k 8 --a 0.7 1.5
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from dgx.grpo.build import build_model, build_reward, load_prompts
from dgx.grpo.config import load
from dgx.grpo.prompts import choose_prompts
from dgx.grpo.registry import Registry
from dgx.sampler import UniformNoise, rollout, sample_generator, sde_step
from dgx.sampler.continuation import continue_ode

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("config", type=Path)
ap.add_argument("--variant", default=None)
ap.add_argument("--split", default="train")
ap.add_argument("--prompts", type=int, default=8)
ap.add_argument("--x0", type=int, default=8, help="initial noises per prompt")
ap.add_argument("--k", type=int, default=8, help="SDE rollouts per initial noise")
ap.add_argument("--a", type=float, nargs="+", default=[0.7])
ap.add_argument("--seed", type=int, default=99)
args = ap.parse_args()

cfg = load(args.config).variant(args.variant)[1]
registry = Registry()
model = build_model(cfg, registry)
reward = build_reward(cfg.reward, registry)
prompts = load_prompts(cfg, registry, args.split)
metas = [prompts[i] for i in choose_prompts(prompts, args.prompts, np.random.default_rng(args.seed), "uniform")]
steps = cfg.sampler.steps
n, k = args.x0, args.k

with torch.no_grad():
    for a in args.a:
        between, within, decided = [], [], np.zeros(steps)
        for p, meta in enumerate(metas):
            texts = [meta["prompt"]] * (n * k)
            cond = model.encode(texts)
            x_t = torch.cat([model.init_latents(1, sample_generator(args.seed, p, j)) for j in range(n)])
            x_t = x_t.repeat_interleave(k, 0)
            gens = [sample_generator(args.seed, p, j, r, 1) for j in range(n) for r in range(k)]
            traj = rollout(
                model, cond, texts, steps, sde_step, UniformNoise(a), gens, cfg.sampler.guidance, latents=x_t
            )
            r = reward(model.decode(traj.latents[:, -1]), texts, [meta] * len(texts)).float().view(n, k)
            between.append(r.mean(1).var(unbiased=False).item())
            within.append(r.var(1, unbiased=False).mean().item())
            # outcome already set at step i: the ODE continuation of x_i scores what the rollout scored
            xhat = continue_ode(model, traj, "t")
            for i in range(steps):
                ri = reward(model.decode(xhat[:, i]), texts, [meta] * len(texts)).float().view(n, k)
                decided[i] += (ri == r).float().mean().item() / len(metas)
        b, w = float(np.mean(between)), float(np.mean(within))
        print(
            json.dumps(
                {
                    "a": a,
                    "prompts": len(metas),
                    "x0": n,
                    "k": k,
                    "var_between_x0": round(b, 4),
                    "var_within_x0": round(w, 4),
                    "within_fraction": round(w / max(b + w, 1e-12), 3),
                    "decided_at_step": [round(d, 3) for d in decided],
                }
            ),
            flush=True,
        )
