"""Where FSDP2 training departs from one unsharded process, tensor by tensor (commit 2ce5977), from the repository root:
    python research/experiments/fsdp/offload_diff.py OUT_JSON
Runs tiny_run.py (tiny SD3 pipeline, 1 iteration, resume, 1 more; then 2 uninterrupted) under
`accelerate launch --config_file configs/accelerate/fsdp2.yaml`: shards on the device, offloaded to the CPU
(DGX_EXPERIMENTAL_FSDP_OFFLOAD=1), and offloaded without pinned memory (FSDP_SHIM_UNPINNED=1); then the same config
in this process without FSDP, once from the start and once resumed from the offloaded run's first checkpoint
("one from offload": if it ends where the offloaded run ends, the departure is the run's sensitivity to
rounding; if not, offloading computes the second iteration differently). For the checkpoints after iterations 0 and
1 it prints the largest absolute difference of every adapter, EMA and AdamW-moment tensor against the unsharded
run, and of each resumed run against its uninterrupted one. On a GPU each launch is 1 process; on CPUs 2
(tiny_run.py takes the gloo group for an accelerator one). Commit 2ce5977 ran the first version (without the last two runs) on an H100: offload_diff.json.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

root = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).parent))
from dgx.grpo.assembly import assemble  # noqa: E402
from dgx.grpo.registry import Registry  # noqa: E402
from dgx.grpo.trainer import train  # noqa: E402
from tiny_run import save_tiny_sd3, tiny_config  # noqa: E402


def tensors(ckpt: Path) -> dict[str, torch.Tensor]:
    out = {f"adapter/{k}": v for k, v in load_file(ckpt / "adapter.safetensors").items()}
    out |= {f"ema/{k}": v for k, v in load_file(ckpt / "ema.safetensors").items()}
    for i, s in torch.load(ckpt / "optimizer.pt", weights_only=False)["state"].items():
        out |= {f"{m}/{i}": s[m] for m in ("exp_avg", "exp_avg_sq")}
    return out


def diffs(a: Path, b: Path) -> dict[str, float]:
    ta, tb = tensors(a), tensors(b)
    return {k: (ta[k].float().cpu() - tb[k].float().cpu()).abs().max().item() for k in tb}


gpu = torch.cuda.is_available()
tmp = Path(tempfile.mkdtemp())
pipe = tmp / "pipe"
save_tiny_sd3(pipe)
env = {**os.environ, "OMP_NUM_THREADS": "1", **({} if gpu else {"ACCELERATE_TORCH_DEVICE": "cpu"})}
modes = {
    "on_device": {},
    "cpu_offload": {"DGX_EXPERIMENTAL_FSDP_OFFLOAD": "1"},
    "cpu_offload_unpinned": {"DGX_EXPERIMENTAL_FSDP_OFFLOAD": "1", "FSDP_SHIM_UNPINNED": "1"},
}
for mode, extra in modes.items():
    (tmp / mode).mkdir()
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(root / "configs/accelerate/fsdp2.yaml"),
        "--num_processes",
        "1" if gpu else "2",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29520",
        "--fsdp_offload_params",
        str(mode != "on_device").lower(),
        str(Path(__file__).parent / "tiny_run.py"),
        str(tmp / mode),
        str(pipe),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**env, **extra})
    print(mode, "rc", res.returncode, res.stderr[-2000:] if res.returncode else "")
(tmp / "one").mkdir()
cfg = tiny_config(tmp / "one", pipe, iterations=2, ema=0.5, gradient_checkpointing=True)
cfg.device = "auto" if gpu else "cpu"
registry = Registry()
train(assemble(cfg, registry), tmp / "one" / "run")
# one unsharded process resumed from the offloaded run's checkpoint after iteration 0
shutil.copytree(tmp / "cpu_offload" / "run", tmp / "one_from_offload")
shutil.rmtree(tmp / "one_from_offload" / "checkpoints" / "iter_00001")
(tmp / "one_from_offload" / "checkpoints" / "latest").write_text("iter_00000")
train(assemble(cfg, registry), tmp / "one_from_offload", resume=True)

report = {"gpu": torch.cuda.get_device_name() if gpu else None}
for it in ("iter_00000", "iter_00001"):
    one = tmp / "one" / "run" / "checkpoints" / it
    for mode in modes:
        report[f"{mode} vs one, {it}"] = diffs(tmp / mode / "run" / "checkpoints" / it, one)
        report[f"{mode} resumed vs uninterrupted, {it}"] = diffs(
            tmp / mode / "run" / "checkpoints" / it, tmp / mode / "whole" / "checkpoints" / it
        )
report["one from offload vs cpu_offload, iter_00001"] = diffs(
    tmp / "one_from_offload" / "checkpoints" / "iter_00001", tmp / "cpu_offload" / "run" / "checkpoints" / "iter_00001"
)
for name, d in report.items():
    if isinstance(d, dict):
        worst = max(d, key=d.get)
        print(
            f"{name}: largest {d[worst]:.3g} ({worst}); adapter {max(v for k, v in d.items() if k.startswith('adapter')):.3g}, "
            f"ema {max(v for k, v in d.items() if k.startswith('ema')):.3g}, "
            f"exp_avg {max(v for k, v in d.items() if k.startswith('exp_avg/')):.3g}, "
            f"exp_avg_sq {max(v for k, v in d.items() if k.startswith('exp_avg_sq')):.3g}"
        )
Path(sys.argv[1]).write_text(json.dumps(report, indent=1))
