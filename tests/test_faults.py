"""Faults: a run killed anywhere resumes to the same bits; damaged checkpoints, non-finite weights and rewards of the
wrong shape are caught and named."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from dgx.grpo import checkpoint
from dgx.grpo.assembly import assemble
from dgx.grpo.errors import ConfigError, TrainingError
from dgx.grpo.registry import Registry
from dgx.grpo.trainer import train
from dgx_test_helpers import tiny_config

HERE = Path(__file__).parent
ABLATION = """
registry: reg.yaml
base:
  model: {{name: shapes, path: "{pipe}"}}
  sampler: {{steps: 3, guidance: 2.0}}
  reward: {{name: brightness}}
  train: {{iterations: 3, prompts_per_iter: 2, group_size: 2, micro_batch: 8, lora_rank: 2, lora_alpha: 2, save_every: 1}}
  calibrate: {{iterations: 2, prompts: 2, group_size: 2, check_prompts: 1}}
  eval: {{name: brightness_eval, steps: 2}}
variants:
  flow_grpo: {{train: {{adapter: full}}}}
  dense_grpo: {{credit: {{name: dense_gain}}, sampler: {{noise: {{name: calibrated}}}}}}
seeds: [0]
"""
# the Flow-GRPO variant trains the whole transformer, the DenseGRPO one a LoRA: kills and stops cover both
# PHASE -> how many calls of its function one uninterrupted run makes (the kill point is drawn among them)
CALLS = {"calibration": 4, "training": 6, "checkpoint": 36, "evaluation": 3}


def dgx(args: list[str], phase: str | None = None, k: int = 0, sig: str = "SIGKILL") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "2"}
    env["DGX_FAULT_SIGNAL"] = sig
    cmd = (
        [sys.executable, str(HERE / "fault_driver.py"), phase, str(k)]
        if phase
        else [sys.executable, "-m", "dgx.grpo.cli"]
    )
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=600)


def outcome(out: Path) -> dict:
    """Everything a run decides: final adapters, psi(t), and every evaluation's summary and per-image records."""
    got = {}
    for run in ("flow_grpo", "dense_grpo"):
        last = checkpoint.latest(out / run / "seed_0" / "checkpoints")
        got[f"{run} adapter"] = (last / "adapter.safetensors").read_bytes()
    got["psi"] = json.loads((out / "dense_grpo/seed_0/calibration/psi.json").read_text())["psi"]
    for f in sorted(out.glob("*/seed_0/eval/*.json*")):
        got[str(f.relative_to(out))] = f.read_text()
    return got


