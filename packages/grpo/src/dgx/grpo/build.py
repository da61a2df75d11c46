"""Build components named by a RunConfig through the registry (no model loads at validation)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from dgx.grpo.config import RewardConfig, RunConfig
from dgx.grpo.errors import ConfigError
from dgx.grpo.nodes import signature
from dgx.grpo.registry import Entry, Registry, defaults_not_taken
from dgx.sampler import Windowed

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_path(path: str) -> str:
    """``pkg://package/sub/path`` -> the folder inside an installed package; else unchanged."""
    if path.startswith("pkg://"):
        pkg, _, sub = path[len("pkg://") :].partition("/")
        return str(resources.files(pkg).joinpath(sub))
    return path


def entry_arguments(entry: Entry, section: str, factory, given: dict | None = None, explicit=()) -> dict:
    """The keyword arguments a registry entry's implementation gets: ``given`` (from the config), with the entry's
    ``defaults`` (``pkg://`` paths resolved) in place of any key the config did not set (``explicit``). The same rule
    for every kind of component. A default the implementation does not take is a ConfigError naming it."""
    bad, takes = defaults_not_taken(entry, factory)
    if bad:
        raise ConfigError(
            f"registry {section}.{entry.name}.defaults.{bad[0]} ({entry.source}): {entry.name!r} takes no {bad[0]!r} "
            f"(it takes {', '.join(sorted(takes)) or 'no arguments'})"
        )
    out = dict(given or {})
    for k, v in entry.defaults.items():
        if k not in explicit:
            out[k] = resolve_path(v) if isinstance(v, str) else v
    return out


def build_model(cfg: RunConfig, registry: Registry, device: str | torch.device | None = None):
    """The registry entry's builder on ``device`` (default: ``device_for(cfg)``); its ``defaults`` other
    than path and max_sequence_length, and model.resolution when set, are passed as keywords."""
    if device is None:
        from dgx.grpo.distributed import device_for

        device = device_for(cfg)
    entry = registry.get("models", cfg.model.name)
    extra = {k: v for k, v in entry.defaults.items() if k not in ("path", "max_sequence_length")}
    if cfg.model.resolution is not None:
        extra["resolution"] = cfg.model.resolution
    path = resolve_path(cfg.model.path or entry.defaults.get("path", ""))
    msl = cfg.model.max_sequence_length
    msl = entry.defaults.get("max_sequence_length", 256) if msl is None else msl
    return entry.load()(path, dtype=DTYPES[cfg.model.dtype], device=str(device), max_sequence_length=msl, **extra)


def build_reward(
    node: RewardConfig, registry: Registry, device: str | torch.device | None = None, where: str = "reward"
):
    """The reward of ``node`` (its registry entry's ``defaults``, ``pkg://`` paths resolved, then the node's own
    arguments); a model-based reward runs on ``device`` (the run's: give it). A reward made of rewards (its
    implementation takes ``rewards``) gets each reward its ``weights`` name, built from the registry. Every output is
    checked (``CheckedReward``: one finite float per image, else an error naming the reward)."""
    from dgx.rewards.base import CheckedReward

    entry = registry.get("rewards", node.name)
    factory = entry.load()
    kwargs = entry_arguments(entry, "rewards", factory, node.args, set(node.args))
    params = signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if device is not None and ("device" in params or takes_any):
        kwargs["device"] = str(device)
    if "rewards" in params:
        names = kwargs.get("weights") or {}
        kwargs["rewards"] = {
            n: build_reward(RewardConfig(name=n), registry, device, f"{where}.weights.{n}") for n in names
        }
    try:
        return CheckedReward(factory(**kwargs), node.name)
    except TypeError as e:  # an argument the node's check could not see (an implementation taking **kwargs)
        raise ConfigError(f"{where}: the reward {node.name!r} does not take these arguments ({e})") from None


def build_credit(cfg: RunConfig, registry: Registry):
    """The credit rule of ``cfg.credit`` with its own arguments bound (and its entry's ``defaults`` for those the
    node leaves out): called as ``credit(model, trajectory, reward, metadata)``."""
    entry = registry.get("credit", cfg.credit.name)
    fn = entry.load()
    return functools.partial(fn, **entry_arguments(entry, "credit", fn, cfg.credit.args, set(cfg.credit.args)))


