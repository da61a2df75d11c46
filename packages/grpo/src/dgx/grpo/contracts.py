"""What every component of a kind promises, checked on any registry entry (dgx's own and every installed package's).

An entry that needs weights it cannot find offline names a ``stand_in`` (``false`` where none can be built: an entry
that needs an optional package, or weights only its own package downloads): ``module:attr`` of a function
``stand_in(folder) -> {"args": ..., "metadata": ...}`` that writes tiny models of the same classes into ``folder`` and
returns the node arguments that load them (and, where the component needs them, the prompts to score). ``dgx registry --check`` runs
these checks on every entry; the test suite runs them too (``tests/test_contracts.py``), so a new entry is covered
with no test edit.

- reward: one finite float per image, on the device it was given, and the same scores (within 1e-5, relative) when
  the batch is split;
- credit: a ``Credit`` of the trajectories' shapes whose ``terminal`` is the final image's reward;
- noise: a non-negative, finite sigma per step (t = 1 included), and zero outside a window;
- sampler: the log-density of a step's own sample, scored again, equals the one it returned;
- objective: advantages of the credit's shape, and a loss whose gradient raises the log-prob of a step with a positive
  advantage and lowers it for a negative one;
- model: ``encode``, ``velocity`` (the latents' shape, one call and two evaluations counted for a CFG pair of two),
  ``decode`` to [0, 1] images (each counted), a time grid from 1 to 0, on its device, and LoRA targets that match its layers;
- evaluation: per-image records in image order and the same records on a second call (image i has the same prompt
  and noise for every model, so gains pair image by image), a numeric headline first in the summary;
- prompts: a non-empty train and test split of metadata dicts, each with a prompt.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import torch
from dgx.grpo.errors import ConfigError
from dgx.grpo.registry import Entry, Registry

KINDS = ("rewards", "credit", "noise", "samplers", "objectives", "models", "evaluations", "prompts")


class ContractError(AssertionError):
    """A component breaks its kind's contract: the message says how."""


class Unavailable(Exception):
    """An entry that cannot be built offline here (its ``stand_in: false``, or an optional package it needs)."""


@dataclass
class StandIn:
    """How a registry entry builds offline: its node arguments, and the metadata (prompts) to score, if its own."""

    args: dict = field(default_factory=dict)
    metadata: list[dict] | None = None


def stand_in(entry: Entry, folder: Path, **scale) -> StandIn:
    """The entry's stand-in (its ``stand_in`` function run on ``folder``), or none: the entry builds offline as it is.
    ``scale`` goes to a model family's stand-in, which takes ``scale="paper"``, ``words`` and ``device`` too (`dgx
    rehearse`)."""
    if entry.stand_in is False:
        raise Unavailable(f"{entry.name!r} cannot be built offline (its registry entry: stand_in: false)")
    if not entry.stand_in:
        return StandIn()
    mod, _, attr = entry.stand_in.partition(":")
    made = getattr(importlib.import_module(mod), attr)(Path(folder), **scale)
    return StandIn(made.get("args", {}), made.get("metadata"))


def _metadata(n: int) -> list[dict]:
    """``n`` shapes-world test prompts with their GenEval metadata (what the built-in rewards read)."""
    from dgx.rewards.shapes.prompts import split

    return split("test")[:n]


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ContractError(what)


def check_reward(reward, device: str | torch.device = "cpu", metadata: list[dict] | None = None) -> torch.Tensor:
    """The reward contract on 6 random 32 x 32 images; returns the scores."""
    metas = metadata or _metadata(6)
    n = len(metas)
    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = [m["prompt"] for m in metas]
    scores = reward(images, prompts, metas)
    _require(isinstance(scores, torch.Tensor) and scores.shape == (n,), f"expected a tensor of shape ({n},)")
    _require(scores.is_floating_point() and bool(torch.isfinite(scores).all()), "expected finite floats")
    on = getattr(reward, "device", None)
    _require(on is None or torch.device(on) == torch.device(device), f"built on {on}, given {device}")
    k = n // 2
    parts = torch.cat([reward(images[:k], prompts[:k], metas[:k]), reward(images[k:], prompts[k:], metas[k:])])
    _require(
        torch.allclose(parts.float().cpu(), scores.float().cpu(), rtol=1e-5, atol=1e-6),
        f"split batches score {parts.tolist()}, the whole batch {scores.tolist()}",
    )
    return scores


def _trajectory(steps: int = 3):
    """The shapes world's generator and 4 SDE rollouts of it (2 prompts x 2), with their metadata."""
    from dgx.rewards.shapes.prompts import split
    from dgx.sampler import SD3Model, UniformNoise, rollout, sample_generator, sde_step

    model = SD3Model.from_pretrained(str(resources.files("dgx.rewards.shapes").joinpath("weights")))
    metas = [m for m in split("test")[:2] for _ in range(2)]
    texts = [m["prompt"] for m in metas]
    gens = [sample_generator(0, 0, i) for i in range(len(texts))]
    return model, rollout(model, model.encode(texts), texts, steps, sde_step, UniformNoise(0.7), gens, 2.0), metas


