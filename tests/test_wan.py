"""Wan2.1 text-to-video through the model seam: the adapter's ODE against WanPipeline's own sampling, the SDE step's
log-probs on 5-D latents, the frame-wise reward rule, a DenseGRPO `dgx run` on the tiny stand-in with its evaluation's
videos, and the exported LoRA loaded by the pipeline."""

import json
import math

import pytest
import torch
import yaml
from dgx.eval.benchmarks import generate
from dgx.sampler import ode_step, rollout, sample_generator, sde_step
from dgx.sampler.schedules import UniformNoise
from dgx_test_helpers import dense_grpo_run


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    from dgx.sampler.architectures import wan_stand_in

    d = tmp_path_factory.mktemp("tiny_wan")
    wan_stand_in(d)
    return d


@pytest.fixture(scope="module")
def wan(wan_dir):
    from dgx.sampler.wan import WanModel

    return WanModel.from_pretrained(wan_dir, dtype=torch.float32, max_sequence_length=16, resolution=16, frames=5)


@pytest.mark.parametrize("guidance", [1.0, 4.5])
def test_ode_equals_the_wan_pipeline(wan, guidance):
    """The same noise, sigmas, timesteps (t x 1000) and CFG: WanPipeline's latents and videos within 1e-5; each
    decoded frame counts as a decoded image."""
    kw = dict(height=16, width=16, num_frames=5, num_inference_steps=4, max_sequence_length=16)
    kw |= dict(guidance_scale=guidance, negative_prompt="")
    ref = wan.pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="latent", **kw).frames
    traj = rollout(
        wan,
        wan.encode(["a red circle"]),
        ["a red circle"],
        4,
        ode_step,
        None,
        torch.Generator().manual_seed(0),
        guidance,
    )
    assert traj.latents.shape == (1, 5, 16, 2, 2, 2)  # (B, T + 1, C, latent frames, h, w)
    torch.testing.assert_close(traj.latents[:, -1], ref, atol=1e-5, rtol=1e-5)
    video = wan.pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt", **kw).frames
    decodes = wan.decodes
    torch.testing.assert_close(wan.decode(traj.latents[:, -1]), video, atol=1e-5, rtol=1e-5)
    assert video.shape == (1, 5, 3, 16, 16) and wan.decodes - decodes == 5


