"""Typed run configs (pydantic), ablation files (base + variants + seeds) and validation.

A run config has the sections below; every field has a default and a description. An
ablation file is ``base`` (a run config), ``variants`` (name -> overrides, deep-merged
into base) and ``seeds``. Every error names the file, the key path, the bad value and the
closest valid names; component names are checked against the registry.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from dgx.grpo import data, yamlfile
from dgx.grpo.errors import ConfigError
from dgx.grpo.metrics import missing_tracker
from dgx.grpo.nodes import NodeError, check_arguments
from dgx.grpo.prompts import line_problem
from dgx.grpo.registry import Registry, defaults_not_taken, suggest
from dgx.sampler.steps import takes_noise
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class _Strict(BaseModel):
    """Unknown keys are errors, numbers must be finite, and a boolean is not a number (``iterations: true``)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        ann = cls.model_fields[info.field_name].annotation
        takes_bool = ann is bool or bool in get_args(ann)
        if not takes_bool and (
            isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))
        ):
            raise ValueError("expected a number or a name, got a boolean")
        return value


def named(default: str, section: str, what: str) -> Any:
    """The ``name`` field of a component node: an entry of the registry's ``section`` (or ``module:attr``)."""
    return Field(default, description=f"registry `{section}` entry; its own arguments beside it{what}")


class Node(_Strict):
    """A component: ``name`` (a registry name, or ``module:attr``: an importable class or function, or one in a
    ``module.py`` beside the config) and the component's own keyword arguments, which ``dgx validate`` checks against
    the implementation's signature (names, types, required ones) before any model loads."""

    model_config = ConfigDict(extra="allow", validate_default=True, allow_inf_nan=False)

    @property
    def args(self) -> dict[str, Any]:
        """The component's own keyword arguments, as the config gives them."""
        return dict(self.model_extra or {})


class ModelConfig(Node):
    name: str = named(
        "shapes", "models", " (`path`: a Hub id or local folder, `max_sequence_length`, `resolution`, ...)"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="model weights dtype")


class WindowConfig(_Strict):
    """The steps that draw noise; written ``[start, stop]`` for a fixed window."""

    start: int = Field(ge=0, description="first noisy step of the first iteration (0 = the first step)")
    stop: int = Field(gt=0, description="one past the last noisy step of the first iteration")
    shift: int = Field(0, ge=0, description="steps the window moves every `every` iterations (0: fixed)")
    every: int = Field(1, ge=1, description="iterations before each move (MixGRPO's iters_per_group)")
    roll_back: bool = Field(
        True, description="a window that would pass the last step starts over at `start` (else it stays at the end)"
    )
    draw: tuple[int, int] | None = Field(
        None,
        description="[lo, hi]: each iteration's window of stop - start steps starts at a step drawn uniformly from "
        "lo..hi - (stop - start) (Flow-GRPO-Fast's sde_window_range); None: `start`, moved by `shift`",
    )

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, value):
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"start": value[0], "stop": value[1]}
        return value


class NoiseConfig(Node):
    name: str = named("uniform", "noise", " (uniform: `a`)")
    window: WindowConfig | None = Field(
        None,
        description="noise only on steps [start, stop) (0 = the first), ODE elsewhere: `[start, stop]`, a sliding "
        "window `{start, stop, shift, every, roll_back}` (MixGRPO) or a drawn one `{start, stop, draw}` "
        "(Flow-GRPO-Fast); None = every step",
    )


class SamplerConfig(_Strict):
    name: str = Field("sde", description="registry `samplers` entry used for training rollouts")
    steps: int = Field(10, ge=1, description="T, denoising steps per training rollout")
    guidance: float = Field(1.0, ge=0, le=100, description="classifier-free guidance scale (1 = off)")
    noise: NoiseConfig = Field(
        default_factory=NoiseConfig, description="the SDE's noise level per step: a `noise` node, and its window"
    )
    ode_solver: Literal["euler", "heun"] = Field(
        "euler",
        description="the training rollouts' steps that draw no noise (outside a window) and the dense credit's "
        "continuations: Euler, or Heun's second order (one more model call a step; the last step stays Euler)",
    )


class RewardConfig(Node):
    name: str = named("geneval_shapes", "rewards", " (`path`, `partial`, ...)")


class CreditConfig(Node):
    name: str = named("sparse", "credit", " (which reward each step is trained on; dense_gain: `ode_steps`, ...)")


