"""The objectives beside Flow-GRPO's, each against an independent computation of its reference's formula: GRPO-Guard's
normalised ratio (X-GenGroup/Flow-Factory, GRPOGuardTrainer._guard_ratio) and Flow-DPPO's KL trust-region mask
(Flow-Factory's DPPOTrainer.optimize)."""

from __future__ import annotations

import math

import pytest
import torch
from dgx.grpo.loss import FlowDPPO, FlowGRPO, Recorded
from dgx.sampler import sde_step


def step(seed: int = 0, shift: float = 0.0):
    """A recorded SDE step of 6 samples and the same step under a policy whose velocity moved by ``shift``."""
    g = torch.Generator().manual_seed(seed)
    x, v = torch.randn(6, 2, 3, 3, generator=g), torch.randn(6, 2, 3, 3, generator=g)
    t, t_next, sigma = torch.full((6,), 0.8), torch.full((6,), 0.6), torch.full((6,), 0.7)
    rec = sde_step(x, v, t, t_next, sigma, generator=g)
    moved = v + shift * torch.randn(v.shape, generator=g)
    out = sde_step(x, moved.requires_grad_(), t, t_next, sigma, x_next=rec.sample)
    return out, Recorded(rec.log_prob, rec.mean), rec


def gaussian_log_density(x, mean, std):
    """Per-sample mean over dims of the Gaussian log-density, written out."""
    s = std.reshape(-1, *([1] * (x.ndim - 1)))
    return (-((x - mean) ** 2) / (2 * s**2) - torch.log(s) - 0.5 * math.log(2 * math.pi)).flatten(1).mean(1)


def test_grpo_guard_ratio_is_the_noise_times_the_mean_shift():
    out, old, rec = step(shift=0.05)
    eps = (rec.sample - old.mean) / out.std.reshape(-1, 1, 1, 1)  # the noise the rollout drew
    expected = torch.exp((eps * (out.mean - old.mean)).flatten(1).mean(1))
    # Flow-Factory's form, from log-densities written out here: dlogp * s + mse / (2 s)
    dlogp = gaussian_log_density(rec.sample, out.mean, out.std) - gaussian_log_density(rec.sample, old.mean, out.std)
    mse = ((out.mean - old.mean) ** 2).flatten(1).mean(1)
    assert torch.allclose(torch.exp(dlogp * out.std + mse / (2 * out.std)), expected, atol=1e-6)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0])
    objective = FlowGRPO(ratio="guard", clip_range=0.05, kl_beta=0.0)
    lo = objective(out, old, adv, None)
    r = expected.detach()
    policy = torch.maximum(-adv * r, -adv * r.clamp(0.95, 1.05)).mean()
    assert torch.allclose(lo.loss, policy, atol=1e-6)
    plain = FlowGRPO(clip_range=0.05, kl_beta=0.0)(out, old, adv, None)
    assert not torch.allclose(plain.loss, lo.loss)  # the plain ratio differs: it carries the 1/s scale


def test_guard_removes_the_plain_ratios_bias_on_average():
    """Over the rollout's noise, the plain log-ratio averages -|dmean|^2 / (2 s^2) (it shrinks every ratio), Guard's
    averages 0."""
    from dgx.grpo.loss import guard_log_ratio

    plain, guard, bias = [], [], []
    for seed in range(300):
        out, old, _ = step(seed, shift=0.5)
        plain.append((out.log_prob - old.log_prob).detach())
        guard.append(guard_log_ratio(out, old).detach())
        bias.append((-((out.mean - old.mean) ** 2).flatten(1).mean(1) / (2 * out.std**2)).detach())
    plain, guard, bias = torch.cat(plain), torch.cat(guard), torch.cat(bias)

    def within(x: torch.Tensor, target: float) -> bool:
        return abs(x.mean().item() - target) < 4 * x.std().item() / len(x) ** 0.5

    assert bias.mean() < 0 and within(plain, bias.mean().item()) and not within(plain, 0.0)
    assert within(guard, 0.0)


@pytest.mark.parametrize("threshold", [1e-9, 1e9])
def test_flow_dppo_masks_steps_past_the_trust_region_that_widen_the_gap(threshold):
    out, old, rec = step(shift=0.2)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.7, -0.3])
    lo = FlowDPPO(kl_threshold=threshold)(out, old, adv, None)
    # independent: the exact KL between two Gaussians of one std, mean over dims
    s = out.std.reshape(-1, 1, 1, 1)
    kl = (((out.mean - old.mean) ** 2) / (2 * s**2)).flatten(1).mean(1).detach()
    ratio = torch.exp(out.log_prob - old.log_prob).detach()
    drop = (kl >= threshold) & (((ratio > 1) & (adv > 0)) | ((ratio < 1) & (adv < 0)))
    expected = (-adv * ratio * (~drop).float()).mean()
    assert torch.allclose(lo.loss, expected, atol=1e-6)
    assert lo.clip_frac.item() == pytest.approx(drop.float().mean().item())
    if threshold > 1:  # nothing passes the trust region: plain policy gradient
        assert lo.clip_frac.item() == 0 and torch.allclose(lo.loss, (-adv * ratio).mean(), atol=1e-6)
    else:
        assert 0 < lo.clip_frac.item() < 1  # some steps widen the gap, some close it


def test_flow_dppo_keeps_a_dropped_infinite_ratio_out_of_the_loss():
    out, old, _ = step(shift=0.2)
    huge = Recorded(old.log_prob - 1e4, old.mean)  # ratio = inf where the policy moved far
    lo = FlowDPPO(kl_threshold=1e-12)(out, huge, torch.ones(6), None)
    assert torch.isfinite(lo.loss) and lo.clip_frac.item() == 1.0
