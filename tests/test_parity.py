"""Reference parity of the training objective: dgx's defaults train Flow-GRPO's objective (its SD3 code,
yifan123/flow_grpo), and the named options bring back dgx's exact-KL objective.

The reference side of each test is written here from Flow-GRPO's formulas (sde_step_with_logprob,
compute_log_prob, PerPromptStatTracker with global_std, the PPO loss of train_sd3.py), not imported."""

import math

import numpy as np
import pytest
import torch
from dgx.grpo.adapter import add_lora
from dgx.grpo.advantages import advantages
from dgx.grpo.config import RunConfig, TrainConfig
from dgx.grpo.loss import FlowGRPO, grpo_loss
from dgx.grpo.trainer import Batch, pair_loss, steps_to_train
from dgx.sampler import SD3Model, UniformNoise, rollout, sample_generator, sde_step

PROMPTS = ["a red circle", "two blue squares"]
G, T, W, BETA = 4, 10, 4.5, 0.04


def test_kl_forms_on_a_small_case():
    """||mean - ref||^2 = 1 per element, sigma = 0.5, dt = -0.25: Flow-GRPO's form 1 / (2 * 0.25) = 2,
    the exact KL 1 / (2 * 0.25 * 0.25) = 8 (1 / |dt| times larger)."""
    x, v = torch.zeros(2, 3), torch.zeros(2, 3)
    out = sde_step(x, v, torch.tensor(0.5), torch.tensor(0.25), torch.tensor(0.5), x_next=torch.zeros(2, 3))
    assert out.level.tolist() == [0.5, 0.5] and out.std.tolist() == pytest.approx([0.25, 0.25])
    ref = out.mean + 1.0
    zero = torch.zeros(2)
    flow = grpo_loss(zero, zero, zero, out.mean, ref, out.level, clip_range=1e-4, kl_beta=0.04)
    exact = grpo_loss(zero, zero, zero, out.mean, ref, out.std, clip_range=1e-4, kl_beta=0.04)
    assert flow.kl.item() == pytest.approx(2.0) and exact.kl.item() == pytest.approx(8.0)
    assert flow.loss.item() == pytest.approx(0.04 * 2.0) and exact.loss.item() == pytest.approx(0.04 * 8.0)


def test_steps_trained_at_a_fraction():
    g = torch.Generator().manual_seed(0)
    assert steps_to_train(list(range(10)), 0.99, "first", g) == list(range(9))  # Flow-GRPO: int(10 * 0.99) = 9
    assert steps_to_train(list(range(10)), 1.0, "first", g) == list(range(10))
    assert steps_to_train(list(range(4)), 0.5, "first", g) == [0, 1]
    assert steps_to_train([2, 3, 4, 5], 0.5, "first", g) == [2, 3]  # a noise window: its first stochastic steps
    assert steps_to_train(list(range(10)), 0.01, "first", g) == [0]  # at least one
    picked = steps_to_train(list(range(10)), 0.99, "random", torch.Generator().manual_seed(3))
    assert len(picked) == 10 and sorted(picked) == list(range(10))  # ceil(9.9) = 10, a permutation
    picked = steps_to_train(list(range(10)), 0.6, "random", torch.Generator().manual_seed(3))
    assert picked == torch.randperm(10, generator=torch.Generator().manual_seed(3))[:6].tolist()


