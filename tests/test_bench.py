"""`dgx bench`: the claims' verdicts, the time to target from the `eval.every` curves, and the report's tasks."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from dgx.grpo import bench

ROOT = Path(__file__).resolve().parents[1]


def fake_run(d: Path, seconds: list[float], curve: list[tuple[int, float, float]], calibration: float = 0.0) -> Path:
    """A run folder as `dgx run` leaves it: config.yaml, metrics.jsonl (one row per iteration, its seconds split over
    rollout, credit and update), eval_curve.jsonl (iteration, gain, gain_se) and, with ``calibration``, psi.json."""
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"train": {"prompts_per_iter": 4, "group_size": 8}}))
    rows = [
        {"iteration": i, "seconds_rollout": s / 2, "seconds_credit": s / 4, "seconds_train": s / 4}
        for i, s in enumerate(seconds)
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "eval_curve.jsonl").write_text(
        "".join(json.dumps({"iteration": i, "metric": "ink", "gain": g, "gain_se": se}) + "\n" for i, g, se in curve)
    )
    if calibration:
        (d / "calibration").mkdir()
        (d / "calibration" / "psi.json").write_text(json.dumps({"seconds": [calibration / 2, calibration / 2]}))
    return d


def test_time_to_target_is_the_ratio_at_the_first_point_past_the_slow_methods_final_gain(tmp_path):
    fake_run(tmp_path / "flow_grpo/seed_0", [2.0] * 10, [(4, 0.010, 0.002), (9, 0.020, 0.002)])
    fake_run(tmp_path / "flow_grpo/seed_1", [2.0] * 10, [(4, 0.012, 0.002), (9, 0.022, 0.002)])
    # DenseGRPO: 3 s per iteration and 6 s of calibration; its mean gain passes 0.021 at iteration 4 (seed mean 0.025)
    fake_run(tmp_path / "dense_grpo/seed_0", [3.0] * 10, [(4, 0.020, 0.002), (9, 0.05, 0.002)], calibration=6.0)
    fake_run(tmp_path / "dense_grpo/seed_1", [3.0] * 10, [(4, 0.030, 0.002), (9, 0.06, 0.002)], calibration=6.0)
    curve = bench.test_curve(sorted((tmp_path / "dense_grpo").glob("seed_*")))
    assert curve["seconds"] == pytest.approx([6 + 15, 6 + 30]) and curve["samples"] == [160, 320]
    assert curve["gain"] == pytest.approx([0.025, 0.055]) and curve["gain_se"] == pytest.approx(
        [0.002 * 2**0.5 / 2] * 2
    )
    lines, plot = bench.time_to_target(tmp_path)
    assert "final test gain: +0.0210 ± 0.0014 after 20 s, 320 samples" in lines[0]
    # (6 + 15) / 20 of the time, 160 / 320 of the samples
    assert "**1.05x the time and 0.50x the samples**" in lines[1] and plot.is_file()


def test_time_to_target_when_the_slow_method_did_not_improve(tmp_path):
    fake_run(tmp_path / "flow_grpo/seed_0", [2.0] * 10, [(4, 0.001, 0.002), (9, 0.003, 0.002)])
    fake_run(tmp_path / "dense_grpo/seed_0", [3.0] * 10, [(4, 0.003, 0.002), (9, 0.02, 0.002)])
    lines, _ = bench.time_to_target(tmp_path)
    assert "`flow_grpo` did not improve" in lines[1] and "after 30 s and 320 samples" in lines[1]
    shutil.rmtree(tmp_path / "dense_grpo")
    fake_run(tmp_path / "dense_grpo/seed_0", [3.0] * 10, [(4, 0.003, 0.002), (9, 0.002, 0.002)])
    assert "did not reach a gain above 2 SE in 30 s" in bench.time_to_target(tmp_path)[0][1]


def per_image(d: Path, ink: list[float]) -> None:
    (d / "eval").mkdir(parents=True, exist_ok=True)
    rows = [{"index": i, "tag": "t", "prompt": f"p{i}", "correct": False, "ink": v} for i, v in enumerate(ink)]
    (d / "eval" / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_claims_pair_the_reward_image_by_image_and_say_when_the_bench_resolves(tmp_path):
    per_image(tmp_path / "base/seed_0", [0.10, 0.20, 0.30, 0.40])
    per_image(tmp_path / "flow_grpo/seed_0", [0.11, 0.21, 0.31, 0.40])
    per_image(tmp_path / "dense_grpo/seed_0", [0.20, 0.31, 0.39, 0.52])
    lines = bench.claims(tmp_path, "ink")
    assert lines[0].startswith("- DenseGRPO improves on the base model: ink +0.1050 ± 0.0065 (1 seeds)")
    assert lines[0].endswith("-> **reproduced**") and "strict GenEval +0.000" in lines[0]
    assert lines[2].startswith("- dense > sparse (DenseGRPO beats Flow-GRPO): ink +0.0975 ± 0.0085")
    assert lines[-1].endswith("-> **resolved**")


def test_benchmarks_md_keeps_every_tasks_latest_section_mechanism_first(tmp_path, monkeypatch):
    """Benching one task rewrites its own section only; BENCHMARKS.md holds each task's, in the tasks' order, with
    the image links made relative to the repository root."""
    (tmp_path / "configs").mkdir()
    for config, _ in bench.TASKS.values():
        shutil.copy(ROOT / config, tmp_path / config)
    older = tmp_path / "docs/bench/preference"
    older.mkdir(parents=True)
    (older / "section.md").write_text("## The preference task\n\n![samples](samples.png)\n")
    monkeypatch.setattr(bench, "run_ablation", lambda *a, **k: None)  # nothing trains: an empty runs folder
    monkeypatch.setattr(bench, "report", lambda *a, **k: None)
    path = bench.bench(["mechanism"], report_only=True, root=tmp_path, publish=True)
    assert path == tmp_path / "BENCHMARKS.md"
    text = path.read_text()
    assert text.index("## The mechanism task") < text.index("## The preference task")
    assert "![samples](docs/bench/preference/samples.png)" in text and "runs finished: 0 of 21 (PARTIAL" in text


def test_bench_changes_tracked_files_only_with_publish(tmp_path, monkeypatch):
    """Without --publish the report and its plots stay under runs/bench/: BENCHMARKS.md and docs/ are untouched."""
    (tmp_path / "configs").mkdir()
    for config, _ in bench.TASKS.values():
        shutil.copy(ROOT / config, tmp_path / config)
    monkeypatch.setattr(bench, "run_ablation", lambda *a, **k: None)
    monkeypatch.setattr(bench, "report", lambda *a, **k: None)
    path = bench.bench(["mechanism"], report_only=True, root=tmp_path)
    assert path == tmp_path / "runs/bench/BENCHMARKS.md" and "## The mechanism task" in path.read_text()
    assert (tmp_path / "runs/bench/mechanism/report/section.md").is_file()
    assert not (tmp_path / "BENCHMARKS.md").exists() and not (tmp_path / "docs").exists()
