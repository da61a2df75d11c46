"""The shapes world: prompts and splits, metadata format, renderer, shipped model."""

from collections import Counter
from importlib import resources

import numpy as np
import pytest
import torch
from dgx.rewards.shapes import prompts, render

WEIGHTS = resources.files("dgx.rewards.shapes").joinpath("weights")


def test_splits_are_disjoint_and_cover_every_tag():
    train, test = prompts.split("train"), prompts.split("test")
    tr, te = {m["prompt"] for m in train}, {m["prompt"] for m in test}
    assert not tr & te and len(tr) + len(te) == len(prompts.all_prompts()) == 1196
    assert Counter(m["tag"] for m in test) == {
        "single_object": 2,
        "two_object": 4,
        "counting": 4,
        "colors": 13,
        "position": 16,
        "color_attr": 60,
    }
    assert set(Counter(m["tag"] for m in train)) == set(prompts.TAGS)
    assert prompts.split("test") == test  # fixed
    with pytest.raises(ValueError, match="unknown split"):
        prompts.split("val")


def test_metadata_follows_geneval_format():
    by_prompt = {m["prompt"]: m for m in prompts.all_prompts()}
    assert by_prompt["a photo of three squares"] == {
        "tag": "counting",
        "prompt": "a photo of three squares",
        "include": [{"class": "square", "count": 3}],
        "exclude": [{"class": "square", "count": 4}],
    }
    assert by_prompt["a photo of a circle left of a triangle"]["include"] == [
        {"class": "triangle", "count": 1},
        {"class": "circle", "count": 1, "position": ["left of", 0]},
    ]
    assert by_prompt["a photo of an orange diamond"]["include"] == [{"class": "diamond", "count": 1, "color": "orange"}]
    m = by_prompt["a photo of a red square and a blue circle"]
    assert m["tag"] == "color_attr" and m["include"][1] == {"class": "circle", "count": 1, "color": "blue"}
    for m in prompts.all_prompts():
        assert set(m) == {"tag", "prompt", "include", "exclude"} and m["tag"] in prompts.TAGS


def test_one_word_neighbours_change_one_detail_within_the_tag():
    near = prompts.one_word_neighbours(prompts.all_prompts())
    assert [m["prompt"] for m in near["a photo of three squares"]] == [
        "a photo of three circles",
        "a photo of two squares",
        "a photo of four squares",
        "a photo of three triangles",
        "a photo of three diamonds",
    ]
    # articles are ignored, so a colour that changes "a" to "an" is still one word
    assert "a photo of an orange circle" in {m["prompt"] for m in near["a photo of a red circle"]}
    assert "a photo of a circle right of a square" in {
        m["prompt"] for m in near["a photo of a circle left of a square"]
    }
    for p, ms in near.items():
        assert ms and p not in {m["prompt"] for m in ms}
        assert len({m["tag"] for m in ms}) == 1


def test_swapped_maps_every_prompt_to_its_twin_in_the_same_tag():
    twin = prompts.swapped(prompts.all_prompts())
    assert twin["a photo of three squares"]["prompt"] == "a photo of three circles"
    assert twin["a photo of three squares"]["exclude"] == [{"class": "circle", "count": 4}]
    assert twin["a photo of an orange circle"]["include"] == [{"class": "square", "count": 1, "color": "purple"}]
    assert twin["a photo of a circle left of a triangle"]["prompt"] == "a photo of a square left of a diamond"
    for p, m in twin.items():  # an involution without fixed points, within each tag
        assert m["prompt"] != p and twin[m["prompt"]]["prompt"] == p
    assert {p: m["tag"] for p, m in twin.items()} == {m["prompt"]: m["tag"] for m in prompts.all_prompts()}


@pytest.mark.parametrize("sizes, gap", [((render.MIN_SIZE, render.MAX_SIZE), render.GAP), ((10, 13), 3)])
def test_renderer_draws_exact_palette_and_counts(sizes, gap):
    rng = np.random.default_rng(0)
    meta = {"tag": "counting", "prompt": "", "include": [{"class": "circle", "count": 4}], "exclude": []}
    for _ in range(20):
        img, shapes = render.render_prompt(meta, rng, sizes, gap)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and len(shapes) == 4
        colours = {tuple(c) for c in img.reshape(-1, 3)}
        assert colours <= set(render.PALETTE.values()) | {render.BACKGROUND}
        assert all(sizes[0] <= s.size <= sizes[1] for s in shapes)
        for a in shapes:  # no two shapes come closer than the gap
            for b in shapes:
                assert a is b or not render._overlaps(a, b, gap)


def test_shipped_model_loads_offline_and_is_deterministic():
    from dgx.eval.benchmarks import generate
    from dgx.grpo.build import build_model
    from dgx.grpo.config import RunConfig
    from dgx.grpo.registry import Registry

    size = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert 0 < size <= 25 * 2**20, size
    model = build_model(RunConfig(), Registry())  # model.name shapes -> the package's weights
    assert type(model.transformer).__name__ == "SD3Transformer2DModel" and model.pipe.text_encoder_3 is None
    p = ["a photo of a red circle", "a photo of two squares"]
    a, b, c = (generate(model, p, 10, 3.0, seed=s) for s in (1, 1, 2))
    assert a.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 0.05