def test_advantages_for_each_std_choice():
    """Two groups of 2: rewards (1, 3 | 5, 5.5)."""
    r = torch.tensor([1.0, 3.0, 5.0, 5.5])
    sig, ones = r[:, None].repeat(1, 2), torch.ones(4, 2)
    centred = torch.tensor([-1.0, 1.0, -0.25, 0.25])
    glob = float(np.std([1.0, 3.0, 5.0, 5.5]))  # Flow-GRPO's global_std: numpy, ddof 0, over the batch's rewards
    expect = {
        ("global", 0): centred / (glob + 1e-4),
        ("global", 1): centred / (float(np.std([1.0, 3.0, 5.0, 5.5], ddof=1)) + 1e-4),
        ("group", 0): centred / torch.tensor([1.0, 1.0, 0.25, 0.25]).add(1e-4),
        ("group", 1): centred / torch.tensor([2**0.5, 2**0.5, 0.125**0.5, 0.125**0.5]).add(1e-4),
        ("batch", 0): centred / (float(np.std(centred.numpy())) + 1e-4),  # trajectory-wise: over the 4 rewards
        ("batch", 1): centred / (float(np.std(centred.numpy(), ddof=1)) + 1e-4),
    }
    for (std, ddof), want in expect.items():
        got = advantages(sig, ones, False, 2, 5.0, std=std, ddof=ddof)
        torch.testing.assert_close(got, want[:, None].expand(4, 2), msg=f"{std}, ddof {ddof}")
    per_step = advantages(torch.stack([r, 2 * r], 1), ones, True, 2, 5.0)  # global std taken per step
    torch.testing.assert_close(per_step[:, 1], centred * 2 / (2 * glob + 1e-4))
    assert FlowGRPO().adv_std == "global" and FlowGRPO().adv_ddof == 0


FLOW_GRPO_SD3 = {"attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k"}
FLOW_GRPO_SD3 |= {"attn.to_out.0", "attn.to_q", "attn.to_v"}  # scripts/train_sd3.py at ac4c86e
FLOW_GRPO_FLUX = FLOW_GRPO_SD3 | {"ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"}


def adapted(transformer) -> set[str]:
    return {n.rsplit(".lora_A", 1)[0] for n, _ in transformer.named_parameters() if ".lora_A" in n}


def test_default_lora_targets_are_the_model_familys_and_skip_the_second_attention(tiny_flux_dir):
    """Each model adapter states its LoRA targets (Flow-GRPO's SD3 and FLUX lists); `train.lora_targets` overrides."""
    from dgx.sampler import SD3Model
    from dgx.sampler.flux import FluxModel
    from dgx.sampler.tiny import tiny_sd3_pipeline

    def sd3() -> SD3Model:
        pipe = tiny_sd3_pipeline(
            ["a", "red"],
            sample_size=8,
            vae_channels=(16, 16),
            layers=2,
            heads=2,
            head_dim=8,
            text_dim=16,
            dual_attention_layers=(0,),
        )
        return SD3Model(pipe)

    cfg = RunConfig()
    assert cfg.train.lora_targets is None and set(SD3Model.lora_targets) == FLOW_GRPO_SD3
    assert set(FluxModel.lora_targets) == FLOW_GRPO_FLUX
    model = sd3()
    add_lora(model, cfg)
    names = adapted(model.transformer)
    assert "transformer_blocks.0.attn.to_q" in names and not any(".attn2." in n for n in names)
    model = sd3()
    add_lora(model, RunConfig(train={"lora_targets": ["to_q", "to_k", "to_v", "to_out.0"]}))
    assert any(".attn2.to_q" in n for n in adapted(model.transformer))
    flux = FluxModel.from_pretrained(tiny_flux_dir)
    add_lora(flux, cfg)
    names = adapted(flux.transformer)
    assert "transformer_blocks.0.ff.net.0.proj" in names and "transformer_blocks.0.ff_context.net.2" in names
    assert "single_transformer_blocks.0.attn.to_q" in names and not any(n.endswith("proj_mlp") for n in names)


# ---- Flow-GRPO's formulas, written from its SD3 training code ----


def flow_grpo_advantages(prompts: list[str], rewards: np.ndarray) -> np.ndarray:
    """PerPromptStatTracker(global_std=True).update: per-prompt mean, std of all rewards (numpy, ddof 0) + 1e-4."""
    prompts, adv = np.array(prompts), np.empty_like(rewards)
    std = np.std(rewards) + 1e-4
    for p in np.unique(prompts):
        adv[prompts == p] = (rewards[prompts == p] - rewards[prompts == p].mean()) / std
    return adv


