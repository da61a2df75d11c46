"""Time GRPO training iterations of one config variant, per phase, and report peak memory.

    python research/scripts/time_iteration.py research/experiments/sd35m_iteration/sd35m_random.yaml
    python research/scripts/time_iteration.py CONFIG --variant dense_grpo --override '{"model": {"dtype": "float32"}}'

Trains ``--iterations`` iterations (default: the config's) into a fresh folder, then prints one JSON
line (also appended to OUT/results.jsonl) with the seconds of each phase per iteration from the run's
metrics (rollout, credit, train), the model calls, the transformer's parameter count and the peak
memory: on a GPU, CUDA ``max_memory_allocated`` from building the model to the end of the last iteration (the
largest of the trainer's per-iteration ``gpu_peak_gib``, as in ``dgx run``'s cost.md; handing an unsharded model
back after FSDP2 training is not counted), the process's peak resident set size otherwise.
A ``calibrated`` noise schedule needs ``sampler.noise.psi_path`` here (no calibration is run).
Under `accelerate launch` (DDP or FSDP2, e.g. research/experiments/fsdp/gpu_check.sh) the main process
reports, with the memory of its own device.
"""

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from dgx.grpo.assembly import assemble
from dgx.grpo.config import RunConfig, deep_merge, load
from dgx.grpo.distributed import accelerate_mode
from dgx.grpo.runner import environment
from dgx.grpo.trainer import train

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("config", type=Path)
ap.add_argument("--variant", default=None, help="default: the first")
ap.add_argument("--override", default="{}", help="JSON deep-merged into the variant")
ap.add_argument("--iterations", type=int, default=None)
ap.add_argument("--out", type=Path, default=Path("runs/time_iteration"))
args = ap.parse_args()

abl = load(args.config)
name, variant = abl.variant(args.variant)
over = deep_merge(json.loads(args.override), {"train": {"iterations": args.iterations}} if args.iterations else {})
cfg = RunConfig.model_validate(deep_merge(variant.model_dump(), over))
run = args.out / name
shutil.rmtree(run, ignore_errors=True)
cuda = torch.cuda.is_available() and cfg.device != "cpu"
t0 = time.perf_counter()
model = train(assemble(cfg, abl.registry()), run)
wall = time.perf_counter() - t0
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
peak = (
    max(r["gpu_peak_gib"] for r in rows) * 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
)
result = {
    "config": str(args.config),
    "variant": name,
    "override": over,
    "device": str(next(model.transformer.parameters()).device),
    "gpu": torch.cuda.get_device_name() if cuda else None,
    "dtype": cfg.model.dtype,
    "environment": environment(),  # library versions, command line, CUDA, threads
    "accelerate": accelerate_mode(AcceleratorState()),  # NO, MULTI_GPU (DDP) or FSDP (offloaded or not)
    "transformer_params": sum(p.numel() for p in model.transformer.parameters()),
    "trainable_params": sum(p.numel() for p in model.transformer.parameters() if p.requires_grad),
    "samples_per_iteration": cfg.train.prompts_per_iter * cfg.train.group_size,
    "steps": cfg.sampler.steps,
    "wall_s": round(wall, 1),
    "peak_memory_gib": round(peak / 2**30, 2),
    "peak_memory_kind": "cuda max_memory_allocated up to the last iteration" if cuda else "process peak RSS",
    "per_iteration": [
        {
            k: (float(f"{v:.3g}") if isinstance(v, float) else v)
            for k, v in r.items()
            if k.startswith("seconds_")
            or k in ("iteration", "model_calls", "reward_mean", "loss", "grad_norm", "gpu_peak_gib")
        }
        for r in rows
    ],
}
if AcceleratorState().is_main_process:  # under `accelerate launch`, one line per run
    print(json.dumps(result), flush=True)
    with open(args.out / "results.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")