def check_credit(rule, reward=None) -> None:
    """The credit contract on the shapes world's rollouts, scored by ``reward`` (default the smooth ``ink``)."""
    from dgx.rewards.ink import Ink

    reward = reward or Ink()
    model, traj, metas = _trajectory()
    c = rule(model, traj, reward, metas)
    B, T = len(traj), traj.steps
    _require(c.signal.shape == (B, T) and c.weights.shape == (B, T), f"signal and weights of shape ({B}, {T})")
    _require(c.terminal.shape == (B,), f"terminal of shape ({B},)")
    final = reward(model.decode(traj.latents[:, -1]), traj.prompts, metas)
    _require(torch.allclose(c.terminal.float(), final.float(), atol=1e-5), "terminal is not the final image's reward")
    if c.latent_rewards is not None:
        _require(c.latent_rewards.shape == (B, T + 1), f"latent rewards of shape ({B}, {T + 1})")
    _require(all(bool(torch.isfinite(x).all()) for x in (c.signal, c.weights, c.terminal)), "expected finite values")


def check_noise(schedule, steps: int = 6) -> None:
    """The noise contract on a grid from t = 1 to 0: non-negative and finite everywhere, zero outside a window."""
    from dgx.sampler import Windowed

    grid = torch.linspace(1.0, 0.0, steps + 1)
    index = torch.arange(steps)
    sigma = schedule(index, grid)
    _require(sigma.shape == (steps,), f"one sigma per step, shape ({steps},)")
    _require(bool(torch.isfinite(sigma).all()) and bool((sigma >= 0).all()), f"sigma {sigma.tolist()}: finite, >= 0")
    windowed = Windowed(schedule, 1, 3)(index, grid)
    outside = torch.tensor([i not in (1, 2) for i in range(steps)])
    _require(bool((windowed[outside] == 0).all()) and torch.equal(windowed[~outside], sigma[~outside]), "window")


def check_sampler(step) -> None:
    """The sampler contract: a step's sample, scored again as ``x_next``, has the log-density the step returned."""
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t, t_next, sigma = torch.full((3,), 0.8), torch.full((3,), 0.6), torch.full((3,), 0.7)
    out = step(x, v, t, t_next, sigma, generator=torch.Generator().manual_seed(1))
    again = step(x, v, t, t_next, sigma, x_next=out.sample)
    _require(out.sample.shape == x.shape and bool(torch.isfinite(out.sample).all()), "a finite sample of x's shape")
    _require(torch.allclose(again.log_prob, out.log_prob, atol=1e-5), "the sample's log-density, scored again, differs")


def check_objective(objective) -> None:
    """The objective contract on a random SDE step of 8 samples in 2 groups, 3 steps of per-step credit."""
    from dgx.sampler import sde_step

    g = torch.Generator().manual_seed(0)
    adv = objective.advantages(torch.randn(8, 3, generator=g), torch.ones(8, 3), True, 4)
    _require(adv.shape == (8, 3) and bool(torch.isfinite(adv).all()), "advantages: finite, of the signal's shape")
    x, v = torch.randn(8, 4, 4, 4, generator=g), torch.randn(8, 4, 4, 4, generator=g).requires_grad_()
    t, t_next, sigma = torch.full((8,), 0.8), torch.full((8,), 0.6), torch.full((8,), 0.7)
    sample = sde_step(x, v.detach(), t, t_next, sigma, generator=g).sample
    out = sde_step(x, v, t, t_next, sigma, x_next=sample)
    ref = (out.mean.detach() + 0.01 * torch.randn(out.mean.shape, generator=g)) if objective.needs_reference else None
    from dgx.grpo.loss import Recorded

    old = Recorded(out.log_prob.detach(), out.mean.detach())  # on-policy: the rollout's own step
    loss = objective(out, old, adv[:, 0], ref).loss
    _require(loss.ndim == 0 and bool(torch.isfinite(loss)), "a finite scalar loss")
    (grad,) = torch.autograd.grad(loss, out.log_prob)
    moves = adv[:, 0] != 0
    _require(bool((torch.sign(grad[moves]) == -torch.sign(adv[moves, 0])).all()), "descent raises log-probs of A > 0")


