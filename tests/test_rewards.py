"""Reward definitions: GenEval rules, OCR formula, PickScore, credit wrappers."""

import numpy as np
import pytest
import torch
from dgx.rewards.credit import coca, coca_weights, dense_gain, dense_latent, sparse_credit
from dgx.rewards.geneval import Detection, evaluate, filter_detections, relative_position, summarize
from dgx.rewards.ocr import OCRReward, RewardError, ocr_accuracy, target_text
from dgx.sampler import UniformNoise, ode_step, rollout, sde_step
from dgx.sampler.model import Conditioning
from dgx_test_helpers import tiny_clip

IMG = np.zeros((32, 32, 3), np.uint8)


def det(cls, box, conf=0.95, color=None):
    return Detection(cls, tuple(float(v) for v in box), conf, None, color)


def meta(tag, include, exclude=()):
    return {"tag": tag, "prompt": "", "include": include, "exclude": list(exclude)}


L, R, U, D = (0, 10, 8, 18), (20, 10, 28, 18), (10, 0, 18, 8), (10, 20, 18, 28)  # left, right, up, down boxes

RULES = [
    ("single ok", meta("single_object", [{"class": "circle", "count": 1}]), [det("circle", L, 0.5)], True, 1.0, []),
    (
        "single below 0.3",
        meta("single_object", [{"class": "circle", "count": 1}]),
        [det("circle", L, 0.3)],
        False,
        0.0,
        ["count"],
    ),
    (
        "two_object missing",
        meta("two_object", [{"class": "circle", "count": 1}, {"class": "square", "count": 1}]),
        [det("circle", L)],
        False,
        0.5,
        ["count"],
    ),
    (
        "counting ok",
        meta("counting", [{"class": "circle", "count": 3}], [{"class": "circle", "count": 4}]),
        [det("circle", L), det("circle", R), det("circle", U)],
        True,
        1.0,
        [],
    ),
    (
        "counting 0.9 threshold",
        meta("counting", [{"class": "circle", "count": 3}], [{"class": "circle", "count": 4}]),
        [det("circle", L), det("circle", R), det("circle", U, 0.85)],
        False,
        (2 / 3 + 1) / 2,
        ["count"],
    ),
    (
        "counting exclude",
        meta("counting", [{"class": "circle", "count": 3}], [{"class": "circle", "count": 4}]),
        [det("circle", b) for b in (L, R, U, D)],
        False,
        0.5,
        ["exclude"],
    ),
    (
        "colors ok",
        meta("colors", [{"class": "circle", "count": 1, "color": "red"}]),
        [det("circle", L, color="red")],
        True,
        1.0,
        [],
    ),
    (
        "colors wrong",
        meta("colors", [{"class": "circle", "count": 1, "color": "red"}]),
        [det("circle", L, color="blue")],
        False,
        0.5,
        ["colour"],
    ),
    (
        "colors top-k by confidence",
        meta("colors", [{"class": "circle", "count": 1, "color": "red"}]),
        [det("circle", L, 0.6, "red"), det("circle", R, 0.9, "blue")],
        False,
        0.5,
        ["colour"],
    ),
    (
        "position left ok",
        meta(
            "position", [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]
        ),
        [det("square", R), det("circle", L)],
        True,
        1.0,
        [],
    ),
    (
        "position left wrong",
        meta(
            "position", [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}]
        ),
        [det("square", L), det("circle", R)],
        False,
        2 / 3,
        ["position"],
    ),
    (
        "position above ok",
        meta("position", [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["above", 0]}]),
        [det("square", D), det("circle", U)],
        True,
        1.0,
        [],
    ),
    (
        "position no relation (overlap)",
        meta("position", [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["below", 0]}]),
        [det("square", (10, 10, 20, 20)), det("circle", (10, 11, 20, 21))],
        False,
        2 / 3,
        ["position"],
    ),
    (
        "position target missing",
        meta("position", [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["below", 0]}]),
        [det("circle", D)],
        False,
        1 / 3,
        ["count", "position"],
    ),
    (
        "color_attr ok",
        meta(
            "color_attr",
            [{"class": "circle", "count": 1, "color": "red"}, {"class": "square", "count": 1, "color": "blue"}],
        ),
        [det("circle", L, color="red"), det("square", R, color="blue")],
        True,
        1.0,
        [],
    ),
    (
        "color_attr swapped",
        meta(
            "color_attr",
            [{"class": "circle", "count": 1, "color": "red"}, {"class": "square", "count": 1, "color": "blue"}],
        ),
        [det("circle", L, color="blue"), det("square", R, color="red")],
        False,
        0.5,
        ["colour", "colour"],
    ),
]


@pytest.mark.parametrize("case,m,dets,correct,partial,kinds", RULES, ids=[r[0] for r in RULES])
def test_geneval_rules(case, m, dets, correct, partial, kinds):
    v = evaluate(IMG, dets, m)
    assert v.correct is correct, v.reasons
    assert v.partial == pytest.approx(partial)
    assert v.kinds == kinds and len(v.reasons) == len(kinds), v.reasons


