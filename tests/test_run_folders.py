"""A run folder vouches for itself: one command per folder (a killed one's lock taken over), earlier results kept
unless replaced on purpose, damaged run files named with what --resume does about them, psi(t) and the adapter
checked against their checkpoint, memory failures named by phase and key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from dgx.grpo import checkpoint
from dgx.grpo.errors import ConfigError, TrainingError
from dgx_test_helpers import tiny_config
from test_faults import ABLATION, dgx

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_pipe_dir):
    """A finished `dgx run` of the faults' ablation (flow_grpo and the calibrated dense_grpo, 3 iterations)."""
    tmp = tmp_path_factory.mktemp("folders")
    tiny_config(tmp, tiny_pipe_dir)  # reg.yaml
    (tmp / "abl.yaml").write_text(ABLATION.format(pipe=tiny_pipe_dir))
    res = dgx(["run", str(tmp / "abl.yaml"), "--out", str(tmp / "out")])
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp


def copy_of(finished: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(finished / "out", tmp_path / "out")
    return tmp_path / "out"


def error_line(res: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr[-2000:]
    return lines[0]


def test_a_second_run_on_a_folder_in_use_refuses_and_corrupts_nothing(tmp_path, tiny_pipe_dir):
    tiny_config(tmp_path, tiny_pipe_dir)
    (tmp_path / "abl.yaml").write_text(ABLATION.format(pipe=tiny_pipe_dir))
    args = ["run", str(tmp_path / "abl.yaml"), "--out", str(tmp_path / "out"), "--only", "flow_grpo"]
    env = {
        **os.environ,
        "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "DGX_FAULT_SIGNAL": "SIGSTOP",
    }
    # the first run stops itself (SIGSTOP) after its second update, holding the folder, until SIGCONT
    driver = [sys.executable, str(HERE / "fault_driver.py"), "training", "2"]
    first = subprocess.Popen([*driver, *args], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while Path(f"/proc/{first.pid}/stat").read_text().split()[2] != "T" and time.time() < deadline:
        time.sleep(0.2)
    second = dgx(args)
    assert second.returncode == 2 and f"is in use by dgx run (pid {first.pid}" in error_line(second)
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    rows = [json.loads(ln) for ln in (tmp_path / "out/flow_grpo/seed_0/metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # one run's rows, each once
    assert len((tmp_path / "out/invocations.jsonl").read_text().splitlines()) == 1  # the refused one wrote nothing
    assert (tmp_path / "out/.dgx.lock").read_text() == ""  # released


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    from dgx.grpo.folders import held

    code = f"from dgx.grpo.folders import held\nwith held({str(tmp_path)!r}, 'dgx run'):\n    input()\n"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    while not (tmp_path / ".dgx.lock").is_file() or not (tmp_path / ".dgx.lock").read_text():
        time.sleep(0.05)
    with pytest.raises(ConfigError, match=f"in use by dgx run \\(pid {holder.pid}"):
        with held(tmp_path, "dgx eval"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with pytest.warns(UserWarning, match=f"taking over the lock of dgx run \\(pid {holder.pid}"):
        with held(tmp_path, "dgx eval"):
            assert json.loads((tmp_path / ".dgx.lock").read_text())["pid"] == os.getpid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # released cleanly: nothing to take over
        with held(tmp_path, "dgx eval"):
            pass


def test_earlier_results_are_replaced_only_with_overwrite(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = (out / "flow_grpo/seed_0/eval/summary.json").read_text()
    again = dgx(["run", str(finished / "abl.yaml"), "--out", str(out), "--only", "flow_grpo"])
    assert again.returncode == 2 and "holds earlier results" in error_line(again)
    assert (out / "flow_grpo/seed_0/eval/summary.json").read_text() == before
    (out / "flow_grpo/seed_0/eval/summary.json").write_text("{}")  # a mark the overwrite must remove
    redo = dgx(["run", str(finished / "abl.yaml"), "--out", str(out), "--only", "flow_grpo", "--overwrite"])
    assert redo.returncode == 0, redo.stderr[-2000:]
    assert (out / "flow_grpo/seed_0/eval/summary.json").read_text() == before  # the same run, written again


def test_an_edited_psi_json_is_caught_on_resume(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    psi = out / "dense_grpo/seed_0/calibration/psi.json"
    data = json.loads(psi.read_text())
    data["psi"][0] += 0.5
    psi.write_text(json.dumps(data))
    res = dgx(["run", str(finished / "abl.yaml"), "--out", str(out), "--resume"])
    assert res.returncode == 2 and "is not the psi(t) checkpoint iter_00002 trained with" in error_line(res)


def test_damaged_run_files_on_resume(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    summary = out / "flow_grpo/seed_0/eval/summary.json"
    whole = summary.read_text()
    summary.write_text(whole[: len(whole) // 2])  # a truncated write: the evaluation is redone
    res = dgx(["run", str(finished / "abl.yaml"), "--out", str(out), "--resume"])
    assert res.returncode == 0 and "is damaged (not a whole JSON object): the evaluation is redone" in res.stderr
    assert summary.read_text() == whole
    (out / "dense_grpo/seed_0/config.yaml").unlink()  # nothing to compare the settings with: refused
    res = dgx(["run", str(finished / "abl.yaml"), "--out", str(out), "--resume"])
    assert res.returncode == 2 and "config.yaml is missing, so --resume cannot compare" in error_line(res)
    (out / "dense_grpo/seed_0/config.yaml").write_text("train: [")
    res = dgx(["run", str(finished / "abl.yaml"), "--out", str(out), "--resume"])
    assert res.returncode == 2 and "config.yaml is damaged" in error_line(res)


def test_a_half_written_metrics_line_is_cut_with_a_warning(tmp_path):
    from dgx.grpo.metrics import MetricsLog

    rows = [{"iteration": i, "loss": float(i)} for i in range(3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"iteration": 3, "lo')
    with pytest.warns(UserWarning, match="line 4 is damaged; keeping the 3 rows before it"):
        log = MetricsLog(tmp_path, resume_after=1)
    assert log.rows == rows[:2] and (tmp_path / "metrics.jsonl").read_text().count("\n") == 2


def test_a_checkpoint_without_a_manifest_is_not_trusted(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    ckpts = out / "flow_grpo/seed_0/checkpoints"
    (ckpts / "iter_00002" / "manifest.json").unlink()
    assert "no manifest.json" in checkpoint.damage(ckpts / "iter_00002")
    with pytest.warns(UserWarning, match="iter_00002: no manifest.json.*resuming from iter_00001"):
        assert checkpoint.latest(ckpts) == ckpts / "iter_00001"
    res = dgx(
        ["eval", str(finished / "abl.yaml"), "--adapter", str(ckpts / "iter_00002"), "--out", str(tmp_path / "e")]
    )
    assert res.returncode == 2 and "iter_00002: no manifest.json" in error_line(res)


def test_an_adapter_is_evaluated_with_its_own_lora_settings(tmp_path, tiny_pipe_dir):
    from dgx.eval.benchmarks import generate
    from dgx.grpo.adapter import load_adapter
    from dgx.grpo.assembly import assemble
    from dgx.grpo.registry import Registry
    from dgx.grpo.trainer import train
    from dgx.sampler import SD3Model

    cfg = tiny_config(tmp_path, tiny_pipe_dir, iterations=1, lora_alpha=64, lr=5e-2)
    train(assemble(cfg, Registry([tmp_path / "reg.yaml"])), tmp_path / "run")
    ck = tmp_path / "run/checkpoints/iter_00000"
    assert json.loads((ck / "adapter_config.json").read_text())["lora_alpha"] == 64

    def images(run_cfg, strict=False):
        model = SD3Model.from_pretrained(tiny_pipe_dir)
        load_adapter(model, run_cfg, ck, strict=strict)
        return generate(model, ["a red circle", "two squares"], 2, 2.0, seed=0)

    own = images(cfg)
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lora_alpha": 4, "lora_rank": 3})})
    with pytest.warns(UserWarning, match="using the adapter's own LoRA settings .*lora_alpha is 4, the adapter's 64"):
        assert torch.equal(images(other), own)
    with pytest.raises(ConfigError, match="was not trained with this config .*lora_rank is 3, the adapter's 2"):
        images(other, strict=True)  # an export: its card states the config's settings
    manifest = json.loads((ck / "manifest.json").read_text())  # a checkpoint from before adapter_config.json
    del manifest["sha256"]["adapter_config.json"]
    (ck / "manifest.json").write_text(json.dumps(manifest))
    (ck / "adapter_config.json").unlink()
    with pytest.raises(ConfigError, match="its adapter has rank \\[2\\], train.lora_rank is 3"):
        images(other)


def test_sizes_beyond_the_machine_are_refused_when_the_run_starts(tmp_path, monkeypatch):
    from dgx.grpo.memory import memory_problem
    from dgx.grpo.runner import plan_runs

    monkeypatch.chdir(tmp_path)
    body = {"model": {"name": "shapes"}, "reward": {"name": "ink"}, "train": {"prompts_per_iter": 8}}
    body["train"]["group_size"] = 1 << 28
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match="needs at least .* GiB .*--accept-memory-estimate"):
        plan_runs(Path("big.yaml"), tmp_path / "out", [], [], False, None)
    assert not (tmp_path / "out").exists()  # refused before any file
    assert plan_runs(Path("big.yaml"), tmp_path / "out", [], [], False, None, accept_memory=True).variants
    small = {**body, "train": {"prompts_per_iter": 8, "group_size": 4}}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    from dgx.grpo.config import load

    assert memory_problem(load(tmp_path / "small.yaml").variants["default"]) is None


def test_an_allocator_failure_names_its_phase_and_key(tmp_path, tiny_pipe_dir, monkeypatch):
    from click.testing import CliRunner
    from dgx.grpo import trainer
    from dgx.grpo.cli import main

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    tiny_config(tmp_path, tiny_pipe_dir)
    (tmp_path / "abl.yaml").write_text(ABLATION.format(pipe=tiny_pipe_dir))
    monkeypatch.setattr(trainer, "update", out_of_memory)
    res = CliRunner().invoke(
        main, ["run", str(tmp_path / "abl.yaml"), "--out", str(tmp_path / "o"), "--only", "flow_grpo"]
    )
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    line = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert line == [
        "error: training: out of memory (RuntimeError); lower train.prompts_per_iter x group_size (now 2 x 2, rolled "
        "out at once) or train.micro_batch (now 8)"
    ]
    with pytest.raises(ValueError, match="not memory"):  # other errors pass through as they are
        from dgx.grpo.runner import phase

        with phase("training", "x"):
            raise ValueError("not memory")
    with pytest.raises(TrainingError, match="calibration: out of memory \\(MemoryError\\)"):
        with phase("calibration", "calibrate.prompts"):
            raise MemoryError()


def test_a_lora_target_that_names_no_layer_is_refused_before_any_sampling(tmp_path, tiny_pipe_dir):
    tiny_config(tmp_path, tiny_pipe_dir)
    text = ABLATION.format(pipe=tiny_pipe_dir).replace("lora_alpha: 2,", "lora_alpha: 2, lora_targets: [to_qq],")
    (tmp_path / "abl.yaml").write_text(text)
    res = dgx(["run", str(tmp_path / "abl.yaml"), "--out", str(tmp_path / "o")])
    assert res.returncode == 2 and "train.lora_targets: 'to_qq' names no layer" in error_line(res)
    assert not (tmp_path / "o/base/seed_0/eval/summary.json").exists()


@pytest.mark.slow
def test_the_process_group_timeout_reaches_gloo(tmp_path):
    """Two gloo processes, the second 6 s late at a barrier: with `process_group_timeout: 0.025` (1.5 s) the first
    gives up after about 1.5 s; with the default (120 minutes) it waits for the second."""
    from dgx_test_helpers import accelerate_launch

    results = {}
    for minutes, port in ((0.025, 29611), (120.0, 29612)):
        out = tmp_path / f"{minutes}.json"
        cmd = accelerate_launch(["--multi_gpu"], 2, port, str(HERE / "timeout_worker.py"), str(minutes), "6", str(out))
        env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        results[minutes] = json.loads(out.read_text())
    short, default = results[0.025], results[120.0]
    assert short["processes"] == 2 and short["ended"] != "barrier" and 1 < short["waited"] < 5, short
    assert default["ended"] == "barrier" and default["waited"] > 5, default
