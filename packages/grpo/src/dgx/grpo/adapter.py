"""The LoRA adapter on a generator: added (on the model family's targets, or the config's), switched off for the
reference policy and base-model samples, taken off after a run, and loaded from a run's checkpoint with the LoRA
settings it was trained with (its ``adapter_config.json``, PEFT's format)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from dgx.grpo import checkpoint
from dgx.grpo.config import RunConfig
from dgx.grpo.errors import ConfigError
from peft import LoraConfig
from peft.utils import set_peft_model_state_dict


def lora_config(model, cfg: RunConfig) -> LoraConfig:
    """The LoRA settings of ``cfg``: rank, alpha and ``train.lora_targets`` (default the model's own
    ``lora_targets``)."""
    tc = cfg.train
    targets = sorted(tc.lora_targets or model.lora_targets)
    return LoraConfig(r=tc.lora_rank, lora_alpha=tc.lora_alpha, init_lora_weights="gaussian", target_modules=targets)


def unmatched(transformer: torch.nn.Module, targets) -> list[str]:
    """The LoRA ``targets`` that name no layer of ``transformer`` (peft's rule: a module name equal to the target, or
    ending in ``.`` + the target)."""
    names = [n for n, _ in transformer.named_modules()]
    return [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]


def check_targets(model, cfg: RunConfig) -> None:
    """A ConfigError if a target in ``train.lora_targets`` names no layer of the model's transformer (checked before
    any sampling: peft would refuse only when the adapter is added)."""
    bad = unmatched(model.transformer, cfg.train.lora_targets or [])
    if bad:
        raise ConfigError(
            f"train.lora_targets: {bad[0]!r} names no layer of the {cfg.model.name!r} transformer "
            f"(its default targets: {', '.join(model.lora_targets)})"
        )


def add_lora(model, cfg: RunConfig, lora: LoraConfig | None = None) -> list[torch.nn.Parameter]:
    """Freeze the generator's transformer, add a peft LoRA adapter (``lora``, default ``lora_config(model, cfg)``),
    return its (float32) parameters."""
    transformer = model.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(lora or lora_config(model, cfg))
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def remove_adapter(transformer: torch.nn.Module) -> None:
    """Take the LoRA adapter off again: the base model as built (its weights were never trained), ready for the
    next run's adapter."""
    transformer.delete_adapters("default")


@contextmanager
def adapter_disabled(transformer: torch.nn.Module) -> Iterator[None]:
    """The base model inside (the LoRA adapter off: the KL reference, base-model samples); the adapter is back
    on afterwards, also after an error."""
    transformer.disable_adapters()
    try:
        yield
    finally:
        transformer.enable_adapters()


def copy_named(module: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy ``values`` into the parameters of ``module`` they name (an EMA into the adapter)."""
    with torch.no_grad():
        for n, p in module.named_parameters():
            if n in values:
                p.copy_(values[n])


def settings(lora: LoraConfig) -> dict:
    """What decides an adapter's shape and scale: rank, alpha and targets."""
    return {"lora_rank": lora.r, "lora_alpha": lora.lora_alpha, "lora_targets": sorted(lora.target_modules)}


def checkpoint_lora(model, cfg: RunConfig, ck: Path, strict: bool) -> LoraConfig:
    """The LoRA settings checkpoint ``ck`` was trained with (its ``adapter_config.json``); where ``cfg`` says
    otherwise, a ConfigError with ``strict`` (an export, whose card states the config's), else a warning. A
    checkpoint without the file (written before it was kept) takes ``cfg``'s, its rank checked against the weights."""
    mine = lora_config(model, cfg)
    if not (ck / checkpoint.ADAPTER_CONFIG).is_file():
        ranks = {v.shape[0] for k, v in checkpoint.adapter_state(ck).items() if "lora_A" in k}
        if ranks != {mine.r}:
            raise ConfigError(f"checkpoint {ck}: its adapter has rank {sorted(ranks)}, train.lora_rank is {mine.r}")
        return mine
    own, says_cfg = LoraConfig.from_pretrained(str(ck)), settings(mine)
    differ = {k: (v, says_cfg[k]) for k, v in settings(own).items() if says_cfg[k] != v}
    if differ:
        says = "; ".join(f"train.{k} is {b}, the adapter's {a}" for k, (a, b) in differ.items())
        if strict:
            raise ConfigError(f"checkpoint {ck} was not trained with this config ({says})")
        warnings.warn(f"checkpoint {ck}: using the adapter's own LoRA settings ({says})", stacklevel=2)
    return own


def load_adapter(model, cfg: RunConfig, run_or_ckpt: Path, strict: bool = False) -> Path:
    """Add a LoRA adapter to ``model`` with the settings it was trained with and load a run's latest checkpoint (EMA
    weights if saved); ``strict``: a config whose LoRA settings differ is an error, not a warning."""
    run_or_ckpt = Path(run_or_ckpt)
    ck = checkpoint.latest(run_or_ckpt / "checkpoints") if (run_or_ckpt / "checkpoints").is_dir() else run_or_ckpt
    if ck is None or not (ck / "adapter.safetensors").is_file():
        raise ConfigError(f"{run_or_ckpt}: no adapter.safetensors found (give a run folder or a checkpoint folder)")
    if problem := checkpoint.damage(ck):
        raise ConfigError(f"checkpoint {ck}: {problem}; give another checkpoint")
    add_lora(model, cfg, checkpoint_lora(model, cfg, ck, strict))
    set_peft_model_state_dict(model.transformer, checkpoint.adapter_state(ck))
    if (ema := checkpoint.ema_state(ck)) is not None:
        copy_named(model.transformer, ema)
    return ck
