"""The FSDP investigation's tiny run, built from the product alone (no test code):

    tiny_config(folder, pipe)      a RunConfig: tiny random SD3 pipeline, the built-in `ink` reward, dense gain
    save_tiny_sd3(folder)          the tiny random StableDiffusion3Pipeline (dgx.sampler.tiny)
    accelerate launch ... tiny_run.py FOLDER PIPE    train 1 iteration, resume for a 2nd (FOLDER/run), and 2
                                                     uninterrupted (FOLDER/whole)

Until 2026-12-02 these scripts ran the tests' worker with a test-only brightness reward; the records in
results.jsonl and offload_diff.json were measured that way, so a rerun gives other numbers with the same meaning.
On CPUs accelerate selects FSDP only for accelerator process groups; this worker takes the gloo group for one, as the
tests do. With FSDP_SHIM_UNPINNED=1 (or without a GPU) FSDP2's CPU offload does not pin memory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import yaml

WORDS = ["a", "photo", "of", "red", "blue", "green", "circle", "square", "triangle", "two", "cat", "diamond"]


def save_tiny_sd3(folder: Path) -> Path:
    from dgx.sampler.tiny import tiny_sd3_pipeline

    tiny_sd3_pipeline(
        WORDS, sample_size=8, vae_channels=(16, 16), layers=1, heads=2, head_dim=8, text_dim=16, shift=3.0
    ).save_pretrained(folder)
    return folder


def tiny_config(folder: Path, pipe: Path, **train):
    from dgx.grpo.config import load

    t = {
        "iterations": 3,
        "prompts_per_iter": 2,
        "group_size": 4,
        "lr": 1e-2,
        "micro_batch": 10,
        "save_every": 1,
        "timestep_fraction": 0.5,
        "updates_per_epoch": 2,
        "lora_rank": 2,
        "lora_alpha": 4,
        **train,
    }
    body = {
        "model": {"name": "shapes", "path": str(pipe)},
        "sampler": {"steps": 4, "guidance": 2.0},
        "reward": {"name": "ink"},
        "credit": {"name": "dense_gain", "ode_steps": "t"},
        "objective": {"name": "flow_grpo", "clip_range": 0.2, "kl_beta": 0.1},
        "train": t,
        "device": "cpu",
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "cfg.yaml").write_text(yaml.safe_dump(body))
    return load(Path(folder) / "cfg.yaml").variants["default"]


def _cpu_fsdp() -> None:
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType
    from torch.distributed.fsdp import CPUOffloadPolicy

    if not torch.cuda.is_available():
        PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: (
            "gloo",
            DistributedType.MULTI_GPU,
        )
    if not torch.cuda.is_available() or os.environ.get("FSDP_SHIM_UNPINNED") == "1":
        CPUOffloadPolicy.__init__.__defaults__ = (False,)  # pin_memory


if __name__ == "__main__":
    _cpu_fsdp()
    from dgx.grpo.assembly import assemble
    from dgx.grpo.registry import Registry
    from dgx.grpo.trainer import train

    folder, pipe = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = tiny_config(folder, pipe, iterations=2, ema=0.5, gradient_checkpointing=True)
    cfg.device = "auto"
    train(assemble(cfg, Registry()), folder / "run", stop_after=1)
    train(assemble(cfg, Registry()), folder / "run", resume=True)
    train(assemble(cfg, Registry()), folder / "whole")