def test_sde_log_probs_on_video_latents(wan):
    """Each recorded log-prob is the mean over every element of the 5-D latent of log N(x_next; mean, std), and the
    update's recomputation at the recorded latents gives it again."""
    texts = ["a red circle", "two blue squares"]
    cond = wan.encode(texts)
    traj = rollout(wan, cond, texts, 3, sde_step, UniformNoise(0.7), [sample_generator(0, 0, s) for s in range(2)], 4.5)
    for i in range(2):
        x, x_next, t, t_next = traj.latents[:, i], traj.latents[:, i + 1], traj.grid[i], traj.grid[i + 1]
        with torch.no_grad():
            v = wan.velocity(x, t.expand(2), cond, 4.5)
        out = sde_step(x, v, t, t_next, UniformNoise(0.7)(torch.tensor([i]), traj.grid), x_next=x_next)
        std = out.std.view(-1, 1, 1, 1, 1)
        gauss = -((x_next - out.mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
        torch.testing.assert_close(traj.log_probs[:, i], gauss.mean((1, 2, 3, 4)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.log_prob, traj.log_probs[:, i], atol=1e-5, rtol=1e-5)


def test_a_video_scores_the_mean_of_its_sampled_frames():
    """dgx.rewards.base.frame_wise: 8 frames evenly spaced from first to last (all of a shorter video), each scored
    with its video's prompt; images pass through."""
    from dgx.rewards.base import CheckedReward, frame_wise
    from dgx_test_helpers import Brightness

    seen = []

    def score(images, prompts, metadata):
        seen.append(list(prompts))
        return images.flatten(1).mean(1)

    video = torch.arange(2 * 17, dtype=torch.float32).view(2, 17, 1, 1, 1).expand(2, 17, 3, 2, 2) / 40
    got = frame_wise(score, video, ["a", "b"], None)
    frames = torch.tensor([0, 2, 5, 7, 9, 11, 14, 16])  # round(linspace(0, 16, 8))
    torch.testing.assert_close(got, video[:, frames].flatten(1).mean(1))
    assert seen[-1] == ["a"] * 8 + ["b"] * 8
    short = video[:, :5]
    torch.testing.assert_close(frame_wise(score, short, ["a", "b"]), short.flatten(1).mean(1))
    images = video[:, 0]
    torch.testing.assert_close(frame_wise(score, images, ["a", "b"]), images.flatten(1).mean(1))
    reward = CheckedReward(Brightness())  # how a run builds its reward: frame-wise on videos
    torch.testing.assert_close(
        reward(short, ["a", "b"]), torch.stack([Brightness()(v, ["a"] * 5) for v in short]).mean(1)
    )


def test_dense_grpo_run_writes_videos_and_the_exported_lora_loads_into_the_pipeline(tmp_path, wan_dir):
    """Two DenseGRPO iterations with `dgx run` on the stand-in (CPU), its evaluation writing animated WebP samples
    and frame grids; the run's LoRA, exported as `dgx push` does, loads with WanPipeline.load_lora_weights and gives
    the run's videos."""
    from dgx.grpo.adapter import load_adapter
    from dgx.grpo.config import RunConfig
    from dgx.grpo.hub import export_run
    from dgx.sampler.wan import WanModel
    from diffusers import WanPipeline
    from PIL import Image

    node = {"name": "wan", "path": str(wan_dir), "resolution": 16, "frames": 5, "max_sequence_length": 16}
    run = dense_grpo_run(tmp_path, {**node, "dtype": "float32"}, 4.5)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["decoded_images"] % 5 == 0 and rows[0]["decoded_images"] >= 4 * 5  # frames, 5 a video
    webp = sorted((run / "eval" / "samples").glob("*.webp"))
    assert webp and Image.open(webp[0]).n_frames == 5
    assert Image.open(webp[0].with_suffix(".png")).size == (5 * 16, 16)  # the frame grid

    export_run(run, tmp_path / "export", "me/tiny-wan")
    assert "WanPipeline" in (tmp_path / "export" / "README.md").read_text()
    pipe = WanPipeline.from_pretrained(wan_dir)
    before = generate(WanModel(pipe, 16, resolution=16, frames=5), ["a red circle"], 3, 4.5, seed=3)
    pipe.load_lora_weights(tmp_path / "export")
    got = generate(WanModel(pipe, 16, resolution=16, frames=5), ["a red circle"], 3, 4.5, seed=3)
    cfg = RunConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text()))
    trained = WanModel.from_pretrained(wan_dir, dtype=torch.float32, max_sequence_length=16, resolution=16, frames=5)
    load_adapter(trained, cfg, run)
    torch.testing.assert_close(got, generate(trained, ["a red circle"], 3, 4.5, seed=3), atol=1e-5, rtol=1e-4)
    assert (got - before).abs().max() > 1e-4  # the adapter changes the videos


def test_wan_architecture_from_its_config():
    """The paper-scale stand-in, built on the meta device: Wan2.1-T2V-1.3B's 30-block transformer (1.42B), UMT5-XXL's
    encoder and the 127M video VAE."""
    from dgx.sampler.architectures import wan21_pipeline

    with torch.device("meta"):
        pipe = wan21_pipeline()

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert len(pipe.transformer.blocks) == 30 and count(pipe.transformer) == pytest.approx(1.419e9, rel=1e-3)
    assert count(pipe.text_encoder) == pytest.approx(5.68e9, rel=5e-3)
    assert count(pipe.vae) == pytest.approx(126.9e6, rel=1e-3)
