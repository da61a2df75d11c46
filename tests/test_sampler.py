import math

import pytest
import torch
from dgx.sampler import (
    ConstantNoise,
    SamplerError,
    TableNoise,
    UniformNoise,
    Windowed,
    continuation_path,
    continue_ode,
    continue_ode_naive,
    cps_step,
    gaussian_log_prob,
    ode_step,
    rollout,
    sample_generator,
    sde_step,
)
from dgx.sampler.model import Conditioning


class GaussianFlow:
    """Exact velocity of rectified flow for data x0 ~ N(mu, diag(s^2)): v = E[eps - x0 | x_t]."""

    def __init__(self, mu, s):
        self.mu, self.s = torch.tensor(mu), torch.tensor(s)

    def velocity(self, x, t, cond, guidance=1.0):
        t = t.view(-1, 1)
        var = (1 - t) ** 2 * self.s**2 + t**2
        r = x - (1 - t) * self.mu
        return t / var * r - (self.mu + (1 - t) * self.s**2 / var * r)

    def init_latents(self, n, generator):
        return torch.randn((n, len(self.mu)), generator=generator)

    def grid(self, steps):
        return torch.linspace(1, 0, steps + 1)


def _cond(n):
    return Conditioning(torch.zeros(n, 1, 1), torch.zeros(n, 1))


def test_log_prob_matches_torch_normal():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    out = sde_step(x, v, torch.full((4,), 0.8), torch.full((4,), 0.7), torch.full((4,), 0.5), generator=g)
    ref = torch.distributions.Normal(out.mean, out.std.view(-1, 1, 1, 1)).log_prob(out.sample).flatten(1).mean(1)
    torch.testing.assert_close(out.log_prob, ref)
    torch.testing.assert_close(out.std, torch.full((4,), 0.5 * math.sqrt(0.1)))
    # scoring an existing sample returns that sample's log-prob
    again = sde_step(x, v, torch.full((4,), 0.8), torch.full((4,), 0.7), torch.full((4,), 0.5), x_next=out.sample)
    torch.testing.assert_close(again.log_prob, out.log_prob)
    torch.testing.assert_close(gaussian_log_prob(out.sample, out.mean, out.std), ref)


def test_sde_with_zero_noise_is_ode_and_cps_eta_zero_is_ode():
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 8), torch.randn(2, 8)
    t, tn = torch.full((2,), 0.6), torch.full((2,), 0.45)
    ode = ode_step(x, v, t, tn)
    torch.testing.assert_close(sde_step(x, v, t, tn, torch.zeros(2), generator=g).sample, ode.sample)
    torch.testing.assert_close(cps_step(x, v, t, tn, torch.zeros(2), generator=g).sample, ode.sample)
    torch.testing.assert_close(ode.sample, x + v * (tn - t).view(-1, 1))


def test_sde_mean_formula():
    x, v = torch.ones(1, 2), torch.full((1, 2), 2.0)
    out = sde_step(x, v, torch.tensor([0.5]), torch.tensor([0.4]), torch.tensor([0.6]), generator=torch.Generator())
    # mean = x + [v + s^2/(2t) (x + (1-t) v)] dt = 1 + [2 + 0.36 * (1 + 1)] * (-0.1)
    torch.testing.assert_close(out.mean, torch.full((1, 2), 1 + (2 + 0.36 * 2) * -0.1))


def test_uniform_schedule_t1_guard_and_table():
    grid = torch.tensor([1.0, 0.75, 0.5, 0.0])
    s = UniformNoise(0.7)(torch.arange(3), grid)
    torch.testing.assert_close(s, torch.tensor([0.7 * math.sqrt(1 / 0.25), 0.7 * math.sqrt(0.75 / 0.25), 0.7]))
    torch.testing.assert_close(TableNoise((0.1, 0.2, 0.3))(torch.tensor([2, 0]), grid), torch.tensor([0.3, 0.1]))
    torch.testing.assert_close(ConstantNoise(0.4)(torch.arange(3), grid), torch.full((3,), 0.4))
    with pytest.raises(SamplerError, match="re-run `dgx calibrate`"):
        TableNoise((0.1, 0.2))(torch.arange(3), grid)