class ObjectiveConfig(Node):
    name: str = named(
        "flow_grpo", "objectives", " (the loss and its advantages; flow_grpo: `clip_range`, `kl_beta`, ...)"
    )


class EmaConfig(_Strict):
    """The adapter's exponential moving average, used for evaluation and export (dgx.grpo.updates). A number in
    its place is the decay, with Flow-GRPO's schedule."""

    decay: float = Field(0.9, gt=0, lt=1, description="the decay d once warmed up (Flow-GRPO: 0.9)")
    every: int = Field(
        8, ge=1, description="update after optimizer step n when n + 1 is a multiple of this (Flow-GRPO: 8)"
    )
    warmup: bool = Field(True, description="decay min((1 + n) / (10 + n), d) after step n (Flow-GRPO); false: d")
    repeats: int = Field(
        1,
        ge=1,
        description="updates each time (Flow-GRPO updates once per training batch: its gradient_accumulation_steps, "
        "the training batches per process per optimizer step)",
    )


class TrainConfig(_Strict):
    iterations: int = Field(20, ge=0, description="GRPO iterations (sampling + update rounds)")
    prompts_per_iter: int = Field(8, ge=1, description="prompts per iteration (global)")
    prompt_sampling: Literal["uniform", "by_tag"] = Field(
        "uniform", description="uniform over the train prompts, or by_tag: a tag uniformly, then a prompt of that tag"
    )
    group_size: int = Field(8, ge=2, description="G, rollouts per prompt")
    inner_epochs: int = Field(1, ge=1, description="passes over each iteration's samples")
    updates_per_epoch: int = Field(
        1, ge=1, description="optimizer steps per inner epoch (train.update_split says what each one trains)"
    )
    update_split: Literal["samples", "steps"] = Field(
        "samples",
        description="samples: each optimizer step of an epoch trains a shuffled share of the samples at all their "
        "trained steps (Flow-GRPO); steps: the (sample, step) pairs, ordered step by step over all samples, cut into "
        "updates_per_epoch pieces (dgx's option). The same with one step per epoch",
    )
    zero_advantage: Literal["drop", "keep"] = Field(
        "drop",
        description="drop: samples whose advantages are zero at every step (a group of equal rewards) are left out "
        "of the update, some drawn back to make the count a multiple of updates_per_epoch (Flow-GRPO); keep: they "
        "train with advantage 0, adding only their KL term (dgx's option)",
    )
    micro_batch: int = Field(
        32,
        ge=1,
        description="(sample, step) pairs per backward pass; gradients accumulate over a chunk's micro-batches",
    )
    timestep_fraction: float = Field(1.0, gt=0, le=1, description="fraction of the stochastic steps trained per sample")
    timestep_selection: Literal["first", "random"] = Field(
        "first",
        description="first: the first int(fraction * steps) stochastic steps, every sample, every epoch "
        "(Flow-GRPO: 9 of 10 at 0.99); random: ceil(fraction * steps) steps drawn per sample and epoch (dgx's option)",
    )
    adapter: Literal["lora", "full"] = Field(
        "lora",
        description="what trains: a LoRA adapter (the lora_* keys), or full: every weight of the transformer, with a "
        "frozen copy of it as the KL reference (about 4x the transformer's float32 size with AdamW, plus the copy)",
    )
    lora_rank: int = Field(8, ge=1, le=1024, description="LoRA rank r")
    lora_alpha: int = Field(16, ge=1, le=4096, description="LoRA alpha: the adapter's update is scaled by alpha / r")
    lora_targets: list[str] | None = Field(
        None,
        description="peft target_modules; None: the model's own (its adapter's `lora_targets`: Flow-GRPO's for SD3, the "
        "joint attention only, 'attn.*', and for FLUX, attention and feed-forward). The bare names ('to_q', ...) also "
        "adapt SD3.5's second attention (attn2) of the dual-attention blocks",
    )
    lr: float = Field(3e-4, gt=0, le=1, description="AdamW learning rate of the adapter")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="learning rate over the iterations after warmup (Flow-GRPO: constant); linear and "
        "cosine decay to 0 at train.iterations",
    )
    lr_warmup: int = Field(0, ge=0, description="iterations of linear warmup from 0 to lr")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="AdamW's beta1 and beta2, each in [0, 1)"
    )
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW's decoupled weight decay of the adapter")
    max_grad_norm: float = Field(1.0, gt=0, description="gradients clipped to this global norm before each step")
    ema: EmaConfig | None = Field(
        None,
        description="EMA of the adapter: {decay, every, warmup, repeats}, or a decay with Flow-GRPO's schedule "
        "(None = off)",
    )

    @field_validator("ema", mode="before")
    @classmethod
    def _ema_decay(cls, value: Any) -> Any:
        return {"decay": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    gradient_checkpointing: bool = Field(
        False, description="recompute the transformer blocks' activations in the backward pass (less memory, more time)"
    )
    save_every: int = Field(5, ge=1, description="checkpoint every N iterations")
    keep_last: int = Field(2, ge=1, description="checkpoints kept (the newest), besides milestones and the best")
    keep_every: int | None = Field(
        None, ge=1, description="milestones: the checkpoint after every N-th iteration is kept for good (None = none)"
    )
    log_with: list[str] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers (accelerate's): tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, "
        "swanlab, trackio; [] for the JSONL/CSV files only. wandb logs offline with WANDB_MODE=offline",
    )


class CalibrateConfig(_Strict):
    iterations: int = Field(10, ge=1, description="K in Algorithm 1")
    prompts: int = Field(8, ge=1, description="prompts per calibration iteration")
    group_size: int = Field(4, ge=1, description="samples per prompt (N = prompts * group_size)")
    check_prompts: int = Field(
        16,
        ge=1,
        description="prompts of the final check that compares the calibrated and the "
        "uniform a = 0.7 schedules' balance on the same fresh samples (x group_size)",
    )
    eps1: float = Field(2.0, ge=0, description="balance tolerance on #(dR>0) - #(dR<0)")
    eps2: float = Field(0.01, gt=0, description="psi(t) step")
    silent: Literal["explore", "hold"] = Field(
        "explore",
        description="a step where no dense reward changed (#pos = #neg = 0): 'explore' counts it as balanced "
        "and raises psi (Algorithm 1 as written), 'hold' leaves psi there unchanged (no evidence either way)",
    )
    init: Union[float, list[float], Literal["uniform"]] = Field(
        "uniform",
        description="initial psi: 'uniform' (Flow-GRPO's a * sqrt(t / (1 - t)) with a = 0.7), one value, or one per "
        "step",
    )


class EvalConfig(Node):
    """The evaluation (``name``, its own arguments beside it: a model ``path``, a ``prompts_file``, a ``reward``
    node, ...) and the sampling protocol every evaluation follows (the fields below; dgx.eval.benchmarks.Protocol)."""

    name: str = named("shapes_geneval", "evaluations", " (shapes_reward: `reward`; pickscore: `prompts_file`, ...)")
    steps: int = Field(20, ge=1, description="ODE steps at evaluation (paper: 40 for SD3.5-M)")
    images_per_prompt: int = Field(4, ge=1, le=1024, description="images sampled per test prompt")
    min_images_per_tag: int = Field(
        0,
        ge=0,
        description="GenEval-style: more images per prompt for tags with few prompts, "
        "so every tag has at least this many images (0 = off, GenEval's own protocol)",
    )
    guidance: float | None = Field(None, ge=0, le=100, description="CFG at eval (default: sampler.guidance)")
    max_prompts: int | None = Field(None, ge=1, description="evaluate only the first N prompts")
    batch: int = Field(64, ge=1, description="images sampled and scored per forward pass at evaluation")
    every: int | None = Field(
        None,
        ge=1,
        description="evaluate during training every N iterations (and after the last) on a fixed test subset, paired "
        "with the base model's images: a test-score curve, sample grids and the best checkpoint (None = off)",
    )
    every_images: int = Field(
        32, ge=1, description="images of the evaluation during training: the first N test prompts, one image each"
    )


class PromptsConfig(Node):
    name: str = named("shapes", "prompts", " (shapes: the shapes world's splits; file: `path`, `test_path`)")


class RunConfig(_Strict):
    model: ModelConfig = Field(default_factory=ModelConfig, description="the generator: a `models` node")
    sampler: SamplerConfig = Field(
        default_factory=SamplerConfig, description="the training rollouts: step rule, steps, guidance, noise schedule"
    )
    reward: RewardConfig = Field(default_factory=RewardConfig, description="what training maximises: a `rewards` node")
    credit: CreditConfig = Field(
        default_factory=CreditConfig, description="which reward each step is trained on: a `credit` node"
    )
    objective: ObjectiveConfig = Field(
        default_factory=ObjectiveConfig, description="the loss and its advantages: an `objectives` node"
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="the loop: batch, what trains, optimiser, EMA, checkpoints, logs"
    )
    calibrate: CalibrateConfig = Field(
        default_factory=CalibrateConfig, description="DenseGRPO's calibration of psi(t) (Algorithm 1)"
    )
    eval: EvalConfig = Field(
        default_factory=EvalConfig, description="the evaluation (an `evaluations` node) and its sampling protocol"
    )
    prompts: PromptsConfig = Field(
        default_factory=PromptsConfig, description="where the training and test prompts come from: a `prompts` node"
    )
    seed: int = Field(
        0, ge=0, lt=2**63, description="the run's seed: every random draw (prompts, noise, LoRA init) is keyed by it"
    )
    device: Literal["auto", "cpu"] = Field(
        "auto",
        description="'auto': accelerate's device for this process (its GPU under `accelerate launch`, else a GPU "
        "where there is one, else the CPU; choose GPUs with CUDA_VISIBLE_DEVICES), or 'cpu'",
    )
    process_group_timeout: float = Field(
        120,
        gt=0,
        le=10080,
        description="minutes a process of an `accelerate launch` waits at a collective for the others (the process "
        "group's timeout; the first variant's applies): long enough for the longest phase between two collectives "
        "(docs/guide/gpus.md estimates it)",
    )

    @property
    def eval_guidance(self) -> float:
        """CFG scale of evaluation samples: ``eval.guidance``, else the sampler's."""
        return self.sampler.guidance if self.eval.guidance is None else self.eval.guidance


REGISTRY_CHECKS = [  # (key path, registry section)
    (("model", "name"), "models"),
    (("sampler", "name"), "samplers"),
    (("sampler", "noise", "name"), "noise"),
    (("reward", "name"), "rewards"),
    (("credit", "name"), "credit"),
    (("objective", "name"), "objectives"),
    (("eval", "name"), "evaluations"),
    (("prompts", "name"), "prompts"),
]
NODES = [  # (key path, registry section): components whose own arguments sit in their node
    (("model",), "models"),
    (("sampler", "noise"), "noise"),
    (("reward",), "rewards"),
    (("credit",), "credit"),
    (("objective",), "objectives"),
    (("eval",), "evaluations"),
    (("prompts",), "prompts"),
]
MOVED = {  # (section, key) of the forms before the credit and objective nodes (2026-12-05) -> what to change
    **{
        ("reward", k): "the credit rule is its own node now: move reward.credit (and ode_steps, chunk, pipeline) to "
        "`credit: {name: dense_gain, ode_steps: t}` beside `reward`"
        for k in ("credit", "ode_steps", "chunk", "pipeline")
    },
    **{
        ("train", k): f"the objective is its own node now: move train.{k} to `objective: {{name: flow_grpo, {k}: ...}}`"
        for k in ("kl_beta", "kl", "clip_range", "guidance_grad", "adv_std", "adv_ddof", "adv_clip_max")
    },
}


class Ablation(BaseModel):
    """A resolved ablation: the file, each variant's RunConfig, and the seeds."""

    path: Path
    variants: dict[str, RunConfig]
    seeds: list[int]
    registry_files: list[Path] = []  # the file's own `registry:` entries, resolved
    warnings: list[str] = []  # valid but implausible settings (sizes), one line each

    def registry(self) -> Registry:
        return Registry(self.registry_files, config=self.path)

    def variant(self, name: str | None = None) -> tuple[str, RunConfig]:
        """The named variant (default: the first) and its config; an unknown name is a ConfigError."""
        name = name or next(iter(self.variants))
        if name not in self.variants:
            raise ConfigError(f"{self.path}: no variant {name!r}{suggest(name, self.variants)}")
        return name, self.variants[name]


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` into a copy of ``base``; nested dicts merge, everything else replaces. A component node whose
    ``name`` the override changes is replaced whole: the other component's arguments do not carry over."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        old = out.get(k)
        renamed = (
            isinstance(v, dict) and isinstance(old, dict) and "name" in v and v["name"] != old.get("name", v["name"])
        )
        out[k] = (
            deep_merge(old, v) if isinstance(v, dict) and isinstance(old, dict) and not renamed else copy.deepcopy(v)
        )
    return out


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_sets(items: list[str] | tuple[str, ...]) -> dict:
    """``["train.lr=1e-3", "sampler.noise={name: uniform, a: 0.5}"]`` -> a nested override dict;
    each value is read as YAML (numbers, booleans, lists and mappings keep their types)."""
    out: dict = {}
    for item in items:
        key, eq, text = item.partition("=")
        parts = key.strip().split(".")
        if not eq or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. train.lr=1e-3")
        value = yamlfile.parse(text, f"--set {item!r}")
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as a string
            value = float(value)
        node = out
        for k in parts[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} was already set to a value, not a mapping")
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """A config file's top-level mapping; every problem (missing, unreadable, not text, not YAML, a duplicate key,
    an alias bomb, too deep, not a mapping) is a ConfigError naming the file (dgx.grpo.yamlfile)."""
    data = yamlfile.read(path)
    if data is None:
        raise ConfigError(f"{path}: empty file; expected a run config or an ablation (base/variants/seeds)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load(path: str | Path, registry: Registry | None = None, overrides: dict | None = None) -> Ablation:
    """Read a run config or an ablation file and validate every variant (no model is loaded);
    ``overrides`` (e.g. from ``parse_sets``) is deep-merged into every variant last."""
    path = Path(path)
    data = read_yaml(path)
    files = _registry_files(path, data.pop("registry", []))
    registry = registry or Registry(files, config=path)
    ablation = "base" in data or "variants" in data
    base, variants, seeds = _ablation_parts(path, data) if ablation else (data, {"default": {}}, [data.get("seed", 0)])
    if ablation and "seed" in (overrides or {}):
        raise ConfigError(f"--set seed: {path} is an ablation, whose runs take its seeds: list; use dgx run --seed N")
    if ablation:
        _check_seeds(path, seeds)
    resolved = {}
    for name, over in variants.items():
        _check_variant_name(path, name)
        if over is not None and not isinstance(over, dict):
            raise ConfigError(f"{path}: variants.{name}: expected a mapping of overrides, got {over!r}")
        merged = deep_merge(deep_merge(base, over or {}), overrides or {})
        prefix = f"variants.{name}" if ablation else ""
        resolved[name] = validate(merged, path, over or {}, prefix, registry, overrides or {})
    notes = [
        f"{path}: {name}: {w}" if len(resolved) > 1 else f"{path}: {w}"
        for name, c in resolved.items()
        for w in implausible(c)
    ]
    return Ablation(path=path, variants=resolved, seeds=seeds, registry_files=files, warnings=notes)


def _registry_files(path: Path, given) -> list[Path]:
    """The config's own registry files (``registry:``, one or a list), relative to the config."""
    given = [given] if isinstance(given, str) else given
    if not isinstance(given, list) or not all(isinstance(p, str) for p in given):
        raise ConfigError(f"{path}: registry: a registry file or a list of them, got {given!r:.80}")
    return [path.parent / p for p in given]


def _ablation_parts(path: Path, data: dict) -> tuple[dict, dict, list]:
    """An ablation file's ``base``, ``variants`` and ``seeds``; an unknown top-level key or a malformed part is a
    ConfigError."""
    allowed = {"base", "variants", "seeds"}
    for k in data:
        if k not in allowed:
            raise ConfigError(f"{path}: {k}: unknown top-level key of an ablation{suggest(k, allowed)}")
    base, variants = data.get("base") or {}, data.get("variants") or {"default": {}}
    if not isinstance(variants, dict):
        raise ConfigError(f"{path}: variants: expected a mapping of name -> overrides, got {type(variants).__name__}")
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: base: expected a mapping, got {type(base).__name__}")
    return base, variants, data.get("seeds", [0])


def _check_seeds(path: Path, seeds) -> None:
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{path}: seeds: expected a list of integers, got {seeds!r}")
    if not seeds:
        raise ConfigError(f"{path}: seeds: empty; give at least one seed, e.g. [0]")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"{path}: seeds: {seeds} repeats a seed; each seed is one run, so repeats add nothing")
    bad = next((s for s in seeds if not 0 <= s < 2**63), None)
    if bad is not None:
        raise ConfigError(f"{path}: seeds: {bad} is not a seed; seeds lie in [0, 2^63)")


def _check_variant_name(path: Path, name) -> None:
    """A variant's name is its results folder: letters, digits, '_' or '-', at most 64 characters, and not ``base``
    (the base model's folder)."""
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum() or len(name) > 64:
        raise ConfigError(
            f"{path}: variants.{_key(name)}: variant names are 1 to 64 letters, digits, '_' or '-' (a folder name)"
        )
    if name == "base":
        raise ConfigError(f"{path}: variants.base: 'base' is the base model's results folder; name the variant else")


def validate(
    data: dict, path: Path, override: dict, prefix: str, registry: Registry, cli: dict | None = None
) -> RunConfig:
    """Validate one merged config; errors point at ``--set`` or into the variant when they set the key."""

    def set_on_cli(loc: tuple) -> bool:  # --set gave this key, or replaced a mapping above it with a value
        node: Any = cli or {}
        for k in loc:
            if not isinstance(node, dict) or k not in node:
                return False
            node = node[k]
            if not isinstance(node, dict):
                return True
        return bool(loc)

    def where(loc: tuple) -> str:
        if set_on_cli(loc):
            return "--set " + ".".join(_key(x) for x in loc)
        node = override
        for k in loc:
            if not isinstance(node, dict) or k not in node:
                return ".".join(["base"] * bool(prefix) + [_key(x) for x in loc])
            node = node[k]
        return ".".join([prefix] * bool(prefix) + [_key(x) for x in loc])

    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_validation_lines(e, path, where)) from None
    _check_components(cfg, path, registry, where)
    problem = _cross_field(cfg, data, registry)
    if problem:
        keys, message = problem
        raise ConfigError(f"{path}: {where(keys)}: {message}")
    return cfg


def _key(part) -> str:
    """A key of a config path as errors show it: a long one cut to a readable width."""
    text = str(part)
    return text if len(text) <= yamlfile.MAX_SHOWN else yamlfile.shorten(text)


def _validation_lines(e: ValidationError, path: Path, where: Callable[[tuple], str]) -> str:
    """pydantic's errors as one line per key (a union's branches, int or 't', joined with "or")."""
    by_key: dict[str, list[str]] = {}
    for err in e.errors():
        # drop pydantic's union-branch tags (e.g. reward.ode_steps.int / .literal['t'])
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and (x == "int" or x.startswith("literal["))))
        key = where(loc)
        if err["type"] == "extra_forbidden":
            model = _model_at(loc[:-1])
            moved = MOVED.get(tuple(loc[-2:]))  # a key of the form before the objective node
            by_key.setdefault(key, []).append(moved or f"unknown key{suggest(loc[-1], model.model_fields)}")
        else:
            by_key.setdefault(key, []).append(f"{err['msg']} (got {err.get('input')!r})")
    return "\n".join(f"{path}: {key}: {' or '.join(dict.fromkeys(msgs))}" for key, msgs in by_key.items())


def _check_components(cfg: RunConfig, path: Path, registry: Registry, where: Callable[[tuple], str]) -> None:
    """Every component name resolves and imports, and every node's own arguments are its implementation's
    (converted to their annotated types in place)."""
    for keys, section in REGISTRY_CHECKS:
        value: Any = cfg
        for k in keys:
            value = getattr(value, k, None)
        if value is None:  # an optional name left unset
            continue
        _importable(registry.get(section, value, where=f"{path}: {where(keys)}: "), f"{path}: {where(keys)}: ")
    for keys, section in NODES:
        node: Any = cfg
        for k in keys:
            node = getattr(node, k)
        entry = registry.get(section, node.name)
        try:
            node.__pydantic_extra__.update(check_arguments(node.args, entry, entry.load(), section, registry))
        except NodeError as e:
            why = MOVED.get((keys[0], e.key), str(e))  # a key of the form before the credit node
            raise ConfigError(f"{path}: {where((*keys, e.key))}: {why}") from None


def _importable(entry, at: str) -> None:
    """A registry entry whose implementation does not import, or whose ``defaults`` name an argument it does not take,
    is a config error, found before any work."""
    try:
        impl = entry.load()
    except Exception as e:  # noqa: BLE001  (any import-time failure of user code)
        raise ConfigError(
            f"{at}{entry.name!r} ({entry.source} registry): its impl {entry.impl!r} does not import "
            f"({type(e).__name__}: {e})"
        ) from None
    try:
        bad, takes = defaults_not_taken(entry, impl)
    except (TypeError, ValueError):  # no signature to read (a builtin): its own call reports a bad argument
        return
    if bad:
        raise ConfigError(
            f"{at}{entry.name!r} ({entry.source} registry): defaults {', '.join(sorted(bad))} are not arguments of "
            f"{entry.impl} (it takes {', '.join(sorted(takes)) or 'no arguments'})"
        )


def _prompt_file(path: str, needs_tags: bool = False) -> str | None:
    """Why a prompt file cannot serve, or None: missing, unreadable, empty, a NUL byte, or (JSONL) a line that is
    not a JSON object with a ``prompt`` (and a ``tag`` where ``needs_tags``), each naming the first bad line."""
    if path.startswith(data.SCHEME) and path[len(data.SCHEME) :] not in data.SETS:
        return f"unknown data set {path!r} (known: {', '.join(data.SCHEME + n for n in data.SETS)})"
    p = _local_prompts(path)
    if p is None:  # a data set not fetched yet: a warning (implausible), fetched on first use
        return None
    if not p.is_file():
        return f"prompt file {path!r} not found"
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return f"prompt file {path!r} cannot be read as text ({getattr(e, 'strerror', None) or e})"
    if not any(ln.strip() for ln in lines):
        return f"prompt file {path!r} is empty"
    if needs_tags and p.suffix != ".jsonl":
        return f"prompt file {path!r} has no tags: train.prompt_sampling: by_tag needs a JSONL file with a 'tag' each"
    for i, ln in enumerate(lines, 1):
        why = line_problem(ln, p.suffix == ".jsonl", needs_tags)
        if why:
            return f"prompt file {path!r}, line {i}: {why}"
    return None


ODD = re.compile("[\u200b-\u200d\u2060\ufeff\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")  # zero-width and control


Problem = tuple[tuple, str] | None  # (key path, message) of the first rule a config breaks, or None


def _cross_field(cfg: RunConfig, data: dict, registry: Registry) -> Problem:
    """The first rule across fields that ``cfg`` breaks, as (key path, message); None if it breaks none."""
    checks = (
        lambda: _model_problem(cfg),
        lambda: _sampler_problem(cfg, data, registry),
        lambda: _steps_problem(cfg),
        lambda: _train_problem(cfg),
        lambda: _prompts_problem(cfg),
    )
    return next((p for check in checks if (p := check()) is not None), None)


def _model_problem(cfg: RunConfig) -> Problem:
    """A model ``path`` that is a local path (not a Hub id ``org/name``) and does not exist."""
    path = cfg.model.args.get("path")
    if not isinstance(path, str) or path.startswith("pkg://"):
        return None
    local = path.startswith(("/", "./", "../", "~", ".\\")) or path.count("/") > 1 or "\\" in path
    if local and not Path(path).expanduser().exists():
        return ("model", "path"), f"{path!r}: no such folder (a Hub model is named as org/name)"
    return None


def _sampler_problem(cfg: RunConfig, data: dict, registry: Registry) -> Problem:
    steps, noise = cfg.sampler.steps, cfg.sampler.noise
    if "noise" in (data.get("sampler") or {}) and not takes_noise(registry.get("samplers", cfg.sampler.name).load()):
        return ("sampler", "name"), (
            f"the sampler {cfg.sampler.name!r} draws no noise; remove sampler.noise or use a stochastic one (sde, cps)"
        )
    w = noise.window
    if w is not None and not 0 <= w.start < w.stop <= steps:
        return ("sampler", "noise", "window"), (
            f"[{w.start}, {w.stop}] must satisfy 0 <= start < stop <= sampler.steps = {steps}"
        )
    if w is not None and w.draw is not None and (w.shift or not 0 <= w.draw[0] <= w.draw[1] - (w.stop - w.start)):
        return ("sampler", "noise", "window", "draw"), (
            f"{list(w.draw)}: a drawn window takes no shift, and needs 0 <= lo <= hi - (stop - start)"
        )
    if w is not None and w.draw is not None and w.draw[1] > steps:
        return ("sampler", "noise", "window", "draw"), f"{list(w.draw)}: hi must be <= sampler.steps = {steps}"
    return None


def _steps_problem(cfg: RunConfig) -> Problem:
    """Values that count denoising steps: calibration's initial psi (one per step) and the credit's ODE steps n."""
    steps, init = cfg.sampler.steps, cfg.calibrate.init
    if isinstance(init, list) and len(init) != steps:
        return ("calibrate", "init"), f"has {len(init)} values but sampler.steps is {steps} (one psi per step)"
    if (isinstance(init, list) and any(v < 0 for v in init)) or (isinstance(init, float) and init < 0):
        return ("calibrate", "init"), "psi values must be >= 0"
    n = cfg.credit.args.get("ode_steps", "t")
    if n != "t" and not 1 <= n <= steps:
        return ("credit", "ode_steps"), f"{n} must be 't' or between 1 and sampler.steps = {steps}"
    return None


def _train_problem(cfg: RunConfig) -> Problem:
    t = cfg.train
    if t.lr_warmup > t.iterations:
        return ("train", "lr_warmup"), f"{t.lr_warmup} warm-up iterations exceed train.iterations = {t.iterations}"
    bad = [x for x in t.lora_targets or [] if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", x)]
    if t.lora_targets is not None and (not t.lora_targets or bad):
        return ("train", "lora_targets"), (
            f"expected module names such as 'attn.to_q' (dotted, no spaces), got {bad or t.lora_targets}"
        )
    for name in t.log_with:
        if why := missing_tracker(name):
            return ("train", "log_with"), why
    if t.keep_every is not None and t.keep_every % t.save_every:
        return ("train", "keep_every"), (
            f"{t.keep_every} is not a multiple of train.save_every = {t.save_every}: a milestone must be a saved "
            "checkpoint"
        )
    return None


def _prompt_files(cfg: RunConfig) -> list[tuple[tuple, str, bool]]:
    """(key path, file, whether it needs tags) of the prompt files a config names."""
    named = [
        (("prompts", "path"), cfg.prompts.args.get("path"), cfg.train.prompt_sampling == "by_tag"),
        (("prompts", "test_path"), cfg.prompts.args.get("test_path"), False),
        (("eval", "prompts_file"), cfg.eval.args.get("prompts_file"), False),
    ]
    return [(keys, file, tags) for keys, file, tags in named if isinstance(file, str)]


def _prompts_problem(cfg: RunConfig) -> Problem:
    """A prompt file (the prompt source's or the evaluation's) that cannot serve, named with its first bad line."""
    for keys, file, tags in _prompt_files(cfg):
        if why := _prompt_file(file, tags):
            return keys, why
    return None


def implausible(cfg: RunConfig) -> list[str]:
    """Sizes that are valid but unlikely to fit in memory or time (warnings, not errors): more than 65,536 samples,
    pairs or images in one batch, or more than 1,000 denoising steps."""
    t = cfg.train
    sizes = {  # key -> (value, limit)
        "train.prompts_per_iter x train.group_size": (t.prompts_per_iter * t.group_size, 1 << 16),
        "train.micro_batch": (t.micro_batch, 1 << 16),
        "credit.chunk": (cfg.credit.args.get("chunk", 0), 1 << 16),
        "calibrate.prompts x calibrate.group_size": (cfg.calibrate.prompts * cfg.calibrate.group_size, 1 << 16),
        "eval.batch": (cfg.eval.batch, 1 << 16),
        "sampler.steps": (cfg.sampler.steps, 1000),
    }
    out = [f"{k} = {v:,} is implausibly large (memory and time)" for k, (v, limit) in sizes.items() if v > limit]
    for keys, file, _ in _prompt_files(cfg):
        local = _local_prompts(file)
        if local is None:
            name = file[len(data.SCHEME) :]
            out.append(
                f"{'.'.join(keys)}: data set {name!r} is not fetched yet: `dgx data {name}` (or the run fetches it)"
            )
            continue
        lines = local.read_text(encoding="utf-8").splitlines()
        odd = next((i for i, ln in enumerate(lines, 1) if ODD.search(ln)), None)
        if odd:
            out.append(f"{'.'.join(keys)}: {file}, line {odd}: zero-width or control characters in a prompt")
    return out


def _local_prompts(path: str) -> Path | None:
    """The local file of a prompt path: ``data://NAME``'s cached file (None while it is not fetched), else the path."""
    return data.cached(path[len(data.SCHEME) :]) if path.startswith(data.SCHEME) else Path(path)


def _model_at(loc: tuple) -> type[BaseModel]:
    model: type[BaseModel] = RunConfig
    for k in loc:
        ann = model.model_fields[k].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else model
    return model