def build_step(cfg: RunConfig, registry: Registry):
    """The sampler's step function, its entry's ``defaults`` bound as keywords."""
    entry = registry.get("samplers", cfg.sampler.name)
    fn = entry.load()
    kwargs = entry_arguments(entry, "samplers", fn)
    return functools.partial(fn, **kwargs) if kwargs else fn


def build_schedule(cfg: RunConfig, registry: Registry, psi_path: Path | None = None):
    """The sampler's noise schedule: the ``noise`` entry's factory with the node's own arguments (a schedule that
    reads a psi table, one taking ``psi_path``, gets the node's, else the entry's default, else ``psi_path``: the
    run's calibration); with ``noise.window`` it is zero (an ODE step) outside the window."""
    n = cfg.sampler.noise
    entry = registry.get("noise", n.name)
    factory = entry.load()
    kwargs = entry_arguments(entry, "noise", factory, n.args, set(n.args))
    if needs_calibration(cfg, registry):
        if psi_path is None:
            raise ConfigError(
                f"sampler.noise.name = {n.name} reads a calibrated psi table: set noise.psi_path (or run through "
                "`dgx run`, which calibrates first)"
            )
        kwargs["psi_path"] = psi_path
    schedule = factory(**kwargs)
    if n.window is None:
        return schedule
    start, stop = n.window
    if not 0 <= start < stop <= cfg.sampler.steps:
        raise ConfigError(
            f"sampler.noise.window = [{start}, {stop}] must satisfy 0 <= start < stop <= sampler.steps = {cfg.sampler.steps}"
        )
    return Windowed(schedule, start, stop)


def needs_calibration(cfg: RunConfig, registry: Registry) -> bool:
    """Whether the run's noise schedule reads a psi table (its factory takes ``psi_path``) and neither its node nor
    its registry entry's ``defaults`` give one: ``dgx run`` calibrates first, and hands the table to the schedule."""
    n = cfg.sampler.noise
    entry = registry.get("noise", n.name)
    return "psi_path" in signature(entry.load()).parameters and not (
        n.args.get("psi_path") or entry.defaults.get("psi_path")
    )


def load_prompts(cfg: RunConfig, split: str = "train") -> list[dict]:
    """Prompt metadata dicts (``prompt`` plus GenEval fields where known)."""
    if cfg.prompts.name == "shapes":
        from dgx.rewards.shapes.prompts import split as shapes_split

        return shapes_split(split)
    path = Path(cfg.prompts.path or "")
    if not path.is_file():
        raise ConfigError(f"prompts.path: prompt file {str(path)!r} not found")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"prompts.path: {path} has no prompts")
    if path.suffix == ".jsonl":
        out = []
        for i, ln in enumerate(lines, 1):
            try:
                m = json.loads(ln)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{i}: not JSON ({e.msg})") from None
            if "prompt" not in m:
                raise ConfigError(f"{path}:{i}: object has no 'prompt' key")
            out.append(m)
        return out
    return [{"prompt": ln.strip()} for ln in lines]


def choose_prompts(prompts: list[dict], n: int, rng: np.random.Generator, mode: str = "uniform") -> np.ndarray:
    """Indices of ``n`` prompts: uniformly (without replacement where possible), or ``by_tag``: for each
    pick a tag uniformly among the tags present, then a prompt of that tag."""
    if mode == "uniform":
        return rng.choice(len(prompts), n, replace=len(prompts) < n)
    if any("tag" not in m for m in prompts):
        raise ConfigError("train.prompt_sampling: by_tag needs a 'tag' in every prompt's metadata")
    by_tag: dict[str, list[int]] = {}
    for i, m in enumerate(prompts):
        by_tag.setdefault(m["tag"], []).append(i)
    tags = sorted(by_tag)
    return np.array([rng.choice(by_tag[tags[rng.integers(len(tags))]]) for _ in range(n)])