def test_windowed_noise_explores_only_inside_the_window():
    grid = torch.linspace(1, 0, 6)
    w = Windowed(ConstantNoise(0.5), 1, 3)
    torch.testing.assert_close(w(torch.arange(5), grid), torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0]))
    flow, gen = GaussianFlow([1.0], [0.5]), lambda: torch.Generator().manual_seed(3)
    traj = rollout(flow, _cond(4), [""] * 4, 5, sde_step, w, gen())
    assert (traj.stds[:, [0, 3, 4]] == 0).all() and (traj.stds[:, 1:3] > 0).all()
    assert (traj.log_probs[:, [0, 3, 4]] == 0).all()
    ode = rollout(flow, _cond(4), [""] * 4, 5, ode_step, None, gen())
    torch.testing.assert_close(traj.latents[:, :2], ode.latents[:, :2])  # same noise, same first (ODE) step
    assert not torch.allclose(traj.latents[:, 2], ode.latents[:, 2])
    with pytest.raises(SamplerError, match="window"):
        Windowed(ConstantNoise(0.5), 3, 7)(torch.arange(5), grid)


@pytest.mark.parametrize(
    "schedule",
    [
        UniformNoise(0.3),
        UniformNoise(0.7),
        UniformNoise(1.0),
        TableNoise(tuple(0.2 + 0.8 * i / 99 for i in range(100))),
        Windowed(UniformNoise(0.7), 10, 60),
    ],
)
def test_sde_reaches_gaussian_data_distribution(schedule):
    """The drift term keeps the ODE's marginals: x_0 matches the data mean and variance."""
    mu, s, n = [1.5, -0.5], [0.5, 1.2], 20000
    flow = GaussianFlow(mu, s)
    traj = rollout(flow, _cond(n), [""] * n, 100, sde_step, schedule, torch.Generator().manual_seed(0))
    x0 = traj.latents[:, -1]
    se_mean = torch.tensor(s) / math.sqrt(n)
    assert ((x0.mean(0) - torch.tensor(mu)).abs() < 4 * se_mean + 0.02).all(), x0.mean(0)
    rel = x0.var(0) / torch.tensor(s) ** 2
    assert ((rel - 1).abs() < 0.06).all(), rel


def test_continuation_paths():
    assert continuation_path(3, 10, "t") == list(range(3, 11))
    assert continuation_path(3, 10, 1) == [3, 10]
    assert continuation_path(0, 10, 2) == [0, 5, 10]
    assert continuation_path(8, 10, 5) == [8, 9, 10]
    with pytest.raises(SamplerError):
        continuation_path(0, 10, 0)


def test_ode_t_continuation_reproduces_ode_trajectory_and_matches_naive():
    flow = GaussianFlow([0.3, 0.1], [0.7, 0.4])
    traj = rollout(flow, _cond(5), [""] * 5, 10, ode_step, None, torch.Generator().manual_seed(2))
    xhat = continue_ode(flow, traj, "t", chunk=7)
    torch.testing.assert_close(xhat, traj.latents[:, -1:].expand_as(xhat), atol=1e-5, rtol=1e-5)
    sde = rollout(flow, _cond(5), [""] * 5, 10, sde_step, UniformNoise(0.7), torch.Generator().manual_seed(3))
    for n in ("t", 1, 2):
        torch.testing.assert_close(
            continue_ode(flow, sde, n, chunk=11), continue_ode_naive(flow, sde, n), atol=1e-5, rtol=1e-5
        )


def test_tiny_sd3_end_to_end_reproducible(tiny_model):
    cond = tiny_model.encode(["a red circle", "two blue squares"])
    gens = lambda: [sample_generator(0, i) for i in range(2)]  # noqa: E731
    a = rollout(
        tiny_model, cond, ["a red circle", "two blue squares"], 4, sde_step, UniformNoise(0.7), gens(), guidance=3.0
    )
    b = rollout(
        tiny_model, cond, ["a red circle", "two blue squares"], 4, sde_step, UniformNoise(0.7), gens(), guidance=3.0
    )
    torch.testing.assert_close(a.latents, b.latents)
    # a sample depends only on its own generator, not on its batch
    c = rollout(
        tiny_model, cond.index([1]), ["two blue squares"], 4, sde_step, UniformNoise(0.7), gens()[1:], guidance=3.0
    )
    torch.testing.assert_close(c.latents[0], a.latents[1], atol=1e-5, rtol=1e-5)
    assert a.latents.shape == (2, 5, 4, 8, 8) and a.log_probs.shape == (2, 4)
    img = tiny_model.decode(a.latents[:, -1])
    assert img.shape == (2, 3, 16, 16) and 0 <= img.min() and img.max() <= 1
    # the recorded log-prob is the step's log-prob of the recorded sample under the same model
    i = 2
    v = tiny_model.velocity(a.latents[:, i], a.grid[i].expand(2), cond, 3.0)
    sig = UniformNoise(0.7)(torch.full((2,), i), a.grid)
    out = sde_step(a.latents[:, i], v, a.grid[i].expand(2), a.grid[i + 1].expand(2), sig, x_next=a.latents[:, i + 1])
    torch.testing.assert_close(out.log_prob, a.log_probs[:, i], atol=1e-4, rtol=1e-4)