def test_relative_position_numbers_and_filtering():
    # offset (-20, 0), shrink 0.1 * (10 + 10) = 2 -> (-18, 0) / 20 -> dx = -0.9: left of only
    assert relative_position((0, 0, 10, 10), (20, 0, 30, 10)) == {"left of"}
    # diagonal: shrunk (15.5, 15.5) / norm(17.7) = 0.88 each -> right of and below
    assert relative_position((25, 25, 30, 30), (10, 10, 15, 15)) == {"right of", "below"}
    assert relative_position((0, 0, 10, 10), (1, 1, 11, 11)) == set()
    many = [det("circle", L, 0.5 + i / 100) for i in range(20)]
    kept = filter_detections(many, "single_object")["circle"]
    assert len(kept) == 16 and kept[0].confidence == pytest.approx(0.69)
    assert summarize(["a", "a", "b"], [True, False, True]) == {"a": 0.5, "b": 1.0, "overall": 0.75}


def test_shapes_detector_on_rendered_images():
    from dgx.rewards.shapes import prompts, render
    from dgx.rewards.shapes.detector import ShapesDetector

    rng, detector = np.random.default_rng(1), ShapesDetector()
    per_tag = {}
    for m in prompts.all_prompts()[::3]:
        img, _ = render.render_prompt(m, rng)
        per_tag.setdefault(m["tag"], []).append(evaluate(img, detector(img), m).correct)
    assert set(per_tag) == set(prompts.TAGS)
    for tag, v in per_tag.items():
        assert np.mean(v) >= 0.99, (tag, np.mean(v))


