"""Benchmark scoring on known inputs, tables, the GenEval suite builder."""

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from dgx.eval.geneval_prompts import build_suite
from dgx.eval.tables import aggregate, paired_gain, write_gain_table, write_tables
from dgx.rewards.geneval import summarize


def test_geneval_suite_is_built_like_genevals():
    suite = build_suite()
    tags = Counter(m["tag"] for m in suite)
    assert tags["single_object"] == 80 and set(tags) == {
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    }
    assert 540 <= len(suite) <= 580 and all(v <= 100 for t, v in tags.items() if t != "single_object")
    assert build_suite() == suite  # fixed seed
    for m in suite:
        if m["tag"] == "counting":
            n = m["include"][0]["count"]
            assert 2 <= n <= 4 and m["exclude"] == [{"class": m["include"][0]["class"], "count": n + 1}]
        if m["tag"] == "position":
            assert m["include"][1]["position"][1] == 0 and m["prompt"].startswith("a photo of")
        if m["tag"] in ("colors", "color_attr"):
            assert all(inc["class"] != "person" for inc in m["include"])
    assert any(m["prompt"] == "a photo of an orange" for m in suite if m["tag"] == "single_object")


def test_geneval_summary_from_fixed_verdicts():
    tags = ["single_object"] * 4 + ["counting"] * 2 + ["position"] * 3
    correct = [True, True, True, False, False, True, False, False, False]
    s = summarize(tags, correct)
    assert s == {"single_object": 0.75, "counting": 0.5, "position": 0.0, "overall": pytest.approx(1.25 / 3)}


def test_tables_mean_std(tmp_path):
    res = {
        "base": [{"overall": 0.4}, {"overall": 0.5}],
        "dense": [{"overall": 0.6, "x": 1.0}, {"overall": 0.8, "x": 3.0}],
    }
    agg = aggregate(res)
    assert agg["dense"]["overall"] == pytest.approx((0.7, 0.1, 2)) and agg["dense"]["x"][0] == 2.0
    md = write_tables(res, tmp_path / "t", ["overall", "x"])
    assert "| dense | 0.700 ± 0.100 | 2.000 ± 1.000 |" in md and "| base | 0.450 ± 0.050 |  |" in md
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "method,overall_mean,overall_std,x_mean,x_std,seeds"


def test_paired_gain_per_tag_and_overall(tmp_path):
    rec = lambda tag, ok, p="p": {"tag": tag, "prompt": p, "correct": ok}  # noqa: E731
    base = [rec("a", True), rec("a", False), rec("b", True), rec("b", False)]
    other = [rec("a", True), rec("a", True), rec("b", False), rec("b", False)]
    g = paired_gain(base, other)  # a: diffs 0, 1; b: -1, 0 -> SE of each 0.5
    assert g["a"] == pytest.approx((0.5, 0.5)) and g["b"] == pytest.approx((-0.5, 0.5))
    assert g["overall"] == pytest.approx((0.0, 0.5**0.5 / 2))
    md = write_gain_table({"dense": [g, g]}, tmp_path / "g", ["overall", "a"])  # two seeds pooled
    assert "| dense | +0.000 ± 0.250 | +0.500 ± 0.354 |" in md
    with pytest.raises(ValueError, match="not of the same images"):
        paired_gain(base, [rec("a", True, "q")] + other[1:])
    score = lambda recs, xs: [{**r, "partial": x} for r, x in zip(recs, xs)]  # noqa: E731
    g = paired_gain(score(base, [1.0, 0.5, 1.0, 0.5]), score(other, [1.0, 1.0, 0.5, 0.5]), key="partial")
    assert g["a"] == pytest.approx((0.25, 0.25)) and g["b"] == pytest.approx((-0.25, 0.25))