@pytest.mark.slow
def test_a_run_killed_or_stopped_in_any_phase_resumes_bitwise_identical(tmp_path, tiny_pipe_dir):
    tiny_config(tmp_path, tiny_pipe_dir)  # reg.yaml
    (tmp_path / "abl.yaml").write_text(ABLATION.format(pipe=tiny_pipe_dir))
    whole = dgx(["run", str(tmp_path / "abl.yaml"), "--out", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = outcome(tmp_path / "whole")
    rng = random.Random(20261202)
    kills = {phase: rng.randint(1, n) for phase, n in CALLS.items()}
    print("kill points (phase: call):", kills)
    for phase, k in kills.items():
        out = tmp_path / phase
        killed = dgx(["run", str(tmp_path / "abl.yaml"), "--out", str(out)], phase, k)
        assert killed.returncode == -signal.SIGKILL, (phase, k, killed.returncode, killed.stderr[-2000:])
        resumed = dgx(["run", str(tmp_path / "abl.yaml"), "--out", str(out), "--resume"])
        assert resumed.returncode == 0, (phase, resumed.stderr[-2000:])
        got = outcome(out)
        assert got.keys() == expected.keys() and all(got[key] == expected[key] for key in expected), (phase, k)
    # SIGTERM and SIGINT: the run stops cleanly (a checkpoint being written is finished first), says where and how
    # to go on, and the resumed run is the uninterrupted one, bit for bit
    for phase, k, sig in (("training", 4, "SIGTERM"), ("checkpoint", 20, "SIGTERM"), ("evaluation", 2, "SIGINT")):
        out = tmp_path / f"{phase}_{sig}"
        stopped = dgx(["run", str(tmp_path / "abl.yaml"), "--out", str(out)], phase, k, sig)
        assert stopped.returncode == 128 + signal.Signals[sig], (phase, stopped.returncode, stopped.stderr[-2000:])
        assert "Traceback" not in stopped.stderr and "Aborted" not in stopped.stderr
        last = stopped.stderr.strip().splitlines()[-1]
        assert last.startswith(f"stopped by {sig} ") and "--resume` continues" in last, last
        if phase == "checkpoint":  # the signal came while a manifest was written: that checkpoint is whole
            for ckpts in out.glob("*/seed_0/checkpoints"):
                assert checkpoint.damage(checkpoint.latest(ckpts)) is None and not list(ckpts.glob(".tmp*"))
        resumed = dgx(["run", str(tmp_path / "abl.yaml"), "--out", str(out), "--resume"])
        assert resumed.returncode == 0, (phase, resumed.stderr[-2000:])
        got = outcome(out)
        assert got.keys() == expected.keys() and all(got[key] == expected[key] for key in expected), (phase, sig)


def two_checkpoints(tmp_path, tiny_pipe_dir, **train_kw):
    cfg = tiny_config(tmp_path, tiny_pipe_dir, iterations=2, **train_kw)
    reg = Registry([tmp_path / "reg.yaml"])
    train(assemble(cfg, reg), tmp_path / "run")
    return cfg, reg, tmp_path / "run" / "checkpoints"


def test_a_flipped_byte_is_detected_and_the_previous_checkpoint_resumes(tmp_path, tiny_pipe_dir):
    cfg, reg, ckpts = two_checkpoints(tmp_path, tiny_pipe_dir)
    good = (ckpts / "iter_00001" / "adapter.safetensors").read_bytes()
    damaged = ckpts / "iter_00001"
    data = bytearray((damaged / "adapter.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / "adapter.safetensors").write_bytes(bytes(data))
    assert "adapter.safetensors does not match its sha256" in checkpoint.damage(damaged)
    with pytest.warns(UserWarning, match="iter_00001: adapter.safetensors does not match .* resuming from iter_00000"):
        assert checkpoint.latest(ckpts) == ckpts / "iter_00000"
    with pytest.raises(ConfigError, match="does not match its sha256"):  # dgx eval --adapter of that checkpoint
        from dgx.grpo.adapter import load_adapter
        from dgx.sampler import SD3Model

        load_adapter(SD3Model.from_pretrained(tiny_pipe_dir), cfg, damaged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(assemble(cfg, reg), tmp_path / "run", resume=True)  # iteration 1 again, from iteration 0's checkpoint
    assert (ckpts / "iter_00001" / "adapter.safetensors").read_bytes() == good
    assert checkpoint.damage(ckpts / "iter_00001") is None


@pytest.mark.parametrize(
    "breakage,problem",
    [
        (lambda d: (d / "rng.pt").write_bytes(b""), "rng.pt does not match"),
        (lambda d: (d / "state.json").write_text("garbage"), "state.json does not match"),
        (lambda d: (d / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda d: (d / "manifest.json").write_text("{"), "unreadable manifest.json"),
    ],
)
def test_damaged_checkpoint_files_are_named(tmp_path, tiny_pipe_dir, breakage, problem):
    _, _, ckpts = two_checkpoints(tmp_path, tiny_pipe_dir)
    breakage(ckpts / "iter_00001")
    assert problem in checkpoint.damage(ckpts / "iter_00001")
    with pytest.warns(UserWarning, match="resuming from iter_00000"):
        assert checkpoint.latest(ckpts) == ckpts / "iter_00000"


def test_latest_naming_a_missing_checkpoint_warns(tmp_path, tiny_pipe_dir):
    _, _, ckpts = two_checkpoints(tmp_path, tiny_pipe_dir)
    (ckpts / "latest").write_text("iter_00007")
    with pytest.warns(UserWarning, match="iter_00007: missing; resuming from iter_00001"):
        assert checkpoint.latest(ckpts) == ckpts / "iter_00001"


def test_non_finite_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, tiny_pipe_dir, monkeypatch):
    import dgx.grpo.trainer as trainer

    cfg = tiny_config(tmp_path, tiny_pipe_dir, iterations=3)
    update, calls = trainer.update, []

    def blow_up(policy, *rest):  # the second update leaves a NaN in the adapter
        out = update(policy, *rest)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                policy.params[0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(trainer, "update", blow_up)
    with pytest.raises(
        TrainingError, match=r"iteration 1: the adapter .* no longer finite .* last good one \(iter_00000\)"
    ):
        train(assemble(cfg, Registry([tmp_path / "reg.yaml"])), tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    assert checkpoint.latest(ckpts) == ckpts / "iter_00000" and not (ckpts / "iter_00001").exists()
    saved = checkpoint.adapter_state(ckpts / "iter_00000")
    assert all(torch.isfinite(v).all() for v in saved.values())


class OnePerBatch:
    name = "one_per_batch"

    def __init__(self, **_):
        pass

    def __call__(self, images, prompts, metadata=None):
        return images.mean().reshape(1)  # one value for the whole batch: would broadcast and train nothing


class IntegerScores(OnePerBatch):
    def __call__(self, images, prompts, metadata=None):
        return torch.ones(len(images), dtype=torch.long)


class ListScores(OnePerBatch):
    def __call__(self, images, prompts, metadata=None):
        return [0.5] * len(images)


@pytest.mark.parametrize(
    "impl,message",
    [
        ("OnePerBatch", r"reward 'bad' returned shape \(1,\) for \d+ images; expected \(\d+,\)"),
        ("IntegerScores", r"reward 'bad' returned torch.int64 scores; a reward returns floats"),
        ("ListScores", r"reward 'bad' returned a list, not a tensor of \d+ scores"),
    ],
)
def test_a_reward_of_the_wrong_shape_or_type_is_named(tmp_path, tiny_pipe_dir, impl, message):
    from dgx.rewards.base import RewardError

    cfg = tiny_config(tmp_path, tiny_pipe_dir, iterations=1)
    (tmp_path / "reg.yaml").write_text(
        (tmp_path / "reg.yaml").read_text() + f"  bad: {{impl: 'test_faults:{impl}', description: test}}\n"
    )
    cfg.reward.name = "bad"
    with pytest.raises(RewardError, match=message):
        train(assemble(cfg, Registry([tmp_path / "reg.yaml"])), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_psi_records_what_it_was_calibrated_from(tmp_path, tiny_pipe_dir):
    from dgx.grpo.calibrate import calibrate, psi_matches

    cfg = tiny_config(tmp_path, tiny_pipe_dir)
    cfg.calibrate.iterations, cfg.calibrate.prompts, cfg.calibrate.group_size, cfg.calibrate.check_prompts = 1, 2, 2, 1
    psi = calibrate(assemble(cfg, Registry([tmp_path / "reg.yaml"])), tmp_path / "cal")
    assert psi_matches(psi, cfg)
    assert psi_matches(psi, cfg.model_copy(update={"train": cfg.train.model_copy(update={"iterations": 9})}))
    other = cfg.model_copy(deep=True)
    other.sampler.noise.a = 0.5
    assert not psi_matches(psi, other)  # --resume calibrates again
    data = json.loads(psi.read_text())
    data.pop("fingerprint")
    psi.write_text(json.dumps(data))
    assert not psi_matches(psi, cfg)  # a psi.json that does not say what it came from is not trusted


def test_calibration_refuses_non_finite_dense_rewards(tmp_path, tiny_pipe_dir, monkeypatch):
    import dgx.grpo.calibrate as calibrate

    cfg = tiny_config(tmp_path, tiny_pipe_dir)
    cfg.calibrate.iterations, cfg.calibrate.prompts, cfg.calibrate.group_size = 1, 2, 2
    dense = calibrate.dense_rewards
    monkeypatch.setattr(calibrate, "dense_rewards", lambda *a, **k: dense(*a, **k) * float("nan"))
    with pytest.raises(TrainingError, match="calibration iteration 0: .* non-finite dense rewards .* no psi.json"):
        calibrate.calibrate(assemble(cfg, Registry([tmp_path / "reg.yaml"])), tmp_path / "cal")
    assert not (tmp_path / "cal" / "psi.json").exists()
