"""Build components named by a RunConfig through the registry (no model loads at validation)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
from dgx.grpo.config import RewardConfig, RunConfig
from dgx.grpo.errors import ConfigError
from dgx.grpo.nodes import component, parameters, signature
from dgx.grpo.registry import Entry, Registry, defaults_not_taken
from dgx.sampler import Windowed

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_path(path: str) -> str:
    """``pkg://package/sub/path`` -> the folder inside an installed package; ``data://NAME`` -> the local file of a
    prompt set (``dgx.grpo.data``, fetched on first use); else unchanged."""
    if path.startswith("pkg://"):
        pkg, _, sub = path[len("pkg://") :].partition("/")
        return str(resources.files(pkg).joinpath(sub))
    from dgx.grpo.data import resolve

    return resolve(path)


def entry_arguments(entry: Entry, section: str, factory, given: dict | None = None, explicit=()) -> dict:
    """The keyword arguments a registry entry's implementation gets: ``given`` (from the config), with the entry's
    ``defaults`` in place of any key the config did not set (``explicit``), ``pkg://`` and ``data://`` paths resolved
    (``resolve_path``). The same rule for every kind of component. A default the implementation does not take is a
    ConfigError naming it."""
    bad, takes = defaults_not_taken(entry, factory)
    if bad:
        raise ConfigError(
            f"registry {section}.{entry.name}.defaults.{bad[0]} ({entry.source}): {entry.name!r} takes no {bad[0]!r} "
            f"(it takes {', '.join(sorted(takes)) or 'no arguments'})"
        )
    out = dict(given or {})
    for k, v in entry.defaults.items():
        if k not in explicit:
            out[k] = v
    return {k: resolve_path(v) if isinstance(v, str) else v for k, v in out.items()}


def node_arguments(node, section: str, registry: Registry) -> tuple[object, dict]:
    """A node's implementation (its registry entry's, or ``module:attr``) and its keyword arguments: the node's own,
    and the entry's ``defaults`` for those the node leaves out."""
    entry = registry.get(section, node.name)
    factory = entry.load()
    return factory, entry_arguments(entry, section, factory, node.args, set(node.args))


def build_model(cfg: RunConfig, registry: Registry, device: str | torch.device | None = None):
    """The generator of ``cfg.model``: its registry entry's builder with the node's own arguments (``path``,
    ``max_sequence_length``, ``resolution``, ...; the entry's ``defaults`` for those it leaves out), the weights'
    ``dtype`` and ``device`` (default: ``device_for(cfg)``). A full fine-tune under FSDP2 gets its transformer
    built sharded (dgx.grpo.shards), which the builder takes as ``transformer``."""
    from dgx.grpo import shards

    if device is None:
        from dgx.grpo.distributed import device_for

        device = device_for(cfg)
    factory, kwargs = node_arguments(cfg.model, "models", registry)
    supplied = {"dtype": DTYPES[cfg.model.dtype], "device": str(device)}
    if (plugin := shards.fsdp_plugin(cfg)) is not None:
        if "transformer" not in signature(factory).parameters:
            raise ConfigError(
                f"train.adapter: full under FSDP2 builds the transformer sharded, and the builder of model "
                f"{cfg.model.name!r} takes no `transformer` to receive it"
            )
        supplied["transformer"] = shards.load_transformer(kwargs["path"], supplied["dtype"], device, plugin)
    return factory(**kwargs, **supplied)


def build_reward(
    node: RewardConfig, registry: Registry, device: str | torch.device | None = None, where: str = "reward"
):
    """The reward of ``node`` (its registry entry's ``defaults``, ``pkg://`` paths resolved, then the node's own
    arguments, nested reward nodes built here too); a model-based reward runs on ``device`` (the run's: give it).
    Every output is checked (``CheckedReward``: one finite float per image, else an error naming the reward)."""
    from dgx.rewards.base import CheckedReward

    factory, kwargs = node_arguments(node, "rewards", registry)
    params = signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if device is not None and ("device" in params or takes_any):
        kwargs["device"] = str(device)
    kwargs = build_nested(factory, "rewards", kwargs, lambda n, at: build_reward(n, registry, device, at), where)
    try:
        return CheckedReward(factory(**kwargs), node.name)
    except (TypeError, ValueError) as e:  # an argument the node's check could not see (``**kwargs``, label sets)
        raise ConfigError(f"{where}: the reward {node.name!r} does not take these arguments ({e})") from None