def test_reward_benchmark_ocr_accuracy_from_recognitions(tmp_path, tiny_model, monkeypatch):
    """OCR accuracy of a benchmark from fixed recognitions (engine replaced by a lookup)."""
    from dgx.eval.benchmarks import Protocol, reward_benchmark
    from dgx.rewards.ocr import OCRReward

    recognized = iter(["hello", "hallo", ""])
    reward = OCRReward()
    monkeypatch.setattr(reward, "recognize", lambda img: next(recognized))
    meta = [{"prompt": 'a sign "hello"'}] * 3
    s = reward_benchmark(tiny_model, {"ocr": reward}, meta, Protocol(steps=2, guidance=1.0, out=tmp_path))
    assert s["ocr"] == pytest.approx((1.0 + 0.8 + 0.0) / 3)
    rows = [json.loads(x) for x in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert [r["ocr"] for r in rows] == pytest.approx([1.0, 0.8, 0.0])


def test_shapes_geneval_benchmark_writes_per_image(tmp_path, tiny_model):
    from dgx.eval.benchmarks import Protocol, shapes_geneval

    s = shapes_geneval(tiny_model, Protocol(steps=2, guidance=1.0, images_per_prompt=2, max_prompts=3, out=tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(s) >= {"overall"}
    per_tag = {}
    for r in rows:
        per_tag.setdefault(r["tag"], []).append(r["correct"])
    assert s["overall"] == pytest.approx(np.mean([np.mean(v) for v in per_tag.values()]))
    # a few images are kept as PNG: the picks, pixel for pixel the images that were scored
    from dgx.eval.benchmarks import generate, sample_picks
    from PIL import Image

    saved = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert saved and saved == [f"{j:05d}.png" for j in sample_picks(rows, "tag")]
    i = int(saved[-1][:5])
    img = generate(tiny_model, [rows[i]["prompt"]], 2, 1.0, seed=0, first=i)[0].clamp(0, 1)
    png = torch.from_numpy(np.array(Image.open(tmp_path / "samples" / saved[-1]))).permute(2, 0, 1).float() / 255
    assert png.shape == img.shape and (png - img).abs().max() <= 1.01 / 255


def test_sample_picks_and_grid(tmp_path):
    """Up to n images, spread over the groups, one per prompt; the grid frames GenEval verdicts green / red and
    shows only image indices every model kept."""
    from dgx.eval.benchmarks import sample_picks
    from dgx.eval.plots import plot_samples
    from PIL import Image

    metas = [
        {"tag": "a", "prompt": "p1"},
        {"tag": "a", "prompt": "p1"},
        {"tag": "a", "prompt": "p2"},
        {"tag": "b", "prompt": "q1"},
        {"tag": "a", "prompt": "p3"},
        {"tag": "b", "prompt": "q2"},
    ]
    assert sample_picks(metas, "tag", n=4) == [0, 2, 3, 5]
    assert sample_picks(metas, "tag", n=2) == [0, 3]
    assert sample_picks(metas, "category", n=3) == [0, 2, 3]  # no categories: one group

    evals = {}
    for name, verdicts in (("base", [True, False]), ("trained", [True, True])):
        d = tmp_path / name
        (d / "samples").mkdir(parents=True)
        rows = [{"index": i, "prompt": "a photo of a square", "tag": "a", "correct": v} for i, v in enumerate(verdicts)]
        (d / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for i in range(2):
            Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(d / "samples" / f"{i:05d}.png")
        evals[name] = d
    grid = np.array(Image.open(plot_samples(evals, tmp_path / "grid.png")).convert("RGB")).reshape(-1, 3).astype(int)
    near = lambda rgb: (np.abs(grid - rgb).sum(1) < 30).sum()  # noqa: E731
    green, red = near((44, 160, 44)), near((214, 39, 40))
    assert red > 0 and 2.5 < green / red < 3.5  # three correct frames, one wrong
    (evals["trained"] / "samples" / "00000.png").unlink()
    (evals["trained"] / "samples" / "00001.png").rename(evals["trained"] / "samples" / "00002.png")
    assert plot_samples(evals, tmp_path / "none.png") is None


def test_min_images_per_tag_raises_counts_for_small_tags():
    from dgx.eval.benchmarks import images_per_prompt_by_tag

    meta = [{"tag": "single_object"}] * 2 + [{"tag": "counting"}] * 5 + [{"tag": "color_attr"}] * 40
    assert images_per_prompt_by_tag(meta, 4) == [4] * 47  # GenEval's own protocol
    reps = images_per_prompt_by_tag(meta, 4, 32)
    assert reps[:2] == [16, 16] and reps[2:7] == [7] * 5 and reps[7:] == [4] * 40


def test_shapes_geneval_min_images_per_tag(tmp_path, tiny_model):
    from dgx.eval.benchmarks import Protocol, shapes_geneval

    protocol = Protocol(steps=1, guidance=1.0, images_per_prompt=1, min_images_per_tag=3, max_prompts=4, out=tmp_path)
    shapes_geneval(tiny_model, protocol)
    rows = [json.loads(x) for x in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    per_tag = Counter(r["tag"] for r in rows)
    assert min(per_tag.values()) >= 3 and sum(per_tag.values()) < 4 * 3 + 1


def test_drawbench_csv_categories_and_metrics(tmp_path, tiny_model):
    """DrawBench: prompts and categories from the sheet's CSV, every metric on the same images,
    per-category means equal the per-image rows; ImageReward skipped (with a warning) when absent."""
    import importlib.util

    from dgx.eval.benchmarks import Protocol, drawbench, generate, read_prompts
    from dgx.rewards.aesthetic import AestheticHead
    from dgx.rewards.pickscore import PickScore
    from dgx.sampler.tiny import word_tokenizer
    from dgx_test_helpers import tiny_clip
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPProcessor

    tiny_clip().save_pretrained(tmp_path / "clip")
    CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        word_tokenizer(["a", "red", "circle", "blue", "square"], 16),
    ).save_pretrained(tmp_path / "clip")
    torch.manual_seed(0)
    save_file(AestheticHead(8).eval().state_dict(), tmp_path / "head.safetensors")
    csv_file = tmp_path / "drawbench.csv"
    csv_file.write_text('Prompts,Category\na red circle,Colors\na blue square,Colors\n"a circle, red",Text\n')
    assert read_prompts(csv_file)[2] == {"prompt": "a circle, red", "category": "Text"}

    clip = str(tmp_path / "clip")
    metrics = {
        "aesthetic": {"path": clip, "head_path": str(tmp_path / "head.safetensors")},
        "pickscore": {"path": clip, "processor_path": clip},
    }
    protocol = Protocol(steps=2, guidance=1.0, images_per_prompt=2, seed=3, batch=4, out=tmp_path / "out")
    s = drawbench(tiny_model, protocol, prompts_file=str(csv_file), metrics=metrics)
    rows = [json.loads(x) for x in (tmp_path / "out" / "per_image.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and [r["category"] for r in rows] == ["Colors"] * 4 + ["Text"] * 2
    for m in ("aesthetic", "pickscore"):
        assert s[m] == pytest.approx(np.mean([r[m] for r in rows]), abs=1e-5)
        assert s[f"{m}/Text"] == pytest.approx(np.mean([r[m] for r in rows[4:]]), abs=1e-5)
    prompts = [r["prompt"] for r in rows]
    want = PickScore(clip, clip)(generate(tiny_model, prompts, 2, 1.0, 3, 4), prompts)
    assert [r["pickscore"] for r in rows] == pytest.approx(want.tolist(), abs=1e-5)

    if importlib.util.find_spec("ImageReward") is None:
        from dgx.eval.benchmarks import drawbench_rewards

        with pytest.warns(UserWarning, match="ImageReward is not installed"):
            assert set(drawbench_rewards()) == {"aesthetic", "pickscore"}
    with pytest.raises(ValueError, match="unknown DrawBench metric"):
        drawbench(tiny_model, Protocol(steps=1), prompts_file=str(csv_file), metrics={"hps": {}})
    with pytest.raises(FileNotFoundError, match="prompts_file"):
        drawbench(tiny_model, Protocol(steps=1))


def test_benchmark_shards_score_the_images_of_one_process(tmp_path):
    """Two processes' shards (each scoring its half, gathered in order) give one process's per-image verdicts:
    image i keeps its noise (seed, i) whichever process draws it. On the shipped shapes model, whose verdicts vary."""
    from dgx.eval.benchmarks import Protocol, Shard, shapes_geneval
    from dgx.grpo.build import build_model
    from dgx.grpo.config import RunConfig
    from dgx.grpo.registry import Registry

    model = build_model(RunConfig(device="cpu"), Registry())
    kw = {"steps": 6, "guidance": 5.0, "images_per_prompt": 2, "max_prompts": 9, "seed": 7}
    whole_dir, halves = tmp_path / "whole", []
    whole = shapes_geneval(model, Protocol(out=whole_dir, **kw))
    rows = [json.loads(x) for x in (whole_dir / "per_image.jsonl").read_text().splitlines()]
    for i in range(2):
        out = tmp_path / f"shard_{i}"
        shapes_geneval(model, Protocol(out=out, shard=Shard(i, 2), **kw))  # gather = list: this shard's records only
        halves += [json.loads(x) for x in (out / "per_image.jsonl").read_text().splitlines()]
    assert halves == rows and len(rows) == 18 and len({r["partial"] for r in rows}) > 1
    gathered = shapes_geneval(model, Protocol(shard=Shard(1, 2, gather=lambda mine: rows[:9] + mine), **kw))
    assert gathered == whole


def test_moving_average_is_trailing():
    from dgx.eval.plots import moving_average

    np.testing.assert_allclose(moving_average(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2), [1.0, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(moving_average(np.array([[0.0, 3.0, 6.0]]), 5), [[0.0, 1.5, 3.0]])


def test_reward_difference_pairs_runs_by_iteration(tmp_path):
    from dgx.eval.plots import plot_reward_difference, reward_difference

    def metrics(name: str, rewards: dict[int, float]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"iteration": i, "reward_mean": r}) + "\n" for i, r in rewards.items()))
        return path

    ref = metrics("ref.jsonl", {i: 0.1 * i for i in range(5)})
    other = metrics("other.jsonl", {i: 0.1 * i + 0.05 for i in (0, 1, 3, 4, 5)})  # a resumed run without iteration 2
    np.testing.assert_allclose(reward_difference(ref, other), [0.05] * 4)
    assert reward_difference(tmp_path / "missing.jsonl", other).size == 0
    assert plot_reward_difference({"a": [ref]}, tmp_path / "one.png") is None  # nothing to pair with
    assert plot_reward_difference({"a": [ref], "b": [other]}, tmp_path / "two.png").is_file()


RECORDED: dict = {}


def recording_eval(model, protocol, *, path=None, processor_path=None):
    RECORDED.update(path=path, processor_path=processor_path)
    return {"score": 1.0}


def no_model_eval(model, protocol):
    return {"score": 1.0}


def test_the_evaluation_models_come_from_the_config(tmp_path):
    from dgx.grpo.config import load
    from dgx.grpo.errors import ConfigError
    from dgx.grpo.runner import evaluate

    (tmp_path / "reg.yaml").write_text(
        "evaluations:\n  rec: {impl: 'test_eval:recording_eval'}\n  plain: {impl: 'test_eval:no_model_eval'}\n"
    )
    (tmp_path / "c.yaml").write_text("registry: reg.yaml\neval: {name: rec, path: det/folder, processor_path: clip}\n")
    abl = load(tmp_path / "c.yaml")
    parts = SimpleNamespace(model=None, cfg=abl.variants["default"], registry=abl.registry(), scorers=None)
    evaluate(parts, tmp_path / "out")
    assert RECORDED == {"path": "det/folder", "processor_path": "clip"}
    (tmp_path / "d.yaml").write_text("registry: reg.yaml\neval: {name: plain, path: det/folder}\n")
    with pytest.raises(ConfigError, match="eval.path: evaluation 'plain' takes no 'path' \\(it takes no arguments\\)"):
        load(tmp_path / "d.yaml")


def test_every_process_runs_the_busiest_ones_forward_batches(tiny_model):
    """Under a sharded transformer each forward pass gathers shards on every process, so a process with fewer images
    runs as many batches as the busiest one, on a throwaway image: 5 images over 2 processes in batches of 2 are
    shares of 2 and 3, 2 batches each; the spare batch's image is not returned, and the real ones are unchanged."""
    from dgx.eval.benchmarks import Shard, generate

    prompts = ["a red circle", "a blue square"]
    shards = [Shard(i, 2) for i in range(2)]
    assert [len(s.part(5)) for s in shards] == [2, 3] and [s.batches(5, 2) for s in shards] == [2, 2]
    calls = tiny_model.calls
    padded = generate(tiny_model, prompts, 2, 1.0, seed=0, batch=2, batches=shards[0].batches(5, 2))
    assert tiny_model.calls - calls == 2 * 2  # 2 batches of 2 ODE steps
    assert padded.shape[0] == 2
    torch.testing.assert_close(padded, generate(tiny_model, prompts, 2, 1.0, seed=0, batch=2))
