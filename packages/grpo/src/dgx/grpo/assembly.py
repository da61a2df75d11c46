"""A run's components, built once from its config and the registry and handed to calibration, training and
evaluation (torchtune's recipes build theirs once in ``setup`` the same way).

``assemble(cfg)`` gives one ``Assembly``; ``Assembler`` keeps the generator and the reward of a ``dgx run`` across its
variants and seeds, so that each is loaded once per process while the configs that decide it do not change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from dgx.eval.benchmarks import Scorers
from dgx.grpo import shards
from dgx.grpo.adapter import remove_adapter
from dgx.grpo.build import (
    build_credit,
    build_model,
    build_objective,
    build_reward,
    build_schedule,
    build_step,
    load_prompts,
    needs_calibration,
)
from dgx.grpo.config import RunConfig
from dgx.grpo.distributed import device_for
from dgx.grpo.registry import Registry
from dgx.rewards.base import load_now
from dgx.sampler import Trajectory, rollout, sample_generator


@dataclass(frozen=True)
class Assembly:
    """The components of one run: the generator (``model``), the reward (checked), the credit wrapper, the
    objective (advantages and loss), the sampler step, the noise schedule (None while it waits for calibration's psi table), the training prompts, the device
    every model runs on and the evaluation's scoring models (``scorers``, built on first use)."""

    cfg: RunConfig
    registry: Registry
    device: torch.device
    model: object
    reward: Callable
    credit: Callable
    objective: object
    step: Callable
    schedule: object | None
    prompts: list[dict]
    psi_path: Path | None = None
    scorers: Scorers = field(default_factory=Scorers)

    @property
    def needs_calibration(self) -> bool:
        """Whether the noise schedule reads a psi table that calibration must write first."""
        return self.schedule is None

    def rollouts(self, model, texts: list[str], schedule, key: int, indices) -> Trajectory:
        """The run's stochastic rollouts of ``texts`` on ``model`` (its sampler, steps, guidance and ODE solver, the
        noise ``schedule``): sample i of ``indices`` draws from the generator keyed by (seed, ``key``, i), each prompt
        is encoded once."""
        cfg = self.cfg
        uniq = sorted(set(texts))
        cond = model.encode(uniq).index([uniq.index(p) for p in texts])
        gens = [sample_generator(cfg.seed, key, i) for i in indices]
        s = cfg.sampler
        return rollout(model, cond, texts, s.steps, self.step, schedule, gens, s.guidance, ode_solver=s.ode_solver)

    def with_psi(self, psi_path: Path) -> Assembly:
        """The same components with the noise schedule read from ``psi_path`` (calibration's psi.json)."""
        return replace(self, psi_path=psi_path, schedule=build_schedule(self.cfg, self.registry, psi_path))


def assemble(
    cfg: RunConfig,
    registry: Registry | None = None,
    *,
    device: str | torch.device | None = None,
    psi_path: Path | None = None,
    model=None,
    reward: Callable | None = None,
    scorers: Scorers | None = None,
    load: bool = True,
) -> Assembly:
    """Build every component of ``cfg`` once (``model`` / ``reward`` / ``scorers``: ones already built for the same
    settings). A reward built here loads its models now (``load``), so that a wrong path fails before any sampling.
    ``device`` defaults to the process's (``distributed.device_for``); every model-based reward runs there too."""
    registry = registry or Registry()
    device = torch.device(device) if device is not None else device_for(cfg)
    if reward is None:  # before the generator: a reward that cannot load fails in seconds
        reward = build_reward(cfg.reward, registry, device=device)
        if load:
            load_now(reward)
    model = model if model is not None else build_model(cfg, registry, device)
    waits = needs_calibration(cfg, registry) and psi_path is None
    return Assembly(
        cfg=cfg,
        registry=registry,
        device=device,
        model=model,
        reward=reward,
        credit=build_credit(cfg, registry),
        objective=build_objective(cfg, registry),
        step=build_step(cfg, registry),
        schedule=None if waits else build_schedule(cfg, registry, psi_path),
        prompts=load_prompts(cfg, registry, "train"),
        psi_path=psi_path,
        scorers=scorers if scorers is not None else Scorers(),
    )


class Assembler:
    """Assemblies for the runs of one ``dgx run``: the generator and the reward are built once per process and reused
    while the model / reward settings stay the same (each run's adapter is taken off after it, ``done``); the
    evaluations' scoring models are kept for the whole run. Under FSDP2 the trainer shards a LoRA's generator in place
    and hands back an unsharded rebuild, so the next run builds again; a full fine-tune's is built sharded, and kept."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.model_key = self.model = self.reward_key = self.reward = None
        self.scorers = Scorers()

    def get(self, cfg: RunConfig, psi_path: Path | None = None) -> Assembly:
        # a full fine-tune under FSDP2 builds its model sharded: a model of its own
        sharded = shards.fsdp_plugin(cfg) is not None
        model_key = json.dumps([cfg.model.model_dump(mode="json"), cfg.device, sharded], sort_keys=True)
        reward_key = json.dumps([cfg.reward.model_dump(mode="json"), cfg.device], sort_keys=True)  # its whole node
        if reward_key != self.reward_key:
            self.reward = self.reward_key = None
        if model_key != self.model_key:
            self.model = self.model_key = None  # the previous one is freed before the next is built
        parts = assemble(
            cfg, self.registry, psi_path=psi_path, model=self.model, reward=self.reward, scorers=self.scorers
        )
        self.model, self.model_key, self.reward, self.reward_key = parts.model, model_key, parts.reward, reward_key
        return parts

    def done(self, trained) -> None:
        """After a run: ``trained`` is the model train handed back; the next run gets it without this adapter."""

        if trained is self.model:
            remove_adapter(trained)
        else:
            self.model = self.model_key = None