def build_nested(factory, section: str, kwargs: dict, build: Callable, where: str) -> dict:
    """``kwargs`` with each argument whose parameter is a component type (a reward, or a dict of them) built from
    its node(s) by ``build(node, where)`` (``node``: a RewardConfig)."""
    params = parameters(factory, section)[0]

    def one(node, at: str):
        return build(RewardConfig(**({"name": node} if isinstance(node, str) else node)), at)

    out = dict(kwargs)
    for key, value in kwargs.items():
        kind = component(params[key].annotation) if key in params else None
        if kind is not None:
            many = kind[1]
            out[key] = (
                {k: one(v, f"{where}.{key}.{k}") for k, v in value.items()} if many else one(value, f"{where}.{key}")
            )
    return out


def build_credit(cfg: RunConfig, registry: Registry):
    """The credit rule of ``cfg.credit`` with its own arguments bound (and its entry's ``defaults`` for those the
    node leaves out): called as ``credit(model, trajectory, reward, metadata)``."""
    fn, kwargs = node_arguments(cfg.credit, "credit", registry)
    return functools.partial(fn, **kwargs)


def build_objective(cfg: RunConfig, registry: Registry):
    """The objective of ``cfg.objective`` (its entry's factory with the node's own arguments): its ``advantages``
    turn credit into advantages and calling it gives the loss of a batch of recorded steps (dgx.grpo.loss)."""
    return node_instance(cfg.objective, "objectives", registry)


def node_instance(node, section: str, registry: Registry, **supplied):
    """A registry entry's factory called with the node's own arguments, its ``defaults`` for those the node leaves
    out, and what dgx supplies itself (``supplied``)."""
    factory, kwargs = node_arguments(node, section, registry)
    return factory(**kwargs, **supplied)


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
    supplied = {}
    if needs_calibration(cfg, registry):
        if psi_path is None:
            raise ConfigError(
                f"sampler.noise.name = {n.name} reads a calibrated psi table: set noise.psi_path (or run through "
                "`dgx run`, which calibrates first)"
            )
        supplied["psi_path"] = psi_path
    schedule = node_instance(n, "noise", registry, **supplied)
    if n.window is None:
        return schedule
    w = n.window
    if not 0 <= w.start < w.stop <= cfg.sampler.steps:
        raise ConfigError(
            f"sampler.noise.window = [{w.start}, {w.stop}] must satisfy 0 <= start < stop <= sampler.steps = "
            f"{cfg.sampler.steps}"
        )
    return Windowed(schedule, w.start, w.stop, w.shift, w.every, w.roll_back, w.draw)


def needs_calibration(cfg: RunConfig, registry: Registry) -> bool:
    """Whether the run's noise schedule reads a psi table (its factory takes ``psi_path``) and neither its node nor
    its registry entry's ``defaults`` give one: ``dgx run`` calibrates first, and hands the table to the schedule."""
    n = cfg.sampler.noise
    entry = registry.get("noise", n.name)
    return "psi_path" in signature(entry.load()).parameters and not (
        n.args.get("psi_path") or entry.defaults.get("psi_path")
    )


def load_prompts(cfg: RunConfig, registry: Registry, split: str = "train") -> list[dict]:
    """The ``split`` ("train" or "test") of the run's prompt source (``cfg.prompts``, dgx.grpo.prompts): metadata
    dicts, each with a ``prompt`` (and GenEval fields where known)."""
    source, kwargs = node_arguments(cfg.prompts, "prompts", registry)
    return source(split, **kwargs)
