"""The LoRA adapter on a generator: added (on the model family's targets, or the config's), switched off for the
reference policy and base-model samples, taken off after a run, and loaded from a run's checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from dgx.grpo import checkpoint
from dgx.grpo.config import RunConfig
from dgx.grpo.errors import ConfigError
from peft import LoraConfig
from peft.utils import set_peft_model_state_dict


def add_lora(model, cfg: RunConfig) -> list[torch.nn.Parameter]:
    """Freeze the generator's transformer, add a peft LoRA adapter on ``train.lora_targets`` (default the model's own
    ``lora_targets``), return its (float32) parameters."""
    tc, transformer = cfg.train, model.transformer
    targets = list(tc.lora_targets or model.lora_targets)
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=tc.lora_rank, lora_alpha=tc.lora_alpha, init_lora_weights="gaussian", target_modules=targets)
    )
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


def load_adapter(model, cfg: RunConfig, run_or_ckpt: Path) -> Path:
    """Add a LoRA adapter to ``model`` and load a run's latest checkpoint (EMA weights if saved)."""
    run_or_ckpt = Path(run_or_ckpt)
    ck = checkpoint.latest(run_or_ckpt / "checkpoints") if (run_or_ckpt / "checkpoints").is_dir() else run_or_ckpt
    if ck is None or not (ck / "adapter.safetensors").is_file():
        raise ConfigError(f"{run_or_ckpt}: no adapter.safetensors found (give a run folder or a checkpoint folder)")
    if problem := checkpoint.damage(ck):
        raise ConfigError(f"checkpoint {ck}: {problem}; give another checkpoint")
    add_lora(model, cfg)
    set_peft_model_state_dict(model.transformer, checkpoint.adapter_state(ck))
    if (ema := checkpoint.ema_state(ck)) is not None:
        copy_named(model.transformer, ema)
    return ck