def check_model(model) -> None:
    """The model contract on two prompts, one CFG pair at the grid's first step: images, or videos of frames."""
    texts = ["a red circle", "two blue squares"]
    cond = model.encode(texts)
    x = model.init_latents(2, [torch.Generator().manual_seed(i) for i in range(2)])
    grid = model.grid(3)
    _require(grid.shape == (4,) and bool((grid[1:] < grid[:-1]).all()), "a decreasing time grid of steps + 1 points")
    _require(x.device == torch.device(model.device), f"latents on {x.device}, the model on {model.device}")
    calls, evaluations, decodes = model.calls, model.evaluations, model.decodes
    with torch.no_grad():
        v = model.velocity(x, grid[0].expand(2), cond, 2.0)
        images = model.decode(x)
    _require(v.shape == x.shape and bool(torch.isfinite(v).all()), "a finite velocity of the latents' shape")
    counted = (model.calls - calls, model.evaluations - evaluations)
    _require(counted in ((1, 2), (1, 4)), f"one call, one evaluation per image (two with CFG) counted: {counted}")
    video = images.ndim == 5  # (n, frames, 3, H, W): each frame counts as a decoded image
    frames = images.shape[0] * (images.shape[1] if video else 1)
    _require(model.decodes - decodes == frames, f"{frames} decoded images counted: {model.decodes - decodes}")
    rgb = images.shape[0] == 2 and images.shape[-3] == 3 and images.ndim in (4, 5)
    _require(rgb and bool(((images >= 0) & (images <= 1)).all()), "[0, 1] RGB images (N, 3, H, W) or videos")
    from dgx.grpo.adapter import unmatched

    bad = unmatched(model.transformer, model.lora_targets)
    _require(not bad, f"LoRA target {bad[0]!r} matches no layer" if bad else "")


def check_evaluation(run) -> None:
    """The evaluation contract: ``run(out)`` evaluates into the folder ``out``; twice, the same per-image records."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        first, again = run(Path(tmp) / "a"), run(Path(tmp) / "b")
        rows = [(Path(tmp) / d / "per_image.jsonl").read_text().splitlines() for d in ("a", "b")]
    records = [json.loads(r) for r in rows[0]]
    _require(bool(records) and [r["index"] for r in records] == list(range(len(records))), "records in image order")
    _require(rows[0] == rows[1] and first == again, "a second call gives other records: images do not pair")
    head = next(iter(first.values()), None)
    _require(isinstance(head, (int, float)) and not isinstance(head, bool), "a numeric headline first")


def check_prompts(source) -> None:
    """The prompt-source contract: ``source(split)`` for both splits."""
    for split in ("train", "test"):
        prompts = source(split)
        _require(
            bool(prompts) and all(isinstance(m, dict) and isinstance(m.get("prompt"), str) for m in prompts),
            f"{split}: a non-empty list of metadata dicts with a prompt",
        )


def check_entry(registry: Registry, section: str, name: str, folder: Path, device: str = "cpu") -> None:
    """Build the entry ``name`` of ``section`` through the config path (its stand-in's arguments) and check it."""
    from dgx.grpo.build import DTYPES, build_nested, build_reward, entry_arguments
    from dgx.grpo.config import RewardConfig

    entry = registry.get(section, name)
    made = stand_in(entry, folder)
    if section == "rewards":
        check_reward(build_reward(RewardConfig(name=name, **made.args), registry, device), device, made.metadata)
        return
    impl = entry.load()
    kwargs = entry_arguments(entry, section, impl, made.args, set(made.args))
    if section == "credit":
        check_credit(lambda *a: impl(*a, **kwargs))
    elif section == "noise":
        check_noise(impl(**kwargs))
    elif section == "samplers":
        check_sampler(lambda *a, **k: impl(*a, **k, **kwargs))
    elif section == "objectives":
        check_objective(impl(**kwargs))
    elif section == "models":
        check_model(impl(**kwargs, dtype=DTYPES["float32"], device=device))
    elif section == "evaluations":
        nested = build_nested(impl, section, kwargs, lambda node, at: build_reward(node, registry, device, at), name)
        check_evaluation(_evaluation(impl, nested, device))
    elif section == "prompts":
        check_prompts(lambda split: impl(split, **kwargs))
    else:
        raise ConfigError(f"no contract for {section!r}; the kinds with one: {', '.join(KINDS)}")


def _evaluation(impl, kwargs: dict, device: str):
    """``run(out)``: the evaluation of 4 images (2 prompts x 2, 2 ODE steps) of the shapes world's generator."""
    from dgx.eval.benchmarks import Protocol
    from dgx.sampler import SD3Model

    model = SD3Model.from_pretrained(str(resources.files("dgx.rewards.shapes").joinpath("weights")), device=device)
    protocol = Protocol(steps=2, guidance=2.0, images_per_prompt=2, max_prompts=2, seed=0, batch=4)
    return lambda out: impl(model, replace(protocol, out=out), **kwargs)
