"""Full fine-tuning under FSDP2 builds the transformer sharded from the start: each process reads only its rows of
the weights (dgx.grpo.shards), and checkpoints are written in per-process pieces that read back whole or row by row
(dgx.grpo.checkpoint)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dgx.grpo.checkpoint import read_whole, stored
from dgx_test_helpers import accelerate_launch, write_registry
from safetensors.torch import save_file


def test_pieces_read_back_whole_and_by_rows(tmp_path):
    """Pieces as 3 processes write them (7 rows in chunks of 3, 3, 1; a tensor held whole in the first) read back as
    the whole tensors, and any rows come from whichever pieces hold them."""
    w, b = torch.arange(7 * 2.0).view(7, 2), torch.tensor([5.0, 6.0])
    for rank, (lo, hi) in enumerate([(0, 3), (3, 6), (6, 7)]):
        tensors = {"w": w[lo:hi].clone(), **({"b": b} if rank == 0 else {})}
        meta = {"rows": json.dumps({"w": [lo, 7]})}
        save_file(tensors, tmp_path / f"adapter-{rank + 1:05d}-of-00003.safetensors", metadata=meta)
    got = read_whole(tmp_path, "adapter")
    assert torch.equal(got["w"], w) and torch.equal(got["b"], b)
    with stored(tmp_path, "adapter") as read:
        assert read.names == ["b", "w"]
        for part in (slice(0, 3), slice(2, 5), slice(5, 7), slice(7, 7), slice(1, 2)):
            assert torch.equal(read("w", part), w[part]), part
        assert torch.equal(read("b", None), b)
    assert read_whole(tmp_path, "ema") is None


def standin_pipeline(tiny_pipe_dir: Path, folder: Path) -> float:
    """The tiny pipeline with a transformer of SD3.5-Medium's width (24 heads of 64) and 4 blocks: 1.25 GB in float32
    (zeros: the values do not matter here); returns its size in MiB."""
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    shutil.copytree(tiny_pipe_dir, folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    config.update(num_layers=4, num_attention_heads=24, attention_head_dim=64, caption_projection_dim=1536)
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    with init_empty_weights():
        shapes = SD3Transformer2DModel.from_config(config).state_dict()
    state = {k: torch.zeros(v.shape) for k, v in shapes.items()}
    save_file(state, folder / "transformer" / "diffusion_pytorch_model.safetensors")
    return sum(v.numel() * 4 for v in state.values()) / 2**20


@pytest.mark.slow
def test_each_process_holds_about_half_of_a_sharded_transformer(tmp_path, tiny_pipe_dir):
    """The peak resident memory a process gains while building a full fine-tune's generator: under FSDP2 on 2
    processes about half of what one process loading the whole model gains (the 1 GB transformer dominates)."""
    pipe = tmp_path / "pipe"
    size = standin_pipeline(tiny_pipe_dir, pipe)
    assert size > 1000
    write_registry(tmp_path)
    worker = str(Path(__file__).parent / "shard_memory_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_TORCH_DEVICE": "cpu"}
    shipped = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp2.yaml"
    cmd = accelerate_launch(
        ["--config_file", str(shipped), "--mixed_precision", "no"],
        2,
        29547,
        *(worker, str(tmp_path), str(pipe), str(tmp_path / "sharded.json")),
    )
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run(
        [sys.executable, worker, str(tmp_path), str(pipe), str(tmp_path / "whole.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    sharded = [json.loads((tmp_path / f"sharded-{i}.json").read_text()) for i in (0, 1)]
    whole = json.loads((tmp_path / "whole-0.json").read_text())
    assert all(s["sharded"] for s in sharded) and not whole["sharded"]
    assert all(abs(s["held_mib"] - size / 2) < 0.02 * size for s in sharded)  # each holds its half of the weights
    assert abs(whole["held_mib"] - size) < 0.02 * size
    ratios = [s["rise_mib"] / whole["rise_mib"] for s in sharded]
    print("peak rise per process, MiB:", [round(s["rise_mib"]) for s in sharded], "whole:", round(whole["rise_mib"]))
    assert all(0.35 < r < 0.65 for r in ratios), ratios
