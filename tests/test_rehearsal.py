"""`dgx rehearse`: the paper configs on stand-ins of every component (tiny on the CPU), and the stand-ins' published
sizes."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from dgx.grpo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_paper_scale_standins_have_the_published_sizes():
    """Built on the meta device (no memory): the parameter counts of the published checkpoints."""
    from dgx.eval.geneval_prompts import COCO_CLASSES
    from dgx.rewards.architectures import (
        CLIP_VIT_H_14,
        CLIP_VIT_L_14,
        MASK2FORMER_SWIN_S,
        clip_model,
        mask2former_model,
        parameters,
    )
    from dgx.sampler.architectures import sd35_medium_pipeline

    with torch.device("meta"):
        pipe = sd35_medium_pipeline(text_layers=None, t5_layers=24)
        millions = {
            k: parameters(getattr(pipe, k)) / 1e6 for k in ("transformer", "vae", "text_encoder", "text_encoder_2")
        }
        t5 = pipe.text_encoder_3
        clip_h, clip_l = clip_model(CLIP_VIT_H_14, 224), clip_model(CLIP_VIT_L_14, 224)
        detector = mask2former_model(MASK2FORMER_SWIN_S, list(COCO_CLASSES))
    assert millions == pytest.approx(
        {"transformer": 2243.2, "vae": 83.8, "text_encoder": 123.65, "text_encoder_2": 694.66}, abs=0.05
    )
    assert parameters(t5) == 4_762_310_656  # T5-XXL (T5 v1.1) encoder
    assert parameters(clip_h) / 1e6 == pytest.approx(986.1, abs=0.05)  # OpenCLIP ViT-H/14
    assert parameters(clip_l) / 1e6 == pytest.approx(427.6, abs=0.05)  # openai/clip-vit-large-patch14
    swin = detector.config.backbone_config
    assert (swin.embed_dim, swin.depths, detector.config.num_queries, detector.config.num_labels) == (
        96,
        [2, 2, 18, 2],
        100,
        80,
    )


def test_tiny_rehearsal_runs_the_paper_configs_on_standins(tmp_path):
    """The three paper configs through `dgx run` on tiny stand-ins of the same classes: every phase timed, the
    rewards and evaluations computed by the real components (PickScore's CLIP, GenEval's Mask2Former + CLIP colours,
    rapidocr), DenseGRPO's extra model calls counted."""
    out = tmp_path / "reh"
    configs = [str(ROOT / "configs" / f"{c}.yaml") for c in ("sd35m_pickscore", "sd35m_geneval", "sd35m_ocr")]
    res = CliRunner().invoke(main, ["rehearse", *configs, "--out", str(out), "--set", "credit.chunk=16"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "rehearsal.json").read_text())
    rows = {(r["config"], r["variant"]): r for r in result["rows"]}
    assert set(rows) == {
        (c, v) for c in ("sd35m_pickscore", "sd35m_geneval", "sd35m_ocr") for v in ("flow_grpo", "dense_grpo")
    }
    for (_, variant), r in rows.items():
        assert r["rollout"] > 0 and r["decode"] > 0 and r["reward"] > 0 and r["update"] > 0, r
        assert (r["continuation"] > 0) == (variant == "dense_grpo"), r
        assert 0 < r["reward_share"] < 1 and r["peak_gib"] > 0
        # with a credit rule's `pipeline` the continuation overlaps decoding and scoring: these add up either way
        assert r["iteration"] >= r["rollout"] + r["update"] + max(r["continuation"], r["decode"] + r["reward"]) - 5e-3
    for ratio in result["ratios"]:
        assert ratio["calls_ratio"] > 1
    assert "| sd35m_ocr | dense_grpo |" in (out / "rehearsal.md").read_text()
    # the real components on the stand-ins: T5 among the text encoders, each benchmark's own score
    assert (out / "standins" / "model_sd3" / "text_encoder_3" / "config.json").is_file()
    summaries = {
        c: json.loads((out / c / "dense_grpo" / "seed_0" / "eval" / "summary.json").read_text())
        for c in ("sd35m_pickscore", "sd35m_geneval", "sd35m_ocr")
    }
    assert {"pickscore", "overall", "ocr"} <= {k for s in summaries.values() for k in s}
    assert (out / "sd35m_pickscore" / "dense_grpo" / "seed_0" / "calibration" / "psi.json").is_file()
    config = (out / "sd35m_geneval" / "flow_grpo" / "seed_0" / "config.yaml").read_text()
    assert str(out / "standins" / "mask2former") in config and "kl_beta: 0.04" in config  # the paper config, re-pointed
    assert "chunk: 16" in config and result["set"] == {"credit": {"chunk": 16}}


def test_rehearse_builds_each_configs_model_family_from_its_registry_stand_in(tmp_path):
    """Qwen-Image's and Wan2.1's configs on their families' tiny stand-ins; Wan's video size cut to the rehearsal's."""
    configs = [str(ROOT / "configs" / f"{c}.yaml") for c in ("qwen_image_pickscore", "wan21_ocr")]
    res = CliRunner().invoke(main, ["rehearse", *configs, "--out", str(tmp_path), "--iterations", "1"])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "rehearsal.json").read_text())["rows"]
    assert [(r["config"], r["variant"]) for r in rows] == [
        (c, v) for c in ("qwen_image_pickscore", "wan21_ocr") for v in ("flow_grpo", "dense_grpo")
    ]
    assert all(r["continuation"] > 0 for r in rows if r["variant"] == "dense_grpo")
    for family in ("qwen_image", "wan"):
        assert (tmp_path / "standins" / f"model_{family}" / "model_index.json").is_file()
    model = yaml.safe_load((tmp_path / "wan21_ocr" / "dense_grpo" / "seed_0" / "config.yaml").read_text())["model"]
    assert (model["height"], model["width"], model["frames"]) == (64, 64, 33)


def test_rehearse_refuses_what_it_has_no_standins_for(tmp_path):
    shapes = CliRunner().invoke(main, ["rehearse", str(ROOT / "configs" / "shapes_quick.yaml"), "--out", str(tmp_path)])
    assert shapes.exit_code == 2 and "dgx rehearse has stand-ins for pickscore, geneval, ocr only" in shapes.output
    missing = CliRunner().invoke(main, ["rehearse", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "config file not found" in missing.output
    assert not (tmp_path / "standins").exists()  # refused before writing anything


@pytest.mark.slow
def test_rehearsal_under_accelerate_launch_on_two_processes(tmp_path):
    """The main process writes the stand-ins and the table, both train; the table is printed once."""
    import os
    import subprocess

    from dgx_test_helpers import accelerate_launch

    pickscore = str(ROOT / "configs" / "sd35m_pickscore.yaml")
    cmd = accelerate_launch(
        ["--multi_gpu"],
        2,
        29531,
        "-m",
        "dgx.grpo.cli",
        "rehearse",
        pickscore,
        "--iterations",
        "1",
        "--set",
        "device=cpu",
    ) + ["--out", str(tmp_path / "reh")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("wrote ") == 1, res.stdout[-3000:]
    result = json.loads((tmp_path / "reh" / "rehearsal.json").read_text())
    assert result["device"] == "CPU, 2 processes" and [r["variant"] for r in result["rows"]] == [
        "flow_grpo",
        "dense_grpo",
    ]