def test_batched_continuation_equals_naive_on_tiny_sd3(tiny_model):
    prompts = ["a red circle", "two blue squares", "a photo of a circle"]
    traj = rollout(
        tiny_model,
        tiny_model.encode(prompts),
        prompts,
        5,
        sde_step,
        UniformNoise(0.7),
        torch.Generator().manual_seed(0),
        guidance=2.0,
    )
    tiny_model.calls = 0
    fast = continue_ode(tiny_model, traj, "t")
    fast_calls, tiny_model.calls = tiny_model.calls, 0
    slow = continue_ode_naive(tiny_model, traj, "t")
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    assert fast_calls == 4 and tiny_model.calls == 3 * (5 + 4 + 3 + 2 + 1)


def test_resolution_sets_the_latent_size_and_is_checked(tiny_pipe_dir):
    from dgx.sampler import SD3Model

    m = SD3Model.from_pretrained(tiny_pipe_dir, resolution=24)  # VAE factor 2 x patch 2: multiples of 4
    assert m.init_latents(2, torch.Generator().manual_seed(0)).shape == (2, 4, 12, 12)
    assert SD3Model.from_pretrained(tiny_pipe_dir).resolution == 16  # the pipeline's default
    with pytest.raises(SamplerError, match="multiple of 4"):
        SD3Model.from_pretrained(tiny_pipe_dir, resolution=18)


def test_sd35_medium_architecture_from_its_config():
    """The full transformer (on the meta device: no memory) has SD3.5-M's size and dual-attention
    blocks; a one-block copy runs end to end with the real conditioning shapes."""
    from dgx.sampler.architectures import SD35_MEDIUM_TRANSFORMER, sd35_medium_random
    from diffusers import SD3Transformer2DModel

    with torch.device("meta"):
        full = SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER)
    n = sum(p.numel() for p in full.parameters())
    assert 2.0e9 < n < 2.6e9 and len(full.transformer_blocks) == 24
    assert [b.attn2 is not None for b in full.transformer_blocks] == [i < 13 for i in range(24)]

    m = sd35_medium_random(layers=1, resolution=128, max_sequence_length=16)
    cond = m.encode(["a red cat", "a dog"])
    assert cond.embeds.shape == (2, 77 + 16, 4096) and cond.pooled.shape == (2, 2048)
    x = m.init_latents(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 16, 16, 16)
    v = m.velocity(x, torch.full((2,), 0.5), cond, guidance=4.5)
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert m.decode(x).shape == (2, 3, 128, 128)


def test_random_architectures_are_initialised_in_their_dtype():
    """The builders' weights come out in the requested dtype, and the process's default dtype is left as it
    was, also when the build fails; the full FLUX.1-dev transformer is created in bfloat16 (on the meta device)."""
    from dgx.sampler.architectures import FLUX_DEV_TRANSFORMER, flux_dev_random, initialised_on, sd35_medium_random
    from diffusers import FluxTransformer2DModel

    for build in (
        lambda: sd35_medium_random(dtype=torch.bfloat16, layers=1, resolution=64, max_sequence_length=8),
        lambda: flux_dev_random(dtype=torch.bfloat16, layers=1, single_layers=1, resolution=64, max_sequence_length=8),
    ):
        m = build()
        assert {p.dtype for p in m.transformer.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in m.pipe.vae.parameters()} == {torch.bfloat16}
        assert torch.get_default_dtype() == torch.float32
    with pytest.raises(ValueError), initialised_on("cpu", torch.float16):
        assert torch.empty(1).dtype == torch.float16
        raise ValueError
    assert torch.get_default_dtype() == torch.float32
    with initialised_on("meta", torch.bfloat16):
        full = FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
    assert {p.dtype for p in full.parameters()} == {torch.bfloat16} and torch.get_default_dtype() == torch.float32


def test_load_dtype_is_applied_with_the_keyword_the_installed_diffusers_takes(tiny_pipe_dir):
    import warnings

    from dgx.sampler import SD3Model
    from dgx.sampler.model import _dtype_keyword

    assert _dtype_keyword("0.39.0") == "torch_dtype" and _dtype_keyword("0.40.0") == "dtype"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch_dtype.*")
        m = SD3Model.from_pretrained(tiny_pipe_dir, dtype=torch.bfloat16)
    assert next(m.transformer.parameters()).dtype == torch.bfloat16


