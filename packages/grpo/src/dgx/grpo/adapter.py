"""What a run trains on a generator (``train.adapter``): a LoRA adapter (on the model family's targets, or the
config's), or the whole transformer (``full``). Either is added, switched off for the reference policy and base-model
samples, taken off after a run, saved in checkpoints and loaded from them: a LoRA with the settings it was trained
with (its ``adapter_config.json``, PEFT's format).

Full fine-tuning trains a float32 copy of the transformer and keeps the transformer as it was, frozen, as
``model.reference``: the reference policy and the base model run through it, and it goes back in place after the run,
so the next run starts from the base weights. Under FSDP2 both are sharded (dgx.grpo.shards)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from dgx.grpo import checkpoint, shards
from dgx.grpo.config import RunConfig
from dgx.grpo.errors import ConfigError
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict


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
    """Make the generator's transformer trainable as ``train.adapter`` says and return the trained (float32)
    parameters: a peft LoRA adapter (``lora``, default ``lora_config(model, cfg)``) on the frozen transformer, or, for
    ``full``, every parameter of a float32 copy of the transformer (``trainable_copy``), which takes its place while
    the transformer itself, frozen, becomes ``model.reference``."""
    transformer = model.transformer
    if cfg.train.adapter == "full":
        model.reference = transformer.requires_grad_(False)  # in the model's dtype
        set_transformer(model, trainable_copy(transformer))
        return list(model.transformer.parameters())
    transformer.requires_grad_(False)
    transformer.add_adapter(lora or lora_config(model, cfg))
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def trainable_copy(transformer: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of ``transformer`` that trains: sharded as it is (shard by shard) under FSDP2."""
    if shards.is_sharded(transformer):
        copy_ = shards.sharded_copy(transformer, torch.float32, shards.current_plugin())
    else:
        copy_ = copy.deepcopy(transformer).float()
    return copy_.requires_grad_(True)


def set_transformer(model, transformer: torch.nn.Module) -> None:
    """Make ``transformer`` the model's (and its diffusers pipeline's, where it has one)."""
    model.transformer = transformer
    if hasattr(model, "pipe"):
        model.pipe.transformer = transformer


def full(model) -> bool:
    """Whether ``model`` trains its whole transformer (its frozen copy is ``model.reference``)."""
    return getattr(model, "reference", None) is not None


def remove_adapter(model) -> None:
    """Take the run's training off the generator: the LoRA adapter deleted, or the frozen reference (the
    transformer as it was, in the model's dtype) put back in the trained copy's place."""
    if not full(model):
        model.transformer.delete_adapters("default")
        return
    set_transformer(model, model.reference)
    model.reference = None


@contextmanager
def adapter_disabled(model, base: torch.nn.Module | None = None) -> Iterator[None]:
    """The base model inside (the KL reference, base-model samples): the LoRA adapter of ``base`` (default the model's
    transformer) off, or under full fine-tuning the frozen reference in the transformer's place; as before
    afterwards, also after an error."""
    if full(model):
        trained, model.transformer = model.transformer, model.reference
        try:
            yield
        finally:
            model.transformer = trained
        return
    base = base if base is not None else model.transformer
    base.disable_adapters()
    try:
        yield
    finally:
        base.enable_adapters()


def trained_state(model, base: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the training: the LoRA adapter's state (peft's keys) or the whole transformer's (of
    ``base``, default the model's transformer)."""
    base = base if base is not None else model.transformer
    return base.state_dict() if full(model) else get_peft_model_state_dict(base)


def load_trained(model, state: dict[str, torch.Tensor]) -> None:
    """Load ``trained_state`` into the model's transformer."""
    if full(model):
        model.transformer.load_state_dict(state)
    else:
        set_peft_model_state_dict(model.transformer, state)


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


def trained_checkpoint(run_or_ckpt: Path) -> Path:
    """The checkpoint a run folder's training ends in (its latest whole one), or ``run_or_ckpt`` itself if it is a
    checkpoint; a ConfigError if there is none, or it is damaged (checked before any model loads)."""
    run_or_ckpt = Path(run_or_ckpt)
    if not run_or_ckpt.is_dir():
        raise ConfigError(f"{run_or_ckpt}: no such folder (give a run folder or a checkpoint folder)")
    ck = checkpoint.latest(run_or_ckpt / "checkpoints") if (run_or_ckpt / "checkpoints").is_dir() else run_or_ckpt
    if ck is None or not checkpoint.holds_adapter(ck):
        raise ConfigError(f"{run_or_ckpt}: no adapter.safetensors found (give a run folder or a checkpoint folder)")
    if problem := checkpoint.damage(ck):
        raise ConfigError(f"checkpoint {ck}: {problem}; give another checkpoint")
    return ck


def load_adapter(model, cfg: RunConfig, run_or_ckpt: Path, strict: bool = False) -> Path:
    """Add a LoRA adapter to ``model`` with the settings it was trained with (or, for a checkpoint of the whole
    transformer, make the transformer the trained one) and load a run's latest checkpoint (EMA weights if saved);
    ``strict``: a config whose LoRA settings differ is an error, not a warning."""
    ck = trained_checkpoint(run_or_ckpt)
    state = checkpoint.adapter_state(ck)
    if not any(".lora_" in k for k in state):  # a full fine-tune's checkpoint, whatever the config says
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"adapter": "full"})})
    add_lora(model, cfg, None if cfg.train.adapter == "full" else checkpoint_lora(model, cfg, ck, strict))
    load_trained(model, state)
    if (ema := checkpoint.ema_state(ck)) is not None:
        copy_named(model.transformer, ema)
    return ck
