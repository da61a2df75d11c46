"""The tutorial (docs/guide/tutorial.md) as a reader follows it: its files are the ones in examples/own_reward/, the
config validates and refuses a misspelt argument, a short run trains on the reward and `dgx push --dry-run` lists the
LoRA; every metric that run logs is in the glossary."""

import json
import re
from pathlib import Path

from click.testing import CliRunner
from dgx.grpo.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_reward"


def test_the_tutorials_code_is_the_example_files():
    page = (ROOT / "docs" / "guide" / "tutorial.md").read_text()
    blocks = re.findall(r"```(?:python|yaml)\n(.*?)```", page, flags=re.S)
    assert (EXAMPLE / "redness.py").read_text() in blocks and (EXAMPLE / "redness.yaml").read_text() in blocks


def test_the_tutorial_runs_as_written(tmp_path, monkeypatch):
    config = EXAMPLE / "redness.yaml"
    ok = CliRunner().invoke(main, ["validate", str(config)])
    assert ok.exit_code == 0, ok.output
    typo = CliRunner().invoke(main, ["validate", str(config), "--set", "reward.scael=2.0"])
    assert typo.exit_code == 2 and "did you mean 'scale'" in typo.output
    short = ["--set", "train.iterations=1", "--set", "eval.max_prompts=4", "--set", "calibrate.iterations=1"]
    out = tmp_path / "redness"
    run = CliRunner().invoke(main, ["run", str(config), "--only", "dense_grpo", "--out", str(out), *short])
    assert run.exit_code == 0, run.output
    summary = json.loads((out / "dense_grpo" / "seed_0" / "eval" / "summary.json").read_text())
    assert "redness" in summary  # the test score is the reward of the tutorial
    push = CliRunner().invoke(main, ["push", str(out / "dense_grpo" / "seed_0"), "--repo-id", "me/x", "--dry-run"])
    assert push.exit_code == 0 and "would upload pytorch_lora_weights.safetensors" in push.output, push.output

    glossary = (ROOT / "docs" / "guide" / "glossary.md").read_text()
    keys = {
        k for ln in (out / "dense_grpo" / "seed_0" / "metrics.jsonl").read_text().splitlines() for k in json.loads(ln)
    }
    assert {"dense_mean", "trained_samples", "seconds_credit_model"} <= keys
    assert not [k for k in sorted(keys) if f"`{k}`" not in glossary]
