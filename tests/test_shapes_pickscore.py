"""The shapes world's PickScore: loaded offline by the PickScore class through its registry entry, deterministic, and
right on a fixed set of renders; scored beside GenEval's verdicts in evaluations and reports."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dgx.grpo.build import build_reward
from dgx.grpo.config import RewardConfig
from dgx.grpo.registry import Registry
from dgx.rewards.pickscore import PickScore
from dgx.rewards.shapes import prompts as P
from dgx.rewards.shapes import render as R

ROOT = Path(__file__).resolve().parents[1]

# (true caption, one word changed): colours, shapes and numbers. Relations are left out: the model does not tell
# "left of" from "right of" (0.53 of held-out pairs, docs/shapes_world.md), and a test of them would fail by chance.
PAIRS = [
    ("a photo of a red circle", "a photo of a blue circle"),
    ("a photo of a green square", "a photo of a green triangle"),
    ("a photo of two diamonds", "a photo of four diamonds"),
    ("a photo of a circle left of a square", "a photo of a triangle left of a square"),
    ("a photo of a yellow triangle and a purple diamond", "a photo of a yellow triangle and a pink diamond"),
    ("a photo of a square and a circle", "a photo of a square and a diamond"),
]


@pytest.fixture(scope="module")
def shapes_pickscore():
    return build_reward(RewardConfig(name="shapes_pickscore"), Registry())


def renders(captions: list[str], seed: int = 0) -> torch.Tensor:
    meta = {m["prompt"]: m for m in P.all_prompts()}
    rng = np.random.default_rng(seed)
    imgs = np.stack([R.render_prompt(meta[c], rng)[0] for c in captions])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255


def test_registry_entry_is_pickscore_with_the_package_weights(shapes_pickscore):
    assert type(shapes_pickscore.reward) is PickScore  # the reward as built, its outputs checked (CheckedReward)
    folder = Path(shapes_pickscore.path)
    assert folder.is_dir() and (folder / "config.json").is_file() and folder.parts[-2:] == ("shapes", "pickscore")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 10 * 2**20  # ships as package data, at most 10 MB


def test_fixed_renders_rank_their_true_caption_first(shapes_pickscore):
    true, wrong = zip(*PAIRS)
    imgs = renders(list(true))
    s_true, s_wrong = shapes_pickscore(imgs, list(true)), shapes_pickscore(imgs, list(wrong))
    assert (s_true > s_wrong).all(), list(zip(true, s_true.tolist(), s_wrong.tolist()))


def test_scores_are_deterministic(shapes_pickscore):
    imgs, caps = renders([p for p, _ in PAIRS], seed=1), [p for p, _ in PAIRS]
    a = shapes_pickscore(imgs, caps)
    b = build_reward(RewardConfig(name="shapes_pickscore"), Registry())(imgs, caps)  # a fresh load
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (len(caps),)


def test_report_pairs_the_preference_score_with_the_base_model_and_the_first_variant(tmp_path):
    """Gains and differences on the same images: the score paired over all images, GenEval's verdicts per tag."""
    from dgx.grpo.results import paired_gains

    def write(run: str, scores: list[float], correct: list[bool]) -> Path:
        d = tmp_path / run / "seed_0"
        (d / "eval").mkdir(parents=True)
        rows = [
            {
                "index": i,
                "tag": "colors" if i % 2 else "counting",
                "prompt": f"p{i // 2}",
                "correct": c,
                "partial": 1.0,
                "reasons": [],
                "kinds": [],
                "pickscore": s,
            }
            for i, (s, c) in enumerate(zip(scores, correct))
        ]
        (d / "eval" / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d

    write("base", [1.0, 2.0, 3.0, 4.0], [False, False, True, False])
    dirs = {
        "flow": [write("flow", [1.5, 2.0, 3.5, 4.0], [True, False, True, False])],
        "dense": [write("dense", [2.0, 3.0, 4.0, 5.0], [True, True, True, False])],
    }
    gains = paired_gains(tmp_path, dirs)
    assert gains["dense"][0]["pickscore"] == pytest.approx((1.0, 0.0))
    mean, se = gains["flow"][0]["pickscore"]  # differences 0.5, 0, 0.5, 0
    assert mean == pytest.approx(0.25) and se == pytest.approx(np.std([0.5, 0, 0.5, 0], ddof=1) / 2)
    assert gains["flow"][0]["counting"][0] == pytest.approx(0.5) and gains["flow"][0]["colors"][0] == pytest.approx(0.0)
    versus = paired_gains(tmp_path, dirs, reference="flow")
    assert set(versus) == {"dense"} and versus["dense"][0]["pickscore"][0] == pytest.approx(0.75)


def test_shapes_pickscore_benchmark_scores_the_images_it_judges(tiny_model, tmp_path, shapes_pickscore):
    """The evaluation's per-image PickScore equals the reward's on the same images, beside GenEval's verdicts."""
    from dgx.eval.benchmarks import Protocol, generate
    from dgx.eval.benchmarks import shapes_pickscore as bench

    summary = bench(
        tiny_model, Protocol(steps=2, guidance=1.0, images_per_prompt=1, max_prompts=6, seed=3, out=tmp_path)
    )
    rows = [json.loads(x) for x in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert list(summary)[:3] == ["pickscore", "overall", "single_object"]
    images = generate(tiny_model, [r["prompt"] for r in rows], 2, 1.0, 3)
    expect = shapes_pickscore(images, [r["prompt"] for r in rows])
    assert [r["pickscore"] for r in rows] == pytest.approx(expect.tolist(), abs=1e-5)
    assert summary["pickscore"] == pytest.approx(float(expect.mean()), abs=1e-5)