def test_shapes_detector_batch_matches_one_image_at_a_time():
    """detect_batch equals a plain per-image reference (nearest colour by subtraction, one 2D labelling
    per colour): no component joins across images, none is lost at image borders."""
    from dgx.rewards.shapes import prompts, render
    from dgx.rewards.shapes.detector import ShapesDetector
    from scipy import ndimage

    detector, rng = ShapesDetector(), np.random.default_rng(3)
    rendered = [render.render_prompt(m, rng)[0] for m in prompts.all_prompts()[::40]]
    size = rendered[0].shape[0]
    colors = detector.colors.astype(np.uint8)
    blocks = (
        colors[rng.integers(len(colors), size=(6, size // 4, size // 4))].repeat(4, 1).repeat(4, 2)
    )  # edge-to-edge blobs
    noisy = np.clip(np.stack(rendered[:6]).astype(int) + rng.integers(-90, 90, (6, size, size, 3)), 0, 255).astype(
        np.uint8
    )
    images = np.concatenate([np.stack(rendered), blocks, noisy])

    def reference(image):
        lab = ((image[..., None, :].astype(np.float32) - detector.colors) ** 2).sum(-1).argmin(-1)
        out = []
        for ci, cname in enumerate(detector.names):
            comps, n = ndimage.label(lab == ci)
            out += [
                detector._classify(comps == k, cname)
                for k in range(1, n + 1)
                if (comps == k).sum() >= detector.min_area
            ]
        return out

    def key(ds):
        return [(d.cls, d.color, d.box, round(d.confidence, 9), d.mask.tobytes()) for d in ds]

    batch = detector.detect_batch(images)
    assert sum(map(len, batch)) > 3 * len(images)
    assert [key(ds) for ds in batch] == [key(reference(im)) for im in images] == [key(detector(im)) for im in images]


def test_soft_credit_scores_class_beliefs_and_leaves_verdicts_alone():
    two = meta("counting", [{"class": "circle", "count": 2}], [{"class": "circle", "count": 3}])
    dets = [
        Detection("square", L, 0.6, None, None, {"circle": 0.4, "square": 0.6}),
        Detection("circle", R, 0.95, None, None, {"circle": 0.8, "square": 0.2}),
        det("circle", U, 0.5),
    ]  # no scores: its confidence counts for its own class
    hard, soft = evaluate(IMG, dets, two), evaluate(IMG, dets, two, soft=True)
    assert hard.correct is soft.correct is False and hard.reasons == soft.reasons
    assert hard.partial == pytest.approx((1 / 2 + 1) / 2)  # one circle above 0.9; exclude holds
    assert soft.partial == pytest.approx(((0.8 + 0.5) / 2 + 1) / 2)  # top-2 circle beliefs 0.8, 0.5

    from dgx.rewards.geneval_reward import shapes_geneval
    from dgx.rewards.shapes import render
    from dgx.rewards.shapes.detector import ShapesDetector

    sq = render.Shape("square", "red", 16, 16, 10)
    crisp = render.draw([sq])
    round_ = crisp.copy()
    round_[render.shape_mask(sq) & ~render.shape_mask(render.Shape("circle", "red", 16, 16, 11))] = render.BACKGROUND
    d_crisp, d_round = (ShapesDetector()(im)[0] for im in (crisp, round_))
    assert (d_crisp.cls, d_round.cls) == ("square", "circle")  # the strict rule: 1 vs 0
    s_crisp, s_round = d_crisp.scores, d_round.scores
    assert s_crisp["square"] > 0.65 > s_round["square"] > 0.3 and s_round["circle"] > s_crisp["circle"]
    m = [meta("single_object", [{"class": "square", "count": 1}])] * 2
    x = torch.from_numpy(np.stack([crisp, round_])).permute(0, 3, 1, 2).float() / 255
    r = shapes_geneval(soft=True)(x, ["", ""], m)
    assert r.tolist() == pytest.approx([s_crisp["square"], s_round["square"]], abs=1e-6)
    with pytest.raises(RewardError, match="partial"):
        shapes_geneval(partial=False, soft=True)


def test_ocr_formula():
    assert target_text('a sign saying "Hello World" on a wall') == "Hello World"
    assert target_text("no quotes") is None
    assert ocr_accuracy("hello world", "Hello World") == 1.0  # exact after space/case folding
    assert ocr_accuracy("xx helloworld yy", "hello world") == 1.0  # substring
    assert ocr_accuracy("hallo", "hello") == pytest.approx(0.8)  # 1 edit of 5
    assert ocr_accuracy("completely different text", "abc") == 0.0  # distance capped at len
    assert ocr_accuracy("", "hello") == 0.0  # recognition failure
    with pytest.raises(RewardError, match="no text in double quotes"):
        OCRReward()(torch.zeros(1, 3, 8, 8), ["a plain prompt"])
    assert OCRReward(missing_target="zero")(torch.zeros(1, 3, 8, 8), ["a plain prompt"]).tolist() == [0.0]


def test_ocr_real_recognition():
    from PIL import Image, ImageDraw, ImageFont

    def render(text):
        im = Image.new("RGB", (320, 96), "white")
        ImageDraw.Draw(im).text((12, 24), text, fill="black", font=ImageFont.load_default(size=40))
        return np.array(im)

    imgs = (
        torch.from_numpy(np.stack([render("hello world"), render("hallo"), render("")])).permute(0, 3, 1, 2).float()
        / 255
    )
    prompts = ['a sign "Hello World"', 'a sign "hello"', 'a sign "hello"']
    assert OCRReward()(imgs, prompts).tolist() == pytest.approx([1.0, 0.8, 0.0])
    # rapidocr's own settings (angle classifier, shorter side scaled to 736) read the same text here
    rapid = OCRReward(params={"Global.use_cls": True, "Det.limit_type": "min", "Det.limit_side_len": 736})
    assert rapid(imgs, prompts).tolist() == pytest.approx([1.0, 0.8, 0.0])


def test_ocr_in_worker_processes_reads_the_same_text():
    """A pool of 2 single-threaded rapidocr processes gives exactly the in-process rewards (an unquoted prompt
    scored 0 without being read)."""
    from PIL import Image, ImageDraw, ImageFont

    words = ["open", "hello world", "monday", "main street", "exit"]
    rng = np.random.default_rng(0)
    imgs = []
    for w in words:
        im = Image.new("RGB", (256, 128), tuple(int(x) for x in rng.integers(170, 255, 3)))
        ImageDraw.Draw(im).text((10, 40), w, fill="black", font=ImageFont.load_default(size=36))
        imgs.append(np.array(im))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    prompts = ['a sign "open"', 'a sign "hello world"', "no quotes", 'a sign "main st"', 'a sign "exit"']
    serial = OCRReward(missing_target="zero")(x, prompts)
    pooled = OCRReward(missing_target="zero", workers=2)
    assert torch.equal(pooled(x, prompts), serial) and serial[2] == 0 and serial[0] == 1
    assert torch.equal(pooled(x.flip(0), prompts[::-1]), serial.flip(0))  # the pool is kept and reused
    pooled._pool.shutdown()
    with pytest.raises(RewardError, match="workers must be a whole number"):
        OCRReward(workers=-1)


def test_ocr_engine_runs_with_flow_grpos_settings(monkeypatch):
    """rapidocr is built with Flow-GRPO's PaddleOCR settings (no angle classifier, detector side <= 960), a
    reward's params over them."""
    import rapidocr
    from dgx.rewards.ocr import FLOW_GRPO_SETTINGS, rapidocr_engine

    seen = []
    monkeypatch.setattr(rapidocr, "RapidOCR", lambda params: seen.append(params))
    rapidocr_engine()
    rapidocr_engine({"Det.limit_side_len": 640})
    assert FLOW_GRPO_SETTINGS == {"Global.use_cls": False, "Det.limit_type": "max", "Det.limit_side_len": 960}
    assert seen[0] == {"Global.log_level": "error", **FLOW_GRPO_SETTINGS}
    assert seen[1]["Det.limit_side_len"] == 640 and seen[1]["Global.use_cls"] is False
    with pytest.raises(RewardError, match="engine 'paddleocr' takes none"):
        OCRReward(engine="paddleocr", params={"Det.limit_side_len": 640})


def test_pickscore_matches_hand_computation(tmp_path):
    from dgx.rewards.pickscore import PickScore
    from dgx.sampler.tiny import word_tokenizer
    from transformers import CLIPImageProcessor, CLIPProcessor

    model = tiny_clip()
    model.save_pretrained(tmp_path / "model")
    proc = CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
        word_tokenizer(["a", "red", "circle", "blue"], 16),
    )
    proc.save_pretrained(tmp_path / "proc")
    images = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    prompts = ["a red circle", "a blue circle", "red"]
    got = PickScore(str(tmp_path / "model"), str(tmp_path / "proc"), batch_size=2, preprocess="processor")(
        images, prompts
    )
    on_device = PickScore(str(tmp_path / "model"), str(tmp_path / "proc"), batch_size=2)(images, prompts)
    px = proc(images=list((images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()), return_tensors="pt")[
        "pixel_values"
    ]
    tx = proc(text=prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
        txt = model.text_projection(model.text_model(**tx).pooler_output)
    want = model.logit_scale.exp() * torch.nn.functional.cosine_similarity(img, txt)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # the processor's path: PickScore's own numbers
    # the default, on the device (clip_pixels): noise images resized 20 -> 16 px move the score by at most 0.5%
    torch.testing.assert_close(on_device, want, atol=0, rtol=5e-3)


def test_aesthetic_matches_hand_computation(tmp_path):
    from dgx.rewards.aesthetic import Aesthetic, AestheticHead
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor

    model = tiny_clip()
    model.save_pretrained(tmp_path / "clip")
    proc = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    proc.save_pretrained(tmp_path / "clip")
    head = AestheticHead(8).eval()
    save_file(head.state_dict(), tmp_path / "head.safetensors")
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    got = Aesthetic(str(tmp_path / "clip"), str(tmp_path / "head.safetensors"), preprocess="processor")(images)
    on_device = Aesthetic(str(tmp_path / "clip"), str(tmp_path / "head.safetensors"))(images)
    px = proc(images=list((images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()), return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        emb = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
        want = head(emb / emb.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(on_device, want, atol=0, rtol=5e-3)
    with pytest.raises(Exception, match="head_path"):
        Aesthetic(str(tmp_path / "clip"), str(tmp_path / "missing.pth"))(images)


def test_pickscore_offline_error_names_model():
    from dgx.rewards.base import RewardError
    from dgx.rewards.pickscore import PickScore

    with pytest.raises(RewardError, match="no/such-model.*local folder"):
        PickScore("no/such-model", "no/such-model")(torch.zeros(1, 3, 8, 8), ["x"])


class LinearFlow:
    """Closed-form velocity of Gaussian data; decode = identity; so rewards are exact functions of latents."""

    def velocity(self, x, t, cond, guidance=1.0):
        t = t.view(-1, 1)
        var = (1 - t) ** 2 * 0.25 + t**2
        return t / var * x - (1 - t) * 0.25 / var * x

    def init_latents(self, n, generator):
        return torch.randn((n, 3), generator=generator)

    def grid(self, steps):
        return torch.linspace(1, 0, steps + 1)

    def decode(self, latents):
        return latents


def latent_sum(images, prompts, metadata=None):
    return images.sum(1)


def _traj(step=sde_step, schedule=UniformNoise(0.7), n=4, T=6):
    cond = Conditioning(torch.zeros(n, 1, 1), torch.zeros(n, 1))
    return rollout(LinearFlow(), cond, [""] * n, T, step, schedule, torch.Generator().manual_seed(0))


def test_dense_gains_telescope_and_vanish_on_ode():
    traj = _traj()
    for n in ("t", 1, 2):
        c = dense_gain(LinearFlow(), traj, latent_sum, ode_steps=n, chunk=5)
        assert c.per_step and c.signal.shape == (4, 6)
        torch.testing.assert_close(c.signal.sum(1), c.latent_rewards[:, -1] - c.latent_rewards[:, 0], atol=1e-6, rtol=0)
        torch.testing.assert_close(c.terminal, traj.latents[:, -1].sum(1))
    ode = _traj(ode_step, None)
    c = dense_gain(LinearFlow(), ode, latent_sum, ode_steps="t")
    assert c.signal.abs().max() < 1e-5


def tp_grpo_reference(R: torch.Tensor, eta: float) -> torch.Tensor:
    """TP-GRPO's process rewards as its authors' training script computes them with its demo config's defaults
    (YunzeTong/TurningPoint-GRPO scripts/my_train_sd3_fast_with_op3.py: take_delta_global_as_main, use_delta_global,
    apply_first_step_bonus), transcribed loop by loop: R_0 the ODE reward, R_t after t noisy steps."""
    sequence = [R[:, k] for k in range(R.shape[1])]
    delta_global = sequence[-1] - sequence[0]
    d_list = [sequence[t] - sequence[t - 1] for t in range(1, len(sequence))]
    s_list = [torch.sign(d) * torch.sign(delta_global) for d in d_list]
    out = []
    for t in range(len(s_list)):
        indicator = (s_list[0] > 0).float() if t == 0 else ((s_list[t - 1] < 0).float() * (s_list[t] > 0).float())
        out.append(delta_global + eta * indicator * d_list[t])
    return torch.stack(out, dim=1)


def test_turning_point_credit_matches_tp_grpos_script():
    from dgx.rewards.credit import turning_point

    def wavy(images, prompts, metadata=None):  # a reward whose latent rewards go up and down along a trajectory
        return torch.sin(5 * images.sum(1))

    traj = _traj(n=16, T=8)
    c = turning_point(LinearFlow(), traj, wavy, eta=0.5)
    assert c.per_step and c.signal.shape == (16, 8)
    torch.testing.assert_close(c.signal, tp_grpo_reference(c.latent_rewards, 0.5))
    d = c.latent_rewards[:, 1:] - c.latent_rewards[:, :-1]
    total = c.latent_rewards[:, -1] - c.latent_rewards[:, 0]
    assert (c.signal != total[:, None]).any()  # some turning points were found
    assert ((c.signal - total[:, None]).abs() <= 0.5 * d.abs() + 1e-7).all()


def test_dense_latent_sparse_and_coca_values():
    traj = _traj()
    dl = dense_latent(LinearFlow(), traj, latent_sum, ode_steps=1)
    # n = 1 is the x0 jump: xhat_k = x_k - t_k v(x_k, t_k)
    k = 2
    t = traj.grid[k].expand(4)
    xhat = traj.latents[:, k] - traj.grid[k] * LinearFlow().velocity(traj.latents[:, k], t, None)
    torch.testing.assert_close(dl.signal[:, k - 1], xhat.sum(1))
    sp = sparse_credit(LinearFlow(), traj, latent_sum)
    assert (
        not sp.per_step
        and torch.equal(sp.signal, sp.terminal[:, None].expand(4, 6))
        and torch.equal(sp.weights, torch.ones(4, 6))
    )
    lat = torch.tensor([[[0.0], [3.0], [3.0], [4.0]]])  # step changes 3, 0, 1 -> weights 3 * (3, 0, 1) / 4
    torch.testing.assert_close(coca_weights(lat), torch.tensor([[2.25, 0.0, 0.75]]))
    cc = coca(LinearFlow(), traj, latent_sum)
    torch.testing.assert_close(cc.weights.mean(1), torch.ones(4))
    torch.testing.assert_close(cc.terminal, sp.terminal)


def test_hf_geneval_detector_and_clip_colors(tmp_path):
    """Real-image GenEval path on a tiny random Mask2Former and a tiny CLIP (same classes as the real ones)."""
    from dgx.rewards.geneval import COLORS
    from dgx.rewards.geneval_hf import TEMPLATES, ClipColorClassifier, HFDetector
    from dgx.sampler.tiny import word_tokenizer
    from transformers import (
        CLIPImageProcessor,
        CLIPProcessor,
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    cfg = Mask2FormerConfig(
        backbone_config=SwinConfig(
            image_size=64,
            patch_size=4,
            embed_dim=8,
            depths=[1] * 4,
            num_heads=[1] * 4,
            window_size=2,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        dim_feedforward=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        num_queries=5,
        id2label={0: "circle", 1: "square"},
        label2id={"circle": 0, "square": 1},
    )
    Mask2FormerForUniversalSegmentation(cfg).eval().save_pretrained(tmp_path / "det")
    Mask2FormerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "det")
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    dets = HFDetector(str(tmp_path / "det"))(image)
    assert 0 < len(dets) <= 5
    # a batch of 5 in forward passes of 2 finds what one image at a time finds
    images = np.random.default_rng(1).integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    det = HFDetector(str(tmp_path / "det"), batch_size=2)
    one_by_one, batched = [det(im) for im in images], det.detect_batch(images)
    assert [[d.cls for d in x] for x in batched] == [[d.cls for d in x] for x in one_by_one]
    for x, y in zip(batched, one_by_one):
        for a, b in zip(x, y):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-5) and (a.mask != b.mask).sum() <= 2
    for d in dets:
        ys, xs = np.nonzero(d.mask)
        assert d.cls in ("circle", "square") and 0 <= d.confidence <= 1
        assert d.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)

    clip = tiny_clip()
    clip.save_pretrained(tmp_path / "clip")
    words = sorted(
        {w for c in COLORS for t in TEMPLATES for w in t.format(c=c, obj="circle").replace("-", " ").split()}
        | {"colored"}
    )
    CLIPProcessor(
        CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}), word_tokenizer(words, 16)
    ).save_pretrained(tmp_path / "clip")
    mask = np.zeros((48, 48), bool)
    mask[10:20, 5:15] = True
    obj = Detection("circle", (5.0, 10.0, 15.0, 20.0), 0.9, mask)
    crop = ClipColorClassifier.crop(np.full((48, 48, 3), 200, np.uint8), obj)
    assert crop.shape == (10, 10, 3) and (crop == 200).all()
    mask[12, 7] = False
    assert (ClipColorClassifier.crop(np.full((48, 48, 3), 200, np.uint8), obj)[2, 2] == 0x99).all()
    cc = ClipColorClassifier(str(tmp_path / "clip"))
    got = cc(image, [obj])
    txt = cc.text_embeddings("circle")
    assert txt.shape[0] == 10 and torch.allclose(txt.norm(dim=1), torch.ones(10))
    px = cc.processor(images=[cc.crop(image, obj)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        emb = clip.visual_projection(clip.vision_model(pixel_values=px).pooler_output)[0]
    assert got == [COLORS[int((emb / emb.norm() @ txt.T).argmax())]]


def test_weighted_reward_from_config(tmp_path):
    """A reward made of reward nodes, each with its own arguments, built through the registry."""
    from dgx.grpo.build import build_reward
    from dgx.grpo.config import load
    from dgx.grpo.errors import ConfigError

    (tmp_path / "reg.yaml").write_text(
        "rewards:\n  brightness: {impl: 'dgx_test_helpers:Brightness', description: t}\n"
    )
    (tmp_path / "c.yaml").write_text(
        "registry: reg.yaml\nreward: {name: weighted, rewards: {b: brightness, rules: {name: geneval_shapes, "
        "partial: false}}, weights: {b: 2.0, rules: 0.5}}\n"
    )
    abl = load(tmp_path / "c.yaml")
    reward = build_reward(abl.variants["default"].reward, abl.registry())
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    meta = [
        {
            "tag": "single_object",
            "prompt": "a photo of a circle",
            "include": [{"class": "circle", "count": 1}],
            "exclude": [],
        }
    ] * 2
    rules = reward.rewards["rules"]
    assert rules.partial is False  # the part's own argument reached it (its default is True)
    want = 2.0 * (images[:, 0] - images[:, 2]).flatten(1).mean(1) * 10 + 0.5 * rules(images, ["x"] * 2, meta)
    torch.testing.assert_close(reward(images, ["x"] * 2, meta), want)
    assert reward.name == "2*b+0.5*rules"
    (tmp_path / "d.yaml").write_text(
        "registry: reg.yaml\nreward: {name: weighted, rewards: {b: brightness}, weights: {c: 1}}\n"
    )
    with pytest.raises(ConfigError, match="rewards \\['b'\\] and weights \\['c'\\] must name the same labels"):
        build_reward(load(tmp_path / "d.yaml").variants["default"].reward, abl.registry())


def test_imagereward_missing_package_says_how_to_install():
    import importlib.util

    from dgx.rewards.base import RewardError
    from dgx.rewards.imagereward import ImageReward

    if importlib.util.find_spec("ImageReward") is not None:
        pytest.skip("ImageReward is installed")
    with pytest.raises(RewardError, match=r"pip install dgx-rewards\[imagereward\]"):
        ImageReward()(torch.zeros(1, 3, 8, 8), ["x"])


def test_mmdet_detector_outputs_become_detections(monkeypatch):
    """The mmdetection backend on the two result formats of mmdet's inference_detector (2.x tuples of
    per-class arrays, 3.x pred_instances), through a recording stand-in for mmdet.apis: mmdet and mmcv
    do not install beside this torch, so the real package is not exercised here."""
    import sys
    import types

    from dgx.rewards.geneval_mmdet import MMDetDetector

    mask = np.zeros((32, 32), bool)
    mask[4:12, 4:12] = True
    seen = {}

    def inference_v2(model, img):
        seen["img"] = img
        return ([np.array([[4, 4, 12, 12, 0.95], [20, 20, 28, 28, 0.2]]), np.zeros((0, 5))], [[mask, ~mask], []])

    apis = types.SimpleNamespace(
        init_detector=lambda cfg, ckpt, device: types.SimpleNamespace(CLASSES=("cat", "dog")),
        inference_detector=inference_v2,
    )
    monkeypatch.setitem(sys.modules, "mmdet", types.ModuleType("mmdet"))
    monkeypatch.setitem(sys.modules, "mmdet.apis", apis)
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 200  # red in RGB -> mmdet gets BGR
    dets = MMDetDetector("cfg.py", "ckpt.pth")(img)
    assert seen["img"][0, 0].tolist() == [0, 0, 200]
    assert [(d.cls, d.box, d.confidence) for d in dets] == [
        ("cat", (4.0, 4.0, 12.0, 12.0), 0.95),
        ("cat", (20.0, 20.0, 28.0, 28.0), 0.2),
    ]
    assert dets[0].mask.sum() == 64 and dets[1].mask.sum() == 32 * 32 - 64
    meta = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "exclude": []}
    assert (
        evaluate(img, dets, meta).correct
        and not evaluate(img, dets, {**meta, "tag": "counting", "include": [{"class": "cat", "count": 2}]}).correct
    )

    inst = types.SimpleNamespace(
        bboxes=torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
        scores=torch.tensor([0.5]),
        labels=torch.tensor([1]),
        masks=torch.ones(1, 32, 32, dtype=torch.bool),
    )
    apis.init_detector = lambda cfg, ckpt, device: types.SimpleNamespace(dataset_meta={"classes": ("cat", "dog")})
    apis.inference_detector = lambda model, img: types.SimpleNamespace(pred_instances=inst)
    (d,) = MMDetDetector("cfg.py", "ckpt.pth")(img)
    assert (d.cls, d.box, d.confidence, d.mask.all()) == ("dog", (1.0, 2.0, 3.0, 4.0), 0.5, True)


def test_mmdet_missing_package_error(monkeypatch):
    import sys

    from dgx.rewards.geneval_mmdet import MMDetDetector, mmdet_geneval

    monkeypatch.setitem(sys.modules, "mmdet", None)
    monkeypatch.setitem(sys.modules, "mmdet.apis", None)
    with pytest.raises(RewardError, match="mmdetection"):
        MMDetDetector("cfg.py", "ckpt.pth")._load()
    with pytest.raises(RewardError, match="reward.path"):
        mmdet_geneval()


def test_random_reward_is_a_fixed_coin_per_image():
    """The control reward: the same pixels always score the same (resume, several processes), other images or
    another salt score independently, and the values spread over [0, 1) like a uniform draw."""
    from dgx.rewards.control import RandomReward

    imgs = torch.rand(400, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    r = RandomReward()(imgs, [""] * len(imgs))
    assert torch.equal(r, RandomReward()(imgs.clone(), [""] * len(imgs)))
    assert ((r >= 0) & (r < 1)).all() and len(set(r.tolist())) == len(r)
    assert abs(r.mean().item() - 0.5) < 0.05 and abs(r.var().item() - 1 / 12) < 0.015
    other = RandomReward(salt="b")(imgs, [""] * len(imgs))
    assert abs(np.corrcoef(r.numpy(), other.numpy())[0, 1]) < 0.15
    ink = (imgs - 0.6).abs().flatten(1).mean(1)  # something the image shows: the score must not follow it
    assert abs(np.corrcoef(r.numpy(), ink.numpy())[0, 1]) < 0.15


@pytest.mark.parametrize("src,size", [(32, 32), (32, 224), (512, 224), (96, 64)])
def test_clip_pixels_match_the_processor(src, size):
    """CLIP preprocessing on tensors (the rewards' default) against CLIPImageProcessor on uint8 arrays: identical
    without a resize; with one, within 0.005 on average and 0.02 at most (normalised units; 1/255 of a pixel is
    about 0.015) on smooth images, within 0.005 on average on noise."""
    from dgx.rewards.base import to_uint8
    from dgx.rewards.clip_pixels import clip_pixels
    from transformers import CLIPImageProcessor

    ip = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    g = torch.Generator().manual_seed(src + size)
    smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8, generator=g), size=(src, src), mode="bilinear")
    noise = torch.rand(4, 3, src, src, generator=g)
    for images, worst in ((smooth, 0.02), (noise, None)):
        ref = ip(images=list(to_uint8(images)), return_tensors="pt")["pixel_values"]
        mine = clip_pixels(images, ip)
        d = (ref - mine).abs()
        assert mine.shape == ref.shape and d.mean() < 0.005
        if src == size:
            assert d.max() == 0
        elif worst is not None:
            assert d.max() < worst


def test_the_shapes_pickscore_scores_alike_either_preprocessing():
    from dgx.grpo.build import resolve_path
    from dgx.rewards.pickscore import PickScore

    path = resolve_path("pkg://dgx.rewards.shapes/pickscore")
    images = torch.nn.functional.interpolate(
        torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)), size=32
    )
    prompts = ["a photo of a red circle"] * 6
    a = PickScore(path, path, preprocess="tensor")(images, prompts)
    b = PickScore(path, path, preprocess="processor")(images, prompts)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_pipelined_scoring_gives_the_serial_rewards_bit_for_bit():
    """The shapes world (its generator and its PickScore): dense gains with decode and reward in a worker thread,
    overlapping the next chunk's ODE continuation, equal the serial ones exactly; and both equal the continuation of
    every latent at once (continue_ode) scored afterwards."""
    from dgx.grpo.build import build_reward, resolve_path
    from dgx.grpo.config import RewardConfig
    from dgx.grpo.registry import Registry
    from dgx.rewards.credit import score_latents
    from dgx.rewards.shapes.prompts import split
    from dgx.sampler import SD3Model, continue_ode, sample_generator

    model = SD3Model.from_pretrained(resolve_path("pkg://dgx.rewards.shapes/weights"), max_sequence_length=0)
    reward = build_reward(RewardConfig(name="shapes_pickscore"), Registry())
    metas = split("train")[:3]
    texts = [m["prompt"] for m in metas for _ in range(2)]
    traj = rollout(
        model,
        model.encode(texts),
        texts,
        6,
        sde_step,
        UniformNoise(0.7),
        [sample_generator(0, 0, s) for s in range(len(texts))],
        3.0,
    )
    serial = dense_gain(model, traj, reward, [m for m in metas for _ in range(2)], ode_steps="t", chunk=5)
    piped = dense_gain(model, traj, reward, [m for m in metas for _ in range(2)], ode_steps="t", chunk=5, pipeline=True)
    assert torch.equal(serial.latent_rewards, piped.latent_rewards) and torch.equal(serial.signal, piped.signal)
    xhat = continue_ode(model, traj, "t", chunk=5)
    flat = xhat.reshape(-1, *xhat.shape[2:])
    at_once = score_latents(model, reward, flat, [p for p in texts for _ in range(7)], None, 5, {}).view(6, 7)
    # other reward batches, other float32 rounding: 4.5e-5 relative on a PickScore of about 10 with transformers 5.25
    torch.testing.assert_close(at_once, serial.latent_rewards, atol=1e-4, rtol=1e-4)


def test_hps_loads_an_open_clip_checkpoint_into_clip_and_scores_the_cosine(tmp_path):
    """HPSv2 reads an HPS-style open_clip checkpoint (here a tiny CLIP's weights in open_clip's layout) into
    transformers' CLIPModel: its score is the cosine of that CLIP's own image and text embeddings. The paper-size
    architecture has open_clip ViT-H-14's parameter count (986,109,441, measured with open_clip:
    research/experiments/hps_reference), and the reference check there matches hpsv2's own score within 2e-7."""
    import json
    from pathlib import Path

    from dgx.rewards.architectures import CLIP_VIT_H_14, clip_model
    from dgx.rewards.hps import HPSv2, clip_to_open_clip, open_clip_to_clip
    from dgx.rewards.standins import hps
    from transformers import CLIPModel

    args = hps(tmp_path)["args"]
    clip = CLIPModel.from_pretrained(args["processor_path"]).eval()
    state = torch.load(args["path"])["state_dict"]
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in state and "text_projection" in state
    back = open_clip_to_clip(dict(state), 1, 1)
    assert back.keys() == clip.state_dict().keys() and all(torch.equal(back[k], clip.state_dict()[k]) for k in back)
    with pytest.raises(ValueError, match="no CLIP counterpart: \\['extra'\\]"):
        open_clip_to_clip({**state, "extra": torch.zeros(1)}, 1, 1)
    images = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    prompts = ["a red circle", "two blue squares", "a photo of a cat", "a sign that says hello"]
    reward = HPSv2(args["path"], processor_path=args["processor_path"], preprocess="processor")
    from dgx.rewards.pickscore import PickScore

    same = PickScore(args["processor_path"], args["processor_path"], preprocess="processor")
    with torch.no_grad():
        want = same(images, prompts) / clip.logit_scale.exp()
    torch.testing.assert_close(reward(images, prompts), want, rtol=1e-5, atol=1e-6)
    assert clip_to_open_clip(clip.state_dict(), 1, 1).keys() == state.keys()
    with torch.device("meta"):
        paper = clip_model(CLIP_VIT_H_14, 224)
    recorded = json.loads((Path(__file__).parents[1] / "research/experiments/hps_reference/result.json").read_text())
    assert sum(p.numel() for p in paper.parameters()) == recorded["parameters"]["open_clip ViT-H-14"] == 986_109_441
    assert recorded["open_clip_max_abs_difference"] < 1e-6


def test_per_reward_normalisation_keeps_each_rewards_credit_apart_and_normalises_each_in_its_groups(tmp_path):
    """A weighted reward with normalize: per_reward: the credit keeps each reward's terminal and dense gains (their
    weighted sum is the credit), and the objective normalises each reward within its prompt groups before the
    weighted sum, then standardises the sum over the batch (GDPO's decoupled normalisation)."""
    from dgx.grpo.advantages import normalize
    from dgx.grpo.build import build_reward
    from dgx.grpo.config import RewardConfig
    from dgx.grpo.contracts import _trajectory
    from dgx.grpo.loss import FlowGRPO
    from dgx.grpo.registry import Registry
    from dgx.rewards.ink import Ink

    node = RewardConfig(
        name="weighted",
        rewards={"ink": "ink", "dark": {"name": "ink", "background": 0.0}},
        weights={"ink": 2.0, "dark": 0.5},
        normalize="per_reward",
    )
    reward = build_reward(node, Registry())
    model, traj, metas = _trajectory(steps=3)
    c = dense_gain(model, traj, reward, metas, ode_steps="t")
    ink, dark = (dense_gain(model, traj, r, metas, ode_steps="t") for r in (Ink(), Ink(background=0.0)))
    assert set(c.parts) == {"ink", "dark"} and c.parts["ink"][2] == 2.0
    torch.testing.assert_close(c.parts["ink"][1], ink.signal)
    torch.testing.assert_close(c.parts["dark"][0], dark.terminal)
    torch.testing.assert_close(c.signal, 2.0 * ink.signal + 0.5 * dark.signal)
    assert (
        dense_gain(
            model,
            traj,
            build_reward(RewardConfig(**{**node.model_dump(), "normalize": "sum"}), Registry()),
            metas,
            ode_steps="t",
        ).parts
        is None
    )
    adv = FlowGRPO(adv_std="group").advantages(c.signal, c.weights, True, 2, [(x, w) for _, x, w in c.parts.values()])
    want = 2.0 * normalize(ink.signal, 2, "group") + 0.5 * normalize(dark.signal, 2, "group")
    want = ((want - want.mean(0)) / (want.std(0, correction=0) + 1e-4)).clamp(-5, 5)
    torch.testing.assert_close(adv, want)
    plain = FlowGRPO(adv_std="group").advantages(c.signal, c.weights, True, 2)
    assert not torch.allclose(adv, plain)  # not the normalisation of the weighted sum
