"""Benchmark scoring on known inputs, tables, the GenEval suite builder."""

import json
from collections import Counter

import numpy as np
import pytest
from dgx.eval.geneval_prompts import build_suite
from dgx.eval.tables import aggregate, write_tables
from dgx.rewards.geneval import summarize


def test_geneval_suite_is_built_like_genevals():
    suite = build_suite()
    tags = Counter(m["tag"] for m in suite)
    assert tags["single_object"] == 80 and set(tags) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
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
    res = {"base": [{"overall": 0.4}, {"overall": 0.5}], "dense": [{"overall": 0.6, "x": 1.0}, {"overall": 0.8, "x": 3.0}]}
    agg = aggregate(res)
    assert agg["dense"]["overall"] == pytest.approx((0.7, 0.1, 2)) and agg["dense"]["x"][0] == 2.0
    md = write_tables(res, tmp_path / "t", ["overall", "x"])
    assert "| dense | 0.700 ± 0.100 | 2.000 ± 1.000 |" in md and "| base | 0.450 ± 0.050 |  |" in md
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "method,overall_mean,overall_std,x_mean,x_std,seeds"


def test_reward_benchmark_ocr_accuracy_from_recognitions(tmp_path, tiny_model, monkeypatch):
    """OCR accuracy of a benchmark from fixed recognitions (engine replaced by a lookup)."""
    from dgx.eval.benchmarks import reward_benchmark
    from dgx.rewards.ocr import OCRReward

    recognized = iter(["hello", "hallo", ""])
    reward = OCRReward()
    monkeypatch.setattr(reward, "recognize", lambda img: next(recognized))
    meta = [{"prompt": 'a sign "hello"'}] * 3
    s = reward_benchmark(tiny_model, reward, meta, steps=2, guidance=1.0, out=tmp_path)
    assert s["ocr"] == pytest.approx((1.0 + 0.8 + 0.0) / 3)
    rows = [json.loads(x) for x in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert [r["ocr"] for r in rows] == pytest.approx([1.0, 0.8, 0.0])


def test_shapes_geneval_benchmark_writes_per_image(tmp_path, tiny_model):
    from dgx.eval.benchmarks import shapes_geneval

    s = shapes_geneval(tiny_model, steps=2, guidance=1.0, images_per_prompt=2, max_prompts=3, out=tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "per_image.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and set(s) >= {"overall"}
    per_tag = {}
    for r in rows:
        per_tag.setdefault(r["tag"], []).append(r["correct"])
    assert s["overall"] == pytest.approx(np.mean([np.mean(v) for v in per_tag.values()]))
