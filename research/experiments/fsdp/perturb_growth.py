"""How far a float-rounding-sized change of the adapter moves the next iteration of the FSDP test's tiny run (commit 2ce5977):
    python research/experiments/fsdp/perturb_growth.py [SCALE]
Trains tiny_run.py's config (tiny SD3, 2 iterations, lr 1e-2, EMA) for 1 iteration on the CPU,
copies the run, adds Gaussian noise of std SCALE (default 1e-6) to the copy's checkpointed adapter, resumes both for
iteration 1 and prints the largest difference per tensor kind, with the PPO clip fraction of each run's iteration 1.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

root = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).parent))
from dgx.grpo.assembly import assemble  # noqa: E402
from dgx.grpo.registry import Registry  # noqa: E402
from dgx.grpo.trainer import train  # noqa: E402
from tiny_run import save_tiny_sd3, tiny_config  # noqa: E402

scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1e-6
tmp = Path(tempfile.mkdtemp())
save_tiny_sd3(tmp / "pipe")
cfg = tiny_config(tmp, tmp / "pipe", iterations=2, ema=0.5, gradient_checkpointing=True)
reg = Registry()
train(assemble(cfg, reg), tmp / "a", stop_after=1)
shutil.copytree(tmp / "a", tmp / "b")
ad = tmp / "b" / "checkpoints" / "iter_00000" / "adapter.safetensors"
g = torch.Generator().manual_seed(0)
save_file({k: v + scale * torch.randn(v.shape, generator=g) for k, v in load_file(ad).items()}, ad)
for run in ("a", "b"):
    train(assemble(cfg, reg), tmp / run, resume=True)
ca, cb = (load_file(tmp / r / "checkpoints" / "iter_00001" / "adapter.safetensors") for r in ("a", "b"))
worst = max((ca[k] - cb[k]).abs().max().item() for k in ca)
clip = [json.loads((tmp / r / "metrics.jsonl").read_text().splitlines()[1])["clip_frac"] for r in ("a", "b")]
print(
    json.dumps({"perturbation_std": scale, "adapter_max_diff_after_iteration_1": worst, "clip_frac_iteration_1": clip})
)
