"""Helpers importable by tests and by the 2-process worker (a user-registry reward)."""

from pathlib import Path

import torch

WORDS = ["a", "photo", "of", "red", "blue", "circle", "square", "and", "two", "circles"]


def save_tiny_sd3(d: Path) -> Path:
    """The tests' tiny random StableDiffusion3Pipeline (like diffusers' dummy components), saved to folder ``d``."""
    from dgx.sampler.tiny import tiny_sd3_pipeline

    tiny_sd3_pipeline(
        WORDS, sample_size=8, vae_channels=(16, 16), layers=1, heads=2, head_dim=8, text_dim=16, shift=3.0
    ).save_pretrained(d)
    return d


class Brightness:
    """Mean red-minus-blue intensity: cheap, smooth and varies across random samples."""

    name = "brightness"

    def __init__(self, **_):
        pass

    def __call__(self, images, prompts, metadata=None):
        return (images[:, 0] - images[:, 2]).flatten(1).mean(1) * 10


def brightness_eval(model, protocol):
    """A benchmark for tests: mean brightness of ODE samples of five prompts, two images each."""
    from dataclasses import replace

    from dgx.eval.benchmarks import reward_benchmark

    prompts = [
        {"prompt": p} for p in ("a red circle", "a blue square", "two green triangles", "a photo of a diamond", "a cat")
    ]
    return reward_benchmark(
        model, {"brightness": Brightness()}, prompts, replace(protocol, images_per_prompt=2, batch=3)
    )


OBJECTIVE_KEYS = ("clip_range", "kl_beta", "kl", "guidance_grad", "adv_std", "adv_ddof", "adv_clip_max")


def write_registry(folder: Path) -> Path:
    """``folder/reg.yaml``: the tests' brightness reward and evaluation as user registry entries."""
    (folder / "reg.yaml").write_text(
        "evaluations:\n  brightness_eval: {impl: 'dgx_test_helpers:brightness_eval', description: test}\n"
        "rewards:\n  brightness: {impl: 'dgx_test_helpers:Brightness', description: test}\n"
    )
    return folder / "reg.yaml"


def dense_grpo_run(tmp_path: Path, model: dict, guidance: float) -> Path:
    """Two DenseGRPO iterations (3 SDE steps, brightness reward, LoRA rank 2) with `dgx run` on the model node
    ``model``, on the CPU; returns the run folder, its metrics checked: iterations 0 and 1, each with the dense gain of
    every step."""
    import json

    import yaml
    from click.testing import CliRunner
    from dgx.grpo.cli import main

    write_registry(tmp_path)
    base = {
        "model": model,
        "sampler": {"steps": 3, "guidance": guidance},
        "reward": {"name": "brightness"},
        "credit": {"name": "dense_gain", "ode_steps": "t"},
        "train": {
            "iterations": 2,
            "prompts_per_iter": 2,
            "group_size": 2,
            "lr": 0.05,
            "lora_rank": 2,
            "lora_alpha": 4,
            "micro_batch": 8,
            "save_every": 1,
        },
        "eval": {"name": "brightness_eval", "steps": 2, "images_per_prompt": 1, "max_prompts": 2},
        "device": "cpu",
    }
    abl = tmp_path / "abl.yaml"
    abl.write_text(yaml.safe_dump({"registry": "reg.yaml", "base": base, "variants": {"dense_grpo": {}}, "seeds": [0]}))
    res = CliRunner().invoke(main, ["run", str(abl), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    run = tmp_path / "out" / "dense_grpo" / "seed_0"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1] and all(len(r["dense_mean"]) == 3 for r in rows)
    return run


def tiny_config(tmp_path, pipe_dir, **train):
    """A RunConfig on the tiny random pipeline with the brightness reward (user registry); ``train`` keys of the
    objective (``kl_beta``, ``clip_range``, ...) go to its node."""
    from dgx.grpo.config import load

    write_registry(tmp_path)
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
    objective = {"name": "flow_grpo", "clip_range": 0.2, "kl_beta": 0.1}
    objective.update({k: t.pop(k) for k in OBJECTIVE_KEYS if k in t})
    body = {
        "registry": "reg.yaml",
        "model": {"name": "shapes", "path": str(pipe_dir)},
        "sampler": {"steps": 4, "guidance": 2.0},
        "reward": {"name": "brightness"},
        "credit": {"name": "dense_gain", "ode_steps": "t"},
        "objective": objective,
        "train": t,
        "device": "cpu",
    }
    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(body))
    return load(tmp_path / "cfg.yaml").variants["default"]


def tiny_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    return CLIPModel(
        CLIPConfig(
            text_config={
                "vocab_size": 200,
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "max_position_embeddings": 16,
                "bos_token_id": 0,
                "eos_token_id": 1,
            },
            vision_config={
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 16,
                "patch_size": 8,
            },
            projection_dim=8,
        )
    ).eval()


class Recorder(Brightness):
    """Brightness that records the keyword arguments of every instance built (which device a run gives its reward)."""

    name = "recorder"
    built: list[dict] = []

    def __init__(self, **kwargs):
        Recorder.built.append(kwargs)


class NanForBlue(Brightness):
    """Brightness, except NaN for prompts that mention blue (a broken reward)."""

    name = "nan_for_blue"

    def __call__(self, images, prompts, metadata=None):
        r = super().__call__(images, prompts, metadata)
        return torch.where(torch.tensor(["blue" in p for p in prompts]), float("nan"), r)


def accelerate_launch(mode: list[str], processes: int, port: int, *args: str) -> list[str]:
    """``python -m accelerate.commands.launch MODE --num_processes N ... ARGS`` on one machine, no mixed precision
    or dynamo (``mode``: ``["--multi_gpu"]``, which runs gloo on CPUs, ``["--cpu"]`` or ``["--config_file", F]``)."""
    import sys

    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *mode,
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *args,
    ]