def flow_grpo_step(v, sigma, sigma_prev, sigma_max, sample, prev_sample, a, exact_kl_divisor=False):
    """sde_step_with_logprob: returns (log_prob, prev_sample_mean, KL divisor std_dev_t (or its step std))."""
    dt = sigma_prev - sigma
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * a
    mean = sample * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
    step_std = std_dev_t * torch.sqrt(-dt)
    log_prob = (
        -((prev_sample - mean) ** 2) / (2 * step_std**2)
        - torch.log(step_std)
        - torch.log(torch.sqrt(torch.as_tensor(2 * math.pi)))
    )
    return log_prob.mean(dim=tuple(range(1, log_prob.ndim))), mean, step_std if exact_kl_divisor else std_dev_t


def flow_grpo_velocity(tr, x, t, cond, detach_uncond):
    """compute_log_prob's transformer call: one pass on [uncond, cond], the unconditional prediction detached."""
    n = x.shape[0]
    out = tr(
        torch.cat([x, x]),
        encoder_hidden_states=torch.cat([cond.neg_embeds, cond.embeds]),
        pooled_projections=torch.cat([cond.neg_pooled, cond.pooled]),
        timestep=torch.cat([t.expand(n)] * 2) * 1000,
    ).sample
    u, c = out.chunk(2)
    u = u.detach() if detach_uncond else u
    return (u + W * (c - u)).float()


def flow_grpo_loss(model, traj, adv, steps, clip_range, beta, a, detach_uncond=True, exact_kl=False):
    """train_sd3.py's loss over ``steps`` (one batch per timestep j, averaged as its gradient accumulation does)."""
    tr, cond, grid = model.transformer, traj.cond, traj.grid
    n = traj.latents.shape[0]
    total = 0.0
    for j in steps:
        x, x_next = traj.latents[:, j], traj.latents[:, j + 1]
        sigma, sigma_prev = grid[j].expand(n).view(-1, 1, 1, 1), grid[j + 1].expand(n).view(-1, 1, 1, 1)
        v = flow_grpo_velocity(tr, x, grid[j], cond, detach_uncond)
        log_prob, mean, kl_std = flow_grpo_step(v, sigma, sigma_prev, grid[1], x, x_next, a, exact_kl)
        with torch.no_grad():
            tr.disable_adapters()
            _, ref_mean, _ = flow_grpo_step(
                flow_grpo_velocity(tr, x, grid[j], cond, True), sigma, sigma_prev, grid[1], x, x_next, a
            )
            tr.enable_adapters()
        ratio = torch.exp(log_prob - traj.log_probs[:, j])
        advs = torch.clamp(adv[:, j], -5.0, 5.0)
        policy = torch.mean(
            torch.maximum(-advs * ratio, -advs * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range))
        )
        kl = torch.mean(((mean - ref_mean) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * kl_std**2))
        total = total + (policy + beta * kl) / len(steps)
    return total


