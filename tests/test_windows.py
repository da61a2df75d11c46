"""Noise windows: MixGRPO's sliding window against a transcription of its progressive state machine, the trainer's
rollouts following it, and dense credit scoring only the latents of noisy steps (with n = t the skipped gains are
zero within 1e-6)."""

from __future__ import annotations

import pytest
import torch
from dgx.sampler import UniformNoise, Windowed, rollout, sample_generator, schedule_at, sde_step
from dgx_test_helpers import Brightness


def mixgrpo_progressive(start: int, size: int, shift: int, every: int, last: int, roll_back: bool, n: int):
    """The windows of n iterations as MixGRPO's GRPOTrainingStates steps them (progressive strategy, prog_overlap,
    max_timesteps = the last whole window's start): move after every `every` iterations, past the end roll back or
    clip."""
    cur, in_group, out = start, 0, []
    for _ in range(n):
        out.append((cur, cur + size))
        in_group += 1
        if in_group >= every:
            in_group = 0
            cur += shift
        if cur > last:
            if roll_back:
                cur, in_group = start, 0
            else:
                cur = last
    return out


@pytest.mark.parametrize(
    "start,stop,shift,every,roll_back",
    [(0, 2, 1, 1, True), (0, 4, 1, 25, True), (1, 3, 2, 3, False), (0, 3, 3, 2, True)],
)
def test_a_sliding_window_moves_as_mixgrpo_does(start, stop, shift, every, roll_back):
    steps, n = 10, 120
    w = Windowed(UniformNoise(0.7), start, stop, shift, every, roll_back)
    got = [(a.start, a.stop) for a in (w.at(i, steps) for i in range(n))]
    assert got == mixgrpo_progressive(start, stop - start, shift, every, steps - (stop - start), roll_back, n)
    grid = torch.linspace(1, 0, steps + 1)
    sigma = schedule_at(w, 7, steps)(torch.arange(steps), grid)
    inside = torch.zeros(steps, dtype=torch.bool)
    inside[got[7][0] : got[7][1]] = True
    assert (sigma[~inside] == 0).all() and (sigma[inside] > 0).all()
    assert schedule_at(UniformNoise(0.7), 7, steps) == UniformNoise(0.7)  # a schedule without a window is as it is


def test_a_drawn_window_starts_uniformly_in_its_range_as_flow_grpo_fast_does():
    w = Windowed(UniformNoise(0.7), 0, 3, draw=(0, 5))  # Flow-GRPO-Fast's SD3.5 setting on 10 steps: size 3, (0, 5)
    starts = [w.at(i, 10, seed=7).start for i in range(600)]
    assert set(starts) == {0, 1, 2} and all(w.at(i, 10, seed=7).stop - s == 3 for i, s in enumerate(starts[:5]))
    counts = torch.bincount(torch.tensor(starts)).float()
    assert (counts / 600 - 1 / 3).abs().max() < 0.06  # uniform over lo..hi - size
    assert starts == [w.at(i, 10, seed=7).start for i in range(600)]  # keyed by (seed, iteration)
    assert starts != [w.at(i, 10, seed=8).start for i in range(600)]


def test_the_trainer_rolls_out_each_iteration_in_its_window(tmp_path, tiny_pipe_dir, monkeypatch):
    from dgx.grpo import assembly, trainer
    from dgx.grpo.assembly import assemble
    from dgx.grpo.registry import Registry
    from dgx_test_helpers import tiny_config

    cfg = tiny_config(tmp_path, tiny_pipe_dir, iterations=3)
    from dgx.grpo.config import WindowConfig

    cfg.sampler.noise.window = WindowConfig(start=0, stop=2, shift=1)
    seen, original = [], assembly.rollout

    def recording(*args, **kwargs):
        traj = original(*args, **kwargs)
        seen.append(((traj.stds > 0).all(0)).nonzero().flatten().tolist())
        return traj

    monkeypatch.setattr(assembly, "rollout", recording)  # the trainer's rollouts go through Assembly.rollouts
    trainer.train(assemble(cfg, Registry([tmp_path / "reg.yaml"])), tmp_path / "run")
    assert seen == [[0, 1], [1, 2], [2, 3]]  # 4 steps: the window [0, 2) moves one step per iteration


class GaussianFlow:
    """The closed-form velocity of N(0, 0.25 I) data on a grid of our choosing."""

    def __init__(self, grid: torch.Tensor):
        self._grid, self.calls = grid, 0

    def velocity(self, x, t, cond=None, guidance=1.0, detach_uncond=False):
        self.calls += 1
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1)
        var = (1 - t) ** 2 * 0.25 + t**2
        return t / var * x - (1 - t) * 0.25 / var * x

    def grid(self, steps):
        return self._grid

    def init_latents(self, n, generator, height=None, width=None):
        return torch.randn((n, 3), generator=generator)


def test_heun_steps_match_diffusers_flow_match_heun_scheduler():
    from dgx.sampler import ConstantNoise
    from dgx.sampler.model import Conditioning
    from diffusers import FlowMatchHeunDiscreteScheduler

    sched = FlowMatchHeunDiscreteScheduler(shift=3.0)
    sched.set_timesteps(6)
    grid = torch.unique_consecutive(sched.sigmas.float())  # the scheduler's sigmas, each once
    flow = GaussianFlow(grid)
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    x = x0.clone()
    for t in sched.timesteps:
        x = sched.step(flow.velocity(x, (t / 1000).expand(4)), t, x).prev_sample
    cond = Conditioning(torch.zeros(4, 1, 1), torch.zeros(4, 1))
    flow.calls = 0
    traj = rollout(flow, cond, [""] * 4, 6, sde_step, ConstantNoise(0.0), None, latents=x0, ode_solver="heun")
    torch.testing.assert_close(traj.latents[:, -1], x, atol=1e-6, rtol=0)
    assert flow.calls == 6 + 5  # one more call per step, but for the last
    euler = rollout(flow, cond, [""] * 4, 6, sde_step, ConstantNoise(0.0), None, latents=x0)
    fine = rollout(
        GaussianFlow(torch.linspace(1, 0, 2001)), cond, [""] * 4, 2000, sde_step, ConstantNoise(0.0), None, latents=x0
    ).latents[:, -1]
    assert (traj.latents[:, -1] - fine).abs().max() < (euler.latents[:, -1] - fine).abs().max() / 3


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_dense_credit_scores_only_the_windows_latents(tiny_model, solver):
    from dgx.rewards.credit import dense_gain

    steps, n = 6, 4
    texts = ["a red circle", "two blue squares"] * 2
    gens = [sample_generator(3, 0, s) for s in range(n)]
    window = Windowed(UniformNoise(0.7), 2, 4)
    cond = tiny_model.encode(texts)
    traj = rollout(tiny_model, cond, texts, steps, sde_step, window, gens, 2.0, ode_solver=solver)
    images = []

    def counting(imgs, prompts, metadata=None):
        images.append(len(imgs))
        return Brightness()(imgs, prompts)

    full = dense_gain(tiny_model, traj, counting, ode_steps="t", score_ode_steps=True)
    scored_all, images[:] = sum(images), []
    window = dense_gain(tiny_model, traj, counting, ode_steps="t")
    outside = [0, 1, 4, 5]
    assert full.signal[:, outside].abs().max() < 1e-6  # an ODE step's gain, scored: zero up to rounding
    assert (window.signal[:, outside] == 0).all()
    torch.testing.assert_close(window.signal, full.signal, atol=1e-6, rtol=0)
    assert scored_all == n * (steps + 1) and sum(images) == n * 3  # the window's 2 latents and the final image
