"""Cost measurements (ratios measured in one run):

    python research/scripts/bench_costs.py [--model PATH] [--out runs/costs.json]

1. Batched vs naive ODE_t continuation on a tiny SD3 pipeline (T = 10): model calls, wall time.
2. Shapes world: rollout of 8 images x 10 SDE steps (median of repeats).
3. Shapes world: dense scoring of 16 trajectories x 11 latents, split into model / decoder / reward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch
from dgx.rewards.credit import dense_gain
from dgx.rewards.geneval_reward import shapes_geneval
from dgx.rewards.shapes.prompts import split, vocabulary
from dgx.sampler import SD3Model, UniformNoise, continue_ode, continue_ode_naive, rollout, sample_generator, sde_step
from dgx.sampler.tiny import tiny_sd3_pipeline


def continuation(T: int = 10, B: int = 4) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tiny_sd3_pipeline(
            vocabulary(), sample_size=8, vae_channels=(16, 16), layers=1, heads=2, head_dim=8, text_dim=16
        ).save_pretrained(d)
        model = SD3Model.from_pretrained(d)
    prompts = [m["prompt"] for m in split("train")[:B]]
    traj = rollout(
        model, model.encode(prompts), prompts, T, sde_step, UniformNoise(0.7), torch.Generator().manual_seed(0), 3.0
    )
    out = {}
    for name, fn in [
        ("batched", lambda: continue_ode(model, traj, "t")),
        ("naive", lambda: continue_ode_naive(model, traj, "t")),
    ]:
        model.calls = 0
        t0 = time.perf_counter()
        res = fn()
        out[name] = {"model_calls": model.calls, "seconds": time.perf_counter() - t0}
        out[name + "_result"] = res
    err = (out.pop("batched_result") - out.pop("naive_result")).abs().max().item()
    out.update(
        T=T,
        trajectories=B,
        max_abs_diff=err,
        calls_ratio=out["naive"]["model_calls"] / out["batched"]["model_calls"],
        time_ratio=out["naive"]["seconds"] / out["batched"]["seconds"],
    )
    return out


def shapes(path: str, repeats: int = 7) -> dict:
    model = SD3Model.from_pretrained(path, max_sequence_length=0)
    metas = split("train")[:16]
    prompts = [m["prompt"] for m in metas]
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        cond = model.encode(prompts[:8])
        traj = rollout(
            model, cond, prompts[:8], 10, sde_step, UniformNoise(0.7), [sample_generator(r, i) for i in range(8)], 3.0
        )
        model.decode(traj.latents[:, -1])
        times.append(time.perf_counter() - t0)
    cond = model.encode(prompts)
    traj = rollout(
        model, cond, prompts, 10, sde_step, UniformNoise(0.7), [sample_generator(9, i) for i in range(16)], 3.0
    )
    t0 = time.perf_counter()
    credit = dense_gain(model, traj, shapes_geneval(), metas, ode_steps="t", chunk=256)
    total = time.perf_counter() - t0
    sec = credit.seconds
    return {
        "rollout_8x10_median_s": statistics.median(times),
        "rollout_8x10_all_s": times,
        "dense_16x11_total_s": total,
        "dense_16x11_seconds": sec,
        "dense_16x11_share": {k: v / total for k, v in sec.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(resources.files("dgx.rewards.shapes").joinpath("weights")))
    ap.add_argument("--out", type=Path, default=Path("runs/costs.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    res = {"continuation": continuation()}
    if Path(args.model).is_dir():
        res["shapes"] = shapes(args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
