"""Watching a run: trackers (TensorBoard, offline wandb) with the metrics' own names, evaluation during training with
a test curve and sample grids, milestone and best checkpoints, and the run's progress."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dgx.grpo import checkpoint
from dgx.grpo.assembly import assemble
from dgx.grpo.cli import main
from dgx.grpo.metrics import flat_scalars
from dgx.grpo.registry import Registry
from dgx.grpo.trainer import train
from dgx_test_helpers import accelerate_launch, tiny_config

ABLATION = """
registry: reg.yaml
base:
  model: {{name: shapes, path: "{pipe}"}}
  sampler: {{steps: 3, guidance: 2.0}}
  reward: {{name: brightness}}
  train: {{iterations: 4, prompts_per_iter: 2, group_size: 2, micro_batch: 8, lora_rank: 2, lora_alpha: 2,
          save_every: 1, keep_last: 1, keep_every: 2, log_with: [tensorboard]}}
  eval: {{name: brightness_eval, steps: 2, every: 2, every_images: 3}}
variants:
  flow_grpo: {{}}
  dense_grpo: {{credit: {{name: dense_gain}}}}
seeds: [0]
"""


def one_iteration(tmp_path: Path, pipe: Path) -> Path:
    """ABLATION with 1 iteration and no evaluation during training, written to tmp_path/abl.yaml (with reg.yaml)."""
    tiny_config(tmp_path, pipe)
    abl = tmp_path / "abl.yaml"
    abl.write_text(
        ABLATION.format(pipe=pipe).replace("iterations: 4", "iterations: 1").replace(", every: 2, every_images: 3", "")
    )
    return abl


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of an offline wandb run, read from its transaction log (leveldb's log format: 32 KiB blocks of
    records with a 7-byte header, each record a wandb ``Record`` protobuf)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))[0]).read_bytes()
    pos, block, records, part = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if n == 0 and kind == 0:
            pos += left - 7
            continue
        part += data[pos : pos + n]
        pos += n
        if kind in (1, 4):  # a whole record, or the last piece of one
            records.append(part)
            part = b""
    rows = []
    for raw in records:
        r = pb.Record()
        r.ParseFromString(raw)
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def test_an_offline_wandb_run_records_the_metrics_scalars_and_images(tmp_path, tiny_pipe_dir, monkeypatch):
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_config(tmp_path, tiny_pipe_dir, iterations=2, log_with=["tensorboard", "wandb"])
    cfg.eval.name, cfg.eval.steps, cfg.eval.every, cfg.eval.every_images = "brightness_eval", 2, 1, 3
    from dgx.grpo.runner import evaluation_during_training

    reg = Registry([tmp_path / "reg.yaml"])
    run = tmp_path / "run"
    parts = assemble(cfg, reg)
    train(parts, run, evaluate_during=evaluation_during_training(parts, run))
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    history = {h["_step"]: h for h in wandb_history(run)}
    for row in rows:
        logged = history[row["iteration"]]
        for key, value in flat_scalars(row).items():
            assert logged[key] == pytest.approx(value), key
    curve = [json.loads(ln) for ln in (run / "eval_curve.jsonl").read_text().splitlines()]
    assert [c["iteration"] for c in curve] == [0, 1]
    assert all(history[c["iteration"]]["test/score"] == pytest.approx(c["score"]) for c in curve)
    assert all(history[c["iteration"]]["test/samples/_type"] == "images/separated" for c in curve)  # image grids
    assert list((run / "wandb").glob("offline-run-*/files/media/images/test/samples_*.png"))
    tb = EventAccumulator(str(run / "tensorboard")).Reload()
    assert "test/samples" in tb.Tags()["images"] and set(flat_scalars(rows[0])) <= set(tb.Tags()["scalars"])


def test_evaluation_during_training_milestones_best_resume_and_push(tmp_path, tiny_pipe_dir):
    tiny_config(tmp_path, tiny_pipe_dir)  # reg.yaml
    abl = tmp_path / "abl.yaml"
    abl.write_text(ABLATION.format(pipe=tiny_pipe_dir))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(abl), "--out", str(out)])
    assert res.exit_code == 0, res.output
    run = out / "dense_grpo" / "seed_0"
    curve = [json.loads(ln) for ln in (run / "eval_curve.jsonl").read_text().splitlines()]
    assert [c["iteration"] for c in curve] == [1, 3]  # every 2 iterations (the last is the 4th)
    assert all({"score", "gain", "gain_se", "metric", "seconds"} <= set(c) for c in curve)
    assert (run / "eval_during" / "iter_00003" / "grid.png").is_file() and (run / "eval_during" / "base").is_dir()
    assert (out / "test_curve.png").is_file() and "![test_curve](test_curve.png)" in (out / "report.md").read_text()
    assert "Evaluation during training" in (out / "report.md").read_text()
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("iter_*")) == ["iter_00001", "iter_00003"]  # milestones; keep_last 1
    best = json.loads((ckpts / "best" / "best.json").read_text())
    assert best["score"] == max(c["score"] for c in curve) and checkpoint.damage(ckpts / "best") is None

    # --resume from a milestone: a run killed after iteration 3 with only the milestone of iteration 2 left
    whole = (ckpts / "iter_00003" / "adapter.safetensors").read_bytes()
    import shutil

    shutil.rmtree(ckpts / "iter_00003")
    (ckpts / "latest").write_text("iter_00001")
    (run / "eval" / "summary.json").unlink()
    again = CliRunner().invoke(main, ["run", str(abl), "--out", str(out), "--resume", "--only", "dense_grpo"])
    assert again.exit_code == 0, again.output
    assert (ckpts / "iter_00003" / "adapter.safetensors").read_bytes() == whole

    for kept in ("iter_00001", "best"):  # dgx push and dgx eval take any kept checkpoint
        pushed = CliRunner().invoke(main, ["push", str(run), "--repo-id", "u/r", "--dry-run", "--checkpoint", kept])
        assert pushed.exit_code == 0 and "pytorch_lora_weights.safetensors" in pushed.output, pushed.output
    evaluated = CliRunner().invoke(
        main, ["eval", str(abl), "--adapter", str(ckpts / "iter_00001"), "--out", str(tmp_path / "e")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    missing = CliRunner().invoke(
        main, ["push", str(run), "--repo-id", "u/r", "--dry-run", "--checkpoint", "iter_00000"]
    )
    assert missing.exit_code == 2 and "kept: best, iter_00001, iter_00003" in missing.output


def test_dgx_run_shows_its_place_in_the_whole_run(tmp_path, tiny_pipe_dir, capfd):
    abl = one_iteration(tmp_path, tiny_pipe_dir)
    from dgx.grpo.runner import run_ablation

    run_ablation(abl, out=tmp_path / "o")
    err = capfd.readouterr().err
    assert "dgx run 1/2: flow_grpo, seed 0" in err and "dgx run 2/2: dense_grpo, seed 0" in err
    assert (
        yaml.safe_load((tmp_path / "o" / "flow_grpo" / "seed_0" / "config.yaml").read_text())["train"]["keep_every"]
        == 2
    )


def test_a_run_loads_its_generator_reward_and_scorer_once(tmp_path, tiny_pipe_dir, monkeypatch):
    """`dgx run` of 2 variants (one calibrated) x 1 seed builds the generator and the reward once and hands them to the
    base model's evaluation, the calibration, both trainings and both evaluations; the evaluations share one
    PickScore."""
    from dgx.rewards.pickscore import PickScore
    from dgx.sampler import SD3Model
    from dgx_test_helpers import Recorder

    scorer_loads, load = [], PickScore._load

    def counting_load(self):
        scorer_loads.append(self.path)
        load(self)

    monkeypatch.setattr(PickScore, "_load", counting_load)

    loads, original = [], SD3Model.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0] if args else kwargs.get("path"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(SD3Model, "from_pretrained", classmethod(counting))
    abl = one_iteration(tmp_path, tiny_pipe_dir)
    abl.write_text(
        abl.read_text()
        .replace(
            "dense_grpo: {credit: {name: dense_gain}}",
            "dense_grpo: {credit: {name: dense_gain}, sampler: {noise: {name: calibrated}}}",
        )
        .replace("reward: {name: brightness}", "reward: {name: recorder}")
        .replace(
            "name: brightness_eval, steps: 2", "name: shapes_pickscore, steps: 2, max_prompts: 2, images_per_prompt: 1"
        )
    )
    (tmp_path / "reg.yaml").write_text(
        (tmp_path / "reg.yaml").read_text() + "  recorder: {impl: 'dgx_test_helpers:Recorder', description: test}\n"
    )
    Recorder.built.clear()
    res = CliRunner().invoke(main, ["run", str(abl), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "dense_grpo" / "seed_0" / "calibration" / "psi.json").is_file()
    assert len(loads) == 1, loads
    assert [b["device"] for b in Recorder.built] == ["cpu"]
    assert len(scorer_loads) == 1 and len(list((tmp_path / "o").glob("*/seed_0/eval/summary.json"))) == 3


@pytest.mark.slow
def test_evaluation_during_training_on_two_processes(tmp_path, tiny_pipe_dir):
    """Under `accelerate launch --num_processes 2` (DDP over gloo) each process evaluates its share of the subset
    with the unwrapped transformer, and the main one writes the curve."""
    import os
    import subprocess

    abl = one_iteration(tmp_path, tiny_pipe_dir)
    text = (
        abl.read_text()
        .replace("iterations: 1", "iterations: 2")
        .replace("steps: 2}", "steps: 2, every: 1, every_images: 3}")
    )
    abl.write_text(text.replace("  dense_grpo: {credit: {name: dense_gain}}\n", ""))  # flow_grpo only
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = accelerate_launch(
        ["--multi_gpu"],
        2,
        29562,
        "-m",
        "dgx.grpo.cli",
        "run",
        str(abl),
        "--out",
        str(tmp_path / "o"),
        "--set",
        "device=cpu",
    )
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    curve = (tmp_path / "o" / "flow_grpo" / "seed_0" / "eval_curve.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in curve] == [0, 1]


def test_a_reward_that_cannot_load_stops_the_run_before_any_sampling(tmp_path, tiny_pipe_dir, monkeypatch):
    """The reward loads when the run is assembled, before the generator and the base model's evaluation: a wrong
    PickScore folder is one error line, and nothing was sampled or written."""
    from dgx.sampler import SD3Model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loads = []
    monkeypatch.setattr(SD3Model, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a)))
    abl = one_iteration(tmp_path, tiny_pipe_dir)
    abl.write_text(
        abl.read_text().replace("reward: {name: brightness}", f"reward: {{name: pickscore, path: {tmp_path}/nope}}")
    )
    res = CliRunner().invoke(main, ["run", str(abl), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and res.output.count("error:") == 1, res.output
    assert "could not load the PickScore processor" in res.output
    assert loads == [] and not (tmp_path / "o" / "base").exists()
