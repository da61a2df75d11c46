"""Full fine-tuning (`train.adapter: full`): the whole transformer trains against a frozen copy of itself as the KL
reference, resumes exactly, gives the base weights back after the run, exports in diffusers' format, and matches one
process under FSDP2 on 2 CPU processes."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from dgx.eval.benchmarks import generate
from dgx.grpo.adapter import adapter_disabled, full, remove_adapter, trained_state
from dgx.grpo.assembly import assemble
from dgx.grpo.checkpoint import adapter_state, ema_state
from dgx.grpo.registry import Registry
from dgx.grpo.trainer import train
from dgx_test_helpers import accelerate_launch, tiny_config
from safetensors.torch import load_file


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.transformer.state_dict().items()}


def test_full_finetune_trains_every_weight_resumes_exactly_and_gives_the_base_back(tmp_path, tiny_pipe_dir):
    cfg = tiny_config(
        tmp_path, tiny_pipe_dir, iterations=2, adapter="full", lr=1e-3, ema={"decay": 0.5, "every": 1, "warmup": False}
    )
    parts = assemble(cfg, Registry([tmp_path / "reg.yaml"]))
    base = weights(parts.model)
    model = train(parts, tmp_path / "whole")
    assert full(model)
    moved = {k for k, v in weights(model).items() if not torch.equal(v, base[k])}
    assert len(moved) > 0.9 * len(base)  # every block's weights train, not an adapter's
    ck = load_file(tmp_path / "whole" / "checkpoints" / "iter_00001" / "adapter.safetensors")
    assert ck.keys() == base.keys()  # the checkpoint holds the whole transformer
    assert not (tmp_path / "whole" / "checkpoints" / "iter_00001" / "adapter_config.json").exists()
    with adapter_disabled(model):  # the reference: the transformer as it was
        assert all(torch.equal(v, base[k]) for k, v in weights(model).items())
    remove_adapter(model)
    assert not full(model) and all(torch.equal(v, base[k]) for k, v in weights(model).items())
    assert not any(p.requires_grad for p in model.transformer.parameters())

    parts = assemble(cfg, Registry([tmp_path / "reg.yaml"]))  # stopped after 1 iteration, resumed
    train(parts, tmp_path / "run", stop_after=1)
    remove_adapter(parts.model)
    train(assemble(cfg, Registry([tmp_path / "reg.yaml"])), tmp_path / "run", resume=True)
    for name in ("adapter.safetensors", "ema.safetensors"):
        got = load_file(tmp_path / "run" / "checkpoints" / "iter_00001" / name)
        want = load_file(tmp_path / "whole" / "checkpoints" / "iter_00001" / name)
        assert all(torch.equal(got[k], want[k]) for k in want), name


def test_a_full_finetune_exports_its_transformer_in_diffusers_format(tmp_path, tiny_pipe_dir):
    """`dgx push`'s export: transformer/ loads with the transformer class's from_pretrained into the pipeline and
    gives the run's images; the card says how."""
    from dgx.grpo.hub import export_run
    from dgx.sampler import SD3Model
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    cfg = tiny_config(tmp_path, tiny_pipe_dir, iterations=1, adapter="full", lr=1e-3)
    run = tmp_path / "run"
    model = train(assemble(cfg, Registry([tmp_path / "reg.yaml"])), run)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    files = {str(p.relative_to(tmp_path / "export")) for p in export_run(run, tmp_path / "export", "me/tiny-full")}
    assert {"transformer/config.json", "README.md", "samples.png"} <= files
    assert not any("lora" in f for f in files)
    card = (tmp_path / "export" / "README.md").read_text()
    assert 'SD3Transformer2DModel.from_pretrained("me/tiny-full", subfolder="transformer")' in card
    assert "| trained | the whole transformer |" in card and "full-finetune" in card
    transformer = SD3Transformer2DModel.from_pretrained(tmp_path / "export" / "transformer")
    pipe = StableDiffusion3Pipeline.from_pretrained(
        tiny_pipe_dir, transformer=transformer, text_encoder_3=None, tokenizer_3=None
    )
    prompts = ["a red circle", "two blue squares"]
    got = generate(SD3Model(pipe), prompts, 4, 2.0, seed=3)
    torch.testing.assert_close(got, generate(model, prompts, 4, 2.0, seed=3), atol=1e-5, rtol=1e-4)
    # `dgx eval --adapter` with a config that says nothing of full fine-tuning reads the checkpoint as what it is
    from dgx.grpo.adapter import load_adapter

    fresh = SD3Model.from_pretrained(tiny_pipe_dir)
    (tmp_path / "plain").mkdir()
    load_adapter(fresh, tiny_config(tmp_path / "plain", tiny_pipe_dir), run)
    assert full(fresh)
    torch.testing.assert_close(generate(fresh, prompts, 4, 2.0, seed=3), got, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_fsdp2_full_finetune_matches_one_process(tmp_path, tiny_pipe_dir):
    """2 CPU processes under `configs/accelerate/fsdp2.yaml` build the transformer sharded, train it, write sharded
    checkpoints, resume from one exactly, and end where one unsharded process with the same global batch ends."""
    d = tmp_path / "fsdp"
    d.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_TORCH_DEVICE": "cpu"}
    shipped = Path(__file__).parents[1] / "configs" / "accelerate" / "fsdp2.yaml"
    worker = str(Path(__file__).parent / "fsdp_worker.py")
    cmd = accelerate_launch(
        ["--config_file", str(shipped), "--mixed_precision", "no"],  # float32, as the one process
        2,
        29541,
        *(worker, str(d), str(tiny_pipe_dir), str(d / "out.pt"), "full"),
    )
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((d / "out.json").read_text())
    assert info["num_processes"] == 2 and info["updates"] == ["DTensor"] * 4

    one = tmp_path / "one"
    one.mkdir()
    cfg = tiny_config(
        one,
        tiny_pipe_dir,
        iterations=2,
        ema={"decay": 0.5, "every": 1, "warmup": False},
        gradient_checkpointing=True,
        adapter="full",
    )
    model = train(assemble(cfg, Registry([one / "reg.yaml"])), one / "run")
    rows = [json.loads(ln) for ln in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    ones = [json.loads(ln) for ln in (one / "run" / "metrics.jsonl").read_text().splitlines()]
    for r, o in zip(rows, ones, strict=True):  # the global gradient norm, averaged over the optimizer steps
        assert abs(r["grad_norm"] - o["grad_norm"]) < 1e-5 * o["grad_norm"]
    assert info["returned"] == "DTensor"  # built sharded, handed back sharded
    returned, expected = torch.load(d / "out.pt"), trained_state(model)
    assert returned.keys() == expected.keys()
    close(returned, expected)  # the EMA weights, after 2 iterations
    sharded, whole = d / "run" / "checkpoints" / "iter_00001", one / "run" / "checkpoints" / "iter_00001"
    assert sorted(p.name for p in sharded.glob("*-of-*")) == [
        f"{stem}-{i:05d}-of-00002{ext}"
        for stem, ext in (("adapter", ".safetensors"), ("ema", ".safetensors"), ("optimizer", ".pt"))
        for i in (1, 2)
    ]
    close(adapter_state(sharded), adapter_state(whole))
    close(ema_state(sharded), ema_state(whole))
    # `dgx push`'s export reads the pieces: the exported transformer is the run's EMA weights
    from dgx.grpo.hub import export_run

    (d / "run" / "config.yaml").write_text(
        yaml.safe_dump(tiny_config(d, tiny_pipe_dir, adapter="full").model_dump(mode="json"))
    )
    export_run(d / "run", tmp_path / "export", "me/tiny-full", n_samples=2)
    exported, ema = (
        load_file(tmp_path / "export" / "transformer" / "diffusion_pytorch_model.safetensors"),
        ema_state(sharded),
    )
    assert ema.keys() <= exported.keys() and all(torch.equal(exported[k], ema[k]) for k in ema)
    # the resumed sharded run equals the uninterrupted one byte for byte, every process's pieces
    for piece in sharded.glob("*-of-*.safetensors"):
        got, want = load_file(piece), load_file(d / "whole" / "checkpoints" / "iter_00001" / piece.name)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), piece.name


def close(got: dict, want: dict) -> None:
    """Equal within float rounding as AdamW passes it on: it divides each gradient by its own running magnitude, so a
    weight whose gradient is a near-cancelling sum (advantages sum to zero within a group) moves by a step of lr
    (1e-2 here) whatever rounding its gradient carries. Every weight within 1e-5 but at most 0.2% of them, and those
    within 2e-3 (measured: 10 of 14,032 above 1e-5, at most 2.9e-4)."""
    diffs = torch.cat([(got[k].float() - want[k].float()).abs().flatten() for k in want])
    assert (diffs > 1e-5).float().mean() < 2e-3 and diffs.max() < 2e-3, (diffs > 1e-5).sum()
