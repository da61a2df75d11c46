"""A transformer built sharded from the start, for full fine-tuning under FSDP2.

Each process builds the transformer on the meta device (parameters only; buffers are computed as usual), shards it
as accelerate's FSDP2 preparation would (an FSDP unit per block its auto-wrap policy picks, then the whole), and
reads from the safetensors files only its own rows of every weight: no process ever holds the whole transformer (the
text encoders and the VAE, which do not train, load whole). FSDP2 splits a weight's first dimension in chunks of
ceil(rows / processes), in process order (``checkpoint.rows``).

The frozen reference is loaded in the model's dtype; the trained copy is made from it shard by shard, in float32
(``sharded_copy``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator, init_empty_weights
from accelerate.utils import DistributedType
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from dgx.grpo.checkpoint import rows
from dgx.grpo.config import RunConfig
from dgx.grpo.errors import ConfigError
from safetensors import safe_open
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

# reads a weight by name: whole (rows None) or only rows [start, stop) of its first dimension
Reader = Callable[[str, slice | None], torch.Tensor]


def fsdp_plugin(cfg: RunConfig):
    """accelerate's FSDP2 plugin when this run trains the whole transformer under FSDP2 (built sharded from the
    start), else None."""
    if cfg.train.adapter != "full":
        return None
    acc = Accelerator(cpu=cfg.device == "cpu")  # accelerate's mode, as the trainer will see it
    return acc.state.fsdp_plugin if acc.distributed_type == DistributedType.FSDP else None


def current_plugin():
    """The FSDP2 plugin of accelerate's state in this process (``fsdp_plugin`` made it)."""
    from accelerate.state import AcceleratorState

    return AcceleratorState().fsdp_plugin


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether ``module`` is sharded by FSDP2."""
    return isinstance(module, FSDPModule)


def shard(module: torch.nn.Module, plugin) -> torch.nn.Module:
    """Shard ``module`` in place as accelerate's FSDP2 preparation does with ``plugin``'s settings: an FSDP unit per
    module its auto-wrap policy picks (the blocks of diffusers' ``_no_split_modules`` by default), then the root."""
    kwargs = {
        "reshard_after_forward": plugin.reshard_after_forward,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        "offload_policy": plugin.cpu_offload,
    }
    plugin.set_auto_wrap_policy(module)
    wrap = fsdp2_prepare_auto_wrap_policy(plugin, module)
    for sub in reversed(list(module.modules())[1:]):  # the innermost first
        if wrap is not None and wrap(sub) and not is_sharded(sub):
            fully_shard(sub, **kwargs)
    fully_shard(module, **kwargs)
    return module


def fill(module: torch.nn.Module, device: torch.device, read: Reader) -> None:
    """Give the meta parameters of sharded ``module`` storage on ``device`` and fill each with its rows from ``read``
    (persistent buffers too; the others keep the values its constructor computed)."""
    computed = {n: b for n, b in module.named_buffers() if not b.is_meta}
    module.to_empty(device=device)
    with torch.no_grad():
        for n, b in module.named_buffers():
            if n in computed:
                b.copy_(computed[n])
        for n, v in module.state_dict().items():
            local = v.to_local() if isinstance(v, DTensor) else v
            local.copy_(read(n, rows(v)))


def meta_build(cls, config, dtype: torch.dtype) -> torch.nn.Module:
    """A diffusers model of class ``cls`` from ``config`` with its parameters on the meta device, in ``dtype`` (its
    ``_keep_in_fp32_modules`` in float32, as diffusers loads them)."""
    with init_empty_weights(include_buffers=False):
        module = cls.from_config(config).to(dtype)
    if dtype != torch.float32:  # what diffusers' from_pretrained keeps in float32 (Wan's norms and embedders)
        keep = getattr(cls, "_keep_in_fp32_modules", None) or []
        for name, sub in module.named_modules():
            if any(k in name.split(".") for k in keep):
                sub.to(torch.float32)
    return module


def transformer_folder(path: str | Path) -> Path:
    """The local ``transformer/`` folder of the pipeline at ``path`` (a folder, or a Hub id: its cached snapshot,
    fetched if missing)."""
    path = Path(path)
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(path), allow_patterns=["model_index.json", "transformer/*"]))
    return path / "transformer"


def safetensors_reader(folder: Path) -> Reader:
    """Read weights by name from the safetensors file(s) of ``folder``, a diffusers model's (one file, or an index of
    several). Each read maps the file only while it copies the rows asked for, so the process never keeps pages of
    other processes' rows."""
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        where = json.loads(index.read_text())["weight_map"]
    elif (folder / "diffusion_pytorch_model.safetensors").is_file():
        single = "diffusion_pytorch_model.safetensors"
        with safe_open(folder / single, "pt") as f:
            where = dict.fromkeys(f.keys(), single)
    else:
        raise ConfigError(f"{folder}: no diffusion_pytorch_model.safetensors (or its index) to load shards from")

    def read(name: str, part: slice | None) -> torch.Tensor:
        if name not in where:
            raise ConfigError(f"{folder}: no weight {name!r} in its safetensors files")
        with safe_open(folder / where[name], "pt") as f:
            return (f.get_tensor(name) if part is None else f.get_slice(name)[part]).clone()

    return read


def load_transformer(path: str | Path, dtype: torch.dtype, device: str | torch.device, plugin) -> torch.nn.Module:
    """The pipeline at ``path``'s transformer in ``dtype``, sharded by FSDP2 (``plugin``'s settings) and frozen, each
    process reading only its rows of the weights onto ``device``."""
    import diffusers

    folder = transformer_folder(path)
    library, name = json.loads((folder.parent / "model_index.json").read_text())["transformer"]
    cls = getattr(diffusers, name)
    module = shard(meta_build(cls, cls.load_config(folder), dtype), plugin)
    fill(module, torch.device(device), safetensors_reader(folder))
    return module.requires_grad_(False)


def sharded_copy(module: torch.nn.Module, dtype: torch.dtype, plugin) -> torch.nn.Module:
    """A copy of sharded ``module`` in ``dtype``, sharded the same way, made shard by shard."""
    cls = next(c for c in type(module).__mro__[1:] if not issubclass(c, FSDPModule))  # the class FSDP2 wraps
    source = module.state_dict()
    device = next(module.parameters()).device
    copy = shard(meta_build(cls, module.config, dtype), plugin)
    fill(copy, device, lambda n, part: source[n].to_local() if isinstance(source[n], DTensor) else source[n])
    return copy
