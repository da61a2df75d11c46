"""Qwen-Image through the model seam: the adapter's ODE against QwenImagePipeline's own sampling, the SDE step's
log-probs, a DenseGRPO `dgx run` on the tiny stand-in, and the exported LoRA loaded by the pipeline."""

import math

import pytest
import torch
import yaml
from dgx.eval.benchmarks import generate
from dgx.sampler import ode_step, rollout, sample_generator, sde_step
from dgx.sampler.schedules import UniformNoise
from dgx_test_helpers import dense_grpo_run


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from dgx.sampler.architectures import qwen_image_stand_in

    d = tmp_path_factory.mktemp("tiny_qwen_image")
    qwen_image_stand_in(d)
    return d


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    from dgx.sampler.qwen_image import QwenImageModel

    return QwenImageModel.from_pretrained(qwen_dir, dtype=torch.float32, max_sequence_length=16, resolution=16)


def test_the_stand_ins_template_drops_what_the_pipeline_drops(qwen):
    """The pipeline drops the chat template's first 34 tokens: the stand-in's tokenizer makes them the system part."""
    pipe = qwen.pipe
    ids = pipe.tokenizer(pipe.prompt_template_encode.format("a red circle")).input_ids
    kept = pipe.tokenizer.convert_ids_to_tokens(ids)[pipe.prompt_template_encode_start_idx :]
    assert kept[:3] == ["a", "Ġred", "Ġcircle"]


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_ode_equals_the_qwen_image_pipeline(qwen, guidance):
    """The same noise, shifted sigmas, packing and (at 4) true CFG with its norm rescale: QwenImagePipeline's latents
    and images within 1e-5."""
    kw = dict(height=16, width=16, num_inference_steps=4, max_sequence_length=16, true_cfg_scale=guidance)
    neg = {"negative_prompt": " "} if guidance > 1 else {}
    ref = qwen.pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="latent", **neg, **kw)
    cond = qwen.encode(["a red circle"], negative=" ")
    traj = rollout(qwen, cond, ["a red circle"], 4, ode_step, None, torch.Generator().manual_seed(0), guidance)
    c, h = qwen.latent_channels, traj.latents.shape[-1]
    got = qwen.pipe._pack_latents(traj.latents[:, -1], 1, c, h, h)
    torch.testing.assert_close(got, ref.images, atol=1e-5, rtol=1e-5)
    img = qwen.pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt", **neg, **kw).images
    torch.testing.assert_close(qwen.decode(traj.latents[:, -1]), img, atol=1e-5, rtol=1e-5)
    assert traj.grid[-2].item() == pytest.approx(0.02)  # the schedule's terminal sigma, then 0


def test_sde_log_probs_are_the_gaussian_steps_and_recompute_exactly(qwen):
    """Each recorded log-prob is the mean over elements of log N(x_next; mean, std) of its step, and the update's
    recomputation at the recorded latents gives it again (ratio 1 before any update)."""
    texts = ["a red circle", "two blue squares"]
    cond = qwen.encode(texts)
    gens = [sample_generator(0, 0, s) for s in range(2)]
    traj = rollout(qwen, cond, texts, 3, sde_step, UniformNoise(0.7), gens, 3.0)
    for i in range(2):  # the last step is deterministic
        x, x_next, t, t_next = traj.latents[:, i], traj.latents[:, i + 1], traj.grid[i], traj.grid[i + 1]
        with torch.no_grad():
            v = qwen.velocity(x, t.expand(2), cond, 3.0)
        out = sde_step(x, v, t, t_next, UniformNoise(0.7)(torch.tensor([i]), traj.grid), x_next=x_next)
        std = out.std.view(-1, 1, 1, 1)
        gauss = (-((x_next - out.mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).mean(
            (1, 2, 3)
        )
        torch.testing.assert_close(traj.log_probs[:, i], gauss, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.log_prob, traj.log_probs[:, i], atol=1e-5, rtol=1e-5)


def test_dense_grpo_run_and_the_exported_lora_loads_into_the_pipeline(tmp_path, qwen_dir):
    """Two DenseGRPO iterations with `dgx run` on the stand-in (CPU); the run's LoRA, exported by `dgx push`'s
    export, loads with QwenImagePipeline.load_lora_weights and gives the run's images."""
    from dgx.grpo.hub import export_run
    from dgx.sampler.qwen_image import QwenImageModel
    from diffusers import QwenImagePipeline

    node = {"name": "qwen_image", "path": str(qwen_dir), "resolution": 16, "max_sequence_length": 16}
    run = dense_grpo_run(tmp_path, {**node, "dtype": "float32"}, 3.0)

    export_run(run, tmp_path / "export", "me/tiny-qwen")
    assert "QwenImagePipeline" in (tmp_path / "export" / "README.md").read_text()
    pipe = QwenImagePipeline.from_pretrained(qwen_dir)
    before = generate(QwenImageModel(pipe, 16, resolution=16), ["a red circle"], 3, 3.0, seed=3)
    pipe.load_lora_weights(tmp_path / "export")
    got = generate(QwenImageModel(pipe, 16, resolution=16), ["a red circle"], 3, 3.0, seed=3)
    from dgx.grpo.adapter import load_adapter
    from dgx.grpo.config import RunConfig

    cfg = RunConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text()))
    trained = QwenImageModel.from_pretrained(qwen_dir, dtype=torch.float32, max_sequence_length=16, resolution=16)
    load_adapter(trained, cfg, run)
    torch.testing.assert_close(got, generate(trained, ["a red circle"], 3, 3.0, seed=3), atol=1e-5, rtol=1e-4)
    assert (got - before).abs().max() > 1e-4  # the adapter changes the images


def test_qwen_image_architecture_from_its_config():
    """The paper-scale stand-in, built on the meta device: Qwen-Image's 60-block 20.4B transformer, Qwen2.5-VL-7B
    (8.29B with its 152,064-token vocabulary, cut here to the stand-in tokenizer's) and the 127M video VAE."""
    from dgx.sampler.architectures import QWEN25_VL_7B_TEXT, qwen_image_pipeline

    with torch.device("meta"):
        pipe = qwen_image_pipeline()

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert len(pipe.transformer.transformer_blocks) == 60
    assert count(pipe.transformer) == pytest.approx(20.43e9, rel=1e-3)
    cut = 2 * (152064 - len(pipe.tokenizer)) * QWEN25_VL_7B_TEXT["hidden_size"]  # input embeddings and LM head
    assert count(pipe.text_encoder) + cut == pytest.approx(8.29e9, rel=2e-3)
    assert count(pipe.vae) == pytest.approx(126.9e6, rel=1e-3)