@pytest.fixture(scope="module")
def rollout_setup(tiny_pipe_dir):
    """One tiny SD3 pipeline with a perturbed LoRA adapter, its CFG rollouts of 2 prompts x 4, and random rewards;
    the adapter is then moved a little, so the ratios differ from 1 and the KL from 0."""
    torch.manual_seed(0)  # peft's gaussian LoRA init draws from the global generator
    model = SD3Model.from_pretrained(tiny_pipe_dir)
    cfg = RunConfig(model={"path": str(tiny_pipe_dir)})
    params = add_lora(model, cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    texts = [p for p in PROMPTS for _ in range(G)]
    cond = model.encode(PROMPTS).index([PROMPTS.index(p) for p in texts])
    with torch.no_grad():
        traj = rollout(
            model,
            cond,
            texts,
            T,
            sde_step,
            UniformNoise(0.7),
            [sample_generator(0, 0, s) for s in range(len(texts))],
            W,
        )
        for p in params:
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    rewards = torch.rand(len(texts), generator=gen, dtype=torch.float64)
    return model, params, traj, texts, rewards


def grads(params):
    g = torch.cat([p.grad.flatten() for p in params])
    for p in params:
        p.grad = None
    return g


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("options", ["reference", "exact", "reference_wide_clip"])
def test_default_objective_equals_flow_grpo(rollout_setup, options):
    """Same rollout, advantages and LoRA weights: dgx's loss and LoRA gradient equal Flow-GRPO's formulas within 1e-5
    relative by default; with kl=exact and guidance_grad=full they equal the exact-KL, full-CFG-gradient formulas
    (dgx's objective before the reference became the default). At Flow-GRPO's clip_range 1e-4 most ratios here are
    outside the range; at 0.2 most are inside it."""
    model, params, traj, texts, rewards = rollout_setup
    exact = options == "exact"
    tc = TrainConfig(timestep_fraction=0.99)
    objective = FlowGRPO(
        kl_beta=BETA,
        **({"kl": "exact", "guidance_grad": "full"} if exact else {}),
        **({"clip_range": 0.2} if options == "reference_wide_clip" else {}),
    )
    assert FlowGRPO().clip_range == 1e-4 and objective.adv_clip_max == 5.0  # Flow-GRPO's defaults
    assert RunConfig().objective.name == "flow_grpo" and not RunConfig().objective.args  # the default objective

    signal = rewards.float()[:, None].expand(len(texts), T)
    adv = objective.advantages(signal, torch.ones(len(texts), T), False, G)
    ref_adv = flow_grpo_advantages(texts, rewards.numpy())
    np.testing.assert_allclose(adv[:, 0].numpy(), ref_adv, rtol=1e-5, atol=1e-6)

    steps = steps_to_train(list(range(T)), tc.timestep_fraction, tc.timestep_selection, None)
    assert steps == list(range(9))
    pairs = [(b, s) for s in steps for b in range(len(texts))]
    batch = Batch(traj, adv, UniformNoise(0.7), sde_step, traj.grid, objective)
    out = pair_loss(model, model.transformer, batch, pairs)
    out.loss.backward()
    g_dgx = grads(params)

    ref_loss = flow_grpo_loss(
        model, traj, adv, steps, objective.clip_range, BETA, 0.7, detach_uncond=not exact, exact_kl=exact
    )
    ref_loss.backward()
    g_ref = grads(params)

    assert out.kl.item() > 0 and out.clip_frac.item() > 0  # the case exercises the KL and the clip
    if options == "reference_wide_clip":
        assert out.clip_frac.item() < 0.5
    print(
        f"{options}: loss {out.loss.item():.6e}, relative error of the loss {abs(out.loss.item() / ref_loss.item() - 1):.1e}, "
        f"of the gradient {relative_error(g_dgx, g_ref):.1e}"
    )
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    assert g_ref.norm() > 0
    assert relative_error(g_dgx, g_ref) < 1e-5


def test_detached_guidance_sends_no_gradient_through_the_unconditional_branch(rollout_setup):
    """v = v_u + w (v_c - v_u): detached, d(sum v)/d(theta) = w * d(sum v_c); in full, (1 - w) d(sum v_u) + w d(sum v_c)."""
    model, params, traj, _, _ = rollout_setup
    x, t, cond = traj.latents[:, 2], traj.grid[2].expand(traj.latents.shape[0]), traj.cond
    uncond = type(cond)(cond.neg_embeds, cond.neg_pooled, cond.neg_embeds, cond.neg_pooled)
    model.velocity(x, t, cond, 1.0).sum().backward()
    g_c = grads(params)
    model.velocity(x, t, uncond, 1.0).sum().backward()
    g_u = grads(params)
    model.velocity(x, t, cond, W, detach_uncond=True).sum().backward()
    assert relative_error(grads(params), W * g_c) < 1e-5
    model.velocity(x, t, cond, W).sum().backward()
    assert relative_error(grads(params), (1 - W) * g_u + W * g_c) < 1e-5
    assert FlowGRPO().guidance_grad == "cond" and FlowGRPO().kl == "flow_grpo"


class Capture(torch.optim.Optimizer):
    """Records the gradient each optimizer step sees, and leaves the parameters alone."""

    def __init__(self, params):
        super().__init__(params, {})
        self.seen: list[torch.Tensor] = []

    def step(self, closure=None):
        self.seen.append(torch.cat([p.grad.flatten().clone() for g in self.param_groups for p in g["params"]]))


def flow_grpo_batch(traj, samples: list[int]):
    """The rollouts of ``samples`` (Flow-GRPO's ``samples = {k: v[mask]}``), as ``flow_grpo_loss`` reads them."""
    from types import SimpleNamespace

    idx = torch.tensor(samples)
    return SimpleNamespace(
        latents=traj.latents[idx], log_probs=traj.log_probs[idx], cond=traj.cond.index(idx), grid=traj.grid
    )


@pytest.mark.parametrize("split", ["samples", "steps"])
def test_zero_advantage_filter_and_sample_split_equal_flow_grpo(rollout_setup, split):
    """The first prompt's 4 rewards tie: Flow-GRPO (train_sd3.py at ac4c86e) drops those samples and trains on the
    other 4. dgx's default drops them too: its one optimizer step's gradient equals Flow-GRPO's loss on the kept
    samples; `zero_advantage: keep` gives the loss over all 8, and differs by about the 8/4 of the mean. With 2 steps
    per epoch, `update_split: samples` gives each step a shuffled half of the samples at all 9 trained steps, as
    Flow-GRPO's reshape into batches does."""
    from accelerate import Accelerator
    from dgx.grpo import updates
    from dgx.grpo.trainer import Policy, update

    model, params, traj, texts, rewards = rollout_setup
    rewards = rewards.clone()
    rewards[:G] = 0.5  # a group of equal rewards: zero advantage at every step
    objective = FlowGRPO(kl_beta=BETA)
    adv = objective.advantages(rewards.float()[:, None].expand(len(texts), T), torch.ones(len(texts), T), False, G)
    assert (adv[:G] == 0).all() and (adv[G:] != 0).all()
    batch = Batch(traj, adv, UniformNoise(0.7), sde_step, traj.grid, objective)

    def dgx(**train) -> list[torch.Tensor]:
        cfg = RunConfig(train={"timestep_fraction": 0.99, "max_grad_norm": 1e9, "micro_batch": 5, **train})
        opt = Capture(params)
        policy = Policy(model, model.transformer, Accelerator(cpu=True), opt, params, None)
        stats = update(policy, cfg, batch, adv, 7, [range(len(texts))], 0)
        return opt.seen, stats

    def reference(samples: list[int]) -> torch.Tensor:
        flow_grpo_loss(model, flow_grpo_batch(traj, samples), adv[samples], range(9), 1e-4, BETA, 0.7).backward()
        return grads(params)

    kept = list(range(G, 2 * G))
    seen, stats = dgx(update_split=split)
    assert len(seen) == 1 and stats["trained_samples"] == G
    assert relative_error(seen[0], reference(kept)) < 1e-5
    seen, stats = dgx(update_split=split, zero_advantage="keep")
    assert stats["trained_samples"] == 2 * G
    g_all = reference(list(range(2 * G)))
    assert relative_error(seen[0], g_all) < 1e-5
    assert relative_error(g_all, reference(kept)) > 0.3  # the filter matters: about half the weight per sample

    seen, _ = dgx(update_split=split, updates_per_epoch=2)  # 4 kept samples over 2 steps
    assert len(seen) == 2
    if split == "samples":
        order = [kept[i] for i in torch.randperm(G, generator=updates.epoch_generator(0, 7, 0)).tolist()]
        halves = [sorted(order[:2]), sorted(order[2:])]
        for got, half in zip(seen, halves):
            assert relative_error(got, reference(half)) < 1e-5
    else:  # 36 pairs step by step: the first 18 are steps 0-3 of the 4 samples and step 4 of the first 2
        assert relative_error(seen[0] + seen[1], 2 * reference(kept)) < 1e-5