def test_flux_adapter_reproduces_the_flux_pipeline(tiny_flux_dir):
    """Our ODE rollout through FluxModel (NCHW latents, packed inside velocity) gives FluxPipeline's own
    latents and image: the same noise, dynamic-shift sigmas, guidance embedding and unpacking."""
    from dgx.sampler.flux import FluxModel
    from dgx.sampler.tiny import tiny_flux_pipeline

    m = FluxModel.from_pretrained(tiny_flux_dir, dtype=torch.float32, max_sequence_length=16, resolution=16)
    assert m.distilled_guidance and m.init_latents(2, torch.Generator().manual_seed(0)).shape == (2, 4, 8, 8)
    kw = dict(height=16, width=16, num_inference_steps=4, guidance_scale=3.5, max_sequence_length=16)
    ref = m.pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="latent", **kw).images
    traj = rollout(
        m, m.encode(["a red circle"]), ["a red circle"], 4, ode_step, None, torch.Generator().manual_seed(0), 3.5
    )
    torch.testing.assert_close(m.pipe._pack_latents(traj.latents[:, -1], 1, 4, 8, 8), ref, atol=1e-5, rtol=1e-5)
    img = m.pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt", **kw).images
    torch.testing.assert_close(m.decode(traj.latents[:, -1]), img, atol=1e-5, rtol=1e-5)
    assert m.calls == 4 and not torch.equal(
        m.velocity(traj.latents[:, 1], traj.grid[1:2], traj.cond, 1.0),
        m.velocity(traj.latents[:, 1], traj.grid[1:2], traj.cond, 5.0),
    )

    # without a guidance embedding (schnell-like): true CFG with the negative prompt, as the pipeline's true_cfg_scale
    schnell = FluxModel(tiny_flux_pipeline(["a", "red", "circle"], guidance_embeds=False), 16, resolution=16)
    assert not schnell.distilled_guidance
    ref = schnell.pipe(
        "a red circle",
        negative_prompt="",
        true_cfg_scale=3.0,
        generator=torch.Generator().manual_seed(1),
        output_type="latent",
        **kw,
    ).images
    traj = rollout(
        schnell,
        schnell.encode(["a red circle"]),
        ["a red circle"],
        4,
        ode_step,
        None,
        torch.Generator().manual_seed(1),
        3.0,
    )
    torch.testing.assert_close(schnell.pipe._pack_latents(traj.latents[:, -1], 1, 4, 8, 8), ref, atol=1e-5, rtol=1e-5)

    with pytest.raises(SamplerError, match="multiple of 4"):
        FluxModel.from_pretrained(tiny_flux_dir, dtype=torch.float32, resolution=18)
    with pytest.raises(SamplerError, match="could not load a FluxPipeline .*HF_HUB_OFFLINE=1"):
        FluxModel.from_pretrained(str(tiny_flux_dir / "missing"))


def test_flux_dev_architecture_from_its_config():
    """FLUX.1-dev's transformer (meta device) has its published size and depth; a copy cut to one double-
    and one single-stream block runs end to end with the real conditioning widths."""
    from dgx.sampler.architectures import FLUX_DEV_TRANSFORMER, flux_dev_random
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        full = FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
    n = sum(p.numel() for p in full.parameters())
    assert 11.5e9 < n < 12.2e9 and (len(full.transformer_blocks), len(full.single_transformer_blocks)) == (19, 38)

    m = flux_dev_random(dtype=torch.float32, layers=1, single_layers=1, resolution=128, max_sequence_length=16)
    cond = m.encode(["a red cat", "a dog"])
    assert cond.embeds.shape == (2, 16, 4096) and cond.pooled.shape == (2, 768) and cond.neg_embeds is None
    x = m.init_latents(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 16, 16, 16) and len(m.grid(10)) == 11
    v = m.velocity(x, torch.full((2,), 0.5), cond, guidance=3.5)
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert m.decode(x).shape == (2, 3, 128, 128)


def test_model_counts_calls_and_per_image_evaluations(tiny_model):
    """``calls`` counts batched forward passes, ``evaluations`` per-image ones (a CFG pair twice)."""
    cond = tiny_model.encode(["a red circle", "two blue squares", "a photo of a circle"])
    x = tiny_model.init_latents(3, torch.Generator().manual_seed(0))
    tiny_model.calls = tiny_model.evaluations = 0
    tiny_model.velocity(x, torch.full((3,), 0.5), cond, guidance=2.0)
    assert (tiny_model.calls, tiny_model.evaluations) == (1, 6)
    tiny_model.velocity(x, torch.full((3,), 0.5), cond, guidance=1.0)
    assert (tiny_model.calls, tiny_model.evaluations) == (2, 9)
