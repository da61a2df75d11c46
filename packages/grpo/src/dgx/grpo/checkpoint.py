"""Atomic checkpoints: adapter, EMA, optimizer, learning-rate scheduler, RNG states, iteration, psi(t).

A checkpoint is written into a temporary folder and renamed into place, then the
``latest`` pointer file is replaced atomically, so a crash never leaves a half checkpoint
that ``--resume`` would pick up; SIGINT and SIGTERM wait until it is written (``stopping``).
Its ``manifest.json`` holds every file's sha256: a checkpoint without one, or whose files do
not match (a flipped byte, a truncated file), is reported and skipped in favour of the newest
one that is whole. Its ``adapter_config.json`` (PEFT's) holds the LoRA settings it was trained
with, which ``dgx eval`` and ``dgx push`` use.

A checkpoint holds whole tensors, however the run was distributed: under FSDP2 the sharded
tensors (DTensor) are gathered when saving and cut into this process's shards when loading,
so a checkpoint moves between FSDP, DDP and one process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from dgx.grpo.folders import digest
from dgx.grpo.stopping import signals_wait
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def whole(state: dict) -> dict:
    """``state`` with its FSDP2 shards gathered into whole tensors, other values as they are (a collective
    under FSDP: every process calls it, in the same order)."""
    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A whole tensor laid out as ``param``: this process's shard of it under FSDP2, else on its device."""
    if isinstance(param, DTensor):
        # scattered on the mesh's device, then kept where the shard lives (the CPU under FSDP2's CPU offload)
        return distribute_tensor(value, param.device_mesh, param.placements).to(param.device)
    return value.to(param.device)


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict with whole tensors (a collective under FSDP)."""
    sd = optimizer.state_dict()
    return {**sd, "state": {i: whole(s) for i, s in sd["state"].items()}}


def load_optimizer_state(optimizer: torch.optim.Optimizer, sd: dict) -> None:
    """Load a state dict of whole tensors, sharding the per-parameter ones (moments) like their parameters."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {
        i: {k: like(v, params[i]) if torch.is_tensor(v) and v.shape == params[i].shape else v for k, v in s.items()}
        for i, s in sd["state"].items()
    }
    optimizer.load_state_dict({**sd, "state": state})


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: readers see the old or the new text, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(
    ckpt_root: Path,
    iteration: int,
    adapter: dict,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    ema: dict | None,
    psi_path: Path | None = None,
    keep: int = 2,
    write: bool = True,
    keep_every: int | None = None,
    lora=None,
) -> Path:
    """Write checkpoint ``iter_{iteration}`` and point ``latest`` at it; keep the newest ``keep`` (this one
    included) and the milestones: those after every ``keep_every``-th iteration. ``lora`` (the adapter's peft
    ``LoraConfig``) is kept as ``adapter_config.json``.

    Under several processes every process calls it (FSDP2 shards are gathered) and only the one
    with ``write`` writes. A SIGINT or SIGTERM meanwhile takes effect once the checkpoint is whole.
    """
    adapter, ema, opt_state = whole(adapter), None if ema is None else whole(ema), optimizer_state(optimizer)
    final = ckpt_root / f"iter_{iteration:05d}"
    if not write:
        return final
    with signals_wait():
        write_checkpoint(ckpt_root, final, adapter, opt_state, scheduler, ema, psi_path, lora)
        older = sorted(p for p in ckpt_root.glob("iter_*") if p != final)
        for old in older[: len(older) - (keep - 1)] if keep > 1 else older:
            if keep_every is None or (int(old.name.split("_")[1]) + 1) % keep_every:
                shutil.rmtree(old, ignore_errors=True)
    return final


def write_checkpoint(ckpt_root: Path, final: Path, adapter, opt_state, scheduler, ema, psi_path, lora) -> None:
    """Write the files of checkpoint ``final`` into a temporary folder, its manifest last, rename it into place and
    point ``latest`` at it."""
    iteration = int(final.name.split("_")[1])
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".tmp_iter_{iteration:05d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()}, tmp / "adapter.safetensors")
    if ema is not None:
        save_file({k: v.contiguous().cpu() for k, v in ema.items()}, tmp / "ema.safetensors")
    torch.save(opt_state, tmp / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    if psi_path is not None and Path(psi_path).is_file():
        shutil.copy(psi_path, tmp / "psi.json")
    if lora is not None:
        lora.save_pretrained(str(tmp))  # adapter_config.json
    (tmp / "state.json").write_text(json.dumps({"iteration": iteration}))
    (tmp / MANIFEST).write_text(json.dumps({"sha256": {f.name: sha256(f) for f in sorted(tmp.iterdir())}}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_text_atomic(ckpt_root / "latest", final.name)


def keep_best(ckpt_root: Path, final: Path, score: float, metric: str) -> bool:
    """Copy checkpoint ``final`` to ``ckpt_root/best`` if ``score`` beats the best so far (``best/best.json``)."""
    best = ckpt_root / "best"
    record = best / "best.json"
    if record.is_file() and json.loads(record.read_text())["score"] >= score:
        return False
    tmp = ckpt_root / ".tmp_best"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(final, tmp)
    (tmp / "best.json").write_text(json.dumps({"iteration": iteration(final), "metric": metric, "score": score}))
    shutil.rmtree(best, ignore_errors=True)
    os.replace(tmp, best)
    return True


MANIFEST = "manifest.json"
ADAPTER_CONFIG = "adapter_config.json"


def sha256(path: Path) -> str:
    return digest(path)


def damage(path: Path) -> str | None:
    """What is wrong with checkpoint ``path`` (no manifest, a missing or changed file, a bad state.json), or None if
    it is whole: nothing unchecked is trusted."""
    path = Path(path)
    if not (path / "state.json").is_file():
        return "no state.json"
    if not (path / MANIFEST).is_file():
        return f"no {MANIFEST}, so its files cannot be checked"
    try:
        expected = json.loads((path / MANIFEST).read_text())["sha256"]
        names = {"adapter.safetensors", "state.json"} - set(expected)
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"unreadable {MANIFEST}"
    if names:
        return f"{MANIFEST} does not list {', '.join(sorted(names))}"
    for name, recorded in expected.items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if sha256(path / name) != recorded:
            return f"{name} does not match its sha256 in {MANIFEST}"
    try:
        iteration(path)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return "unreadable state.json"
    return None


def latest(ckpt_root: Path) -> Path | None:
    """The checkpoint to resume from: the one ``latest`` names if it is whole, else (with a warning saying why) the
    newest whole one; None if there is none."""
    pointer = ckpt_root / "latest"
    if not pointer.is_file():
        return None
    named = ckpt_root / pointer.read_text().strip()
    problem = damage(named) if named.is_dir() else "missing"
    if problem is None:
        return named
    for path in sorted(ckpt_root.glob("iter_*"), reverse=True):
        if path != named and damage(path) is None:
            warnings.warn(f"checkpoint {named}: {problem}; resuming from {path.name} instead", stacklevel=2)
            return path
    warnings.warn(f"checkpoint {named}: {problem}, and no earlier whole checkpoint: starting over", stacklevel=2)
    return None


def load(path: Path, optimizer: torch.optim.Optimizer, scheduler: LambdaLR | None = None) -> tuple[int, dict | None]:
    """Restore optimizer, scheduler and RNG states; return (iteration, ema state). The adapter is read
    separately (``adapter_state``), before accelerate may shard the model.

    ``scheduler`` (stepped once per iteration) keeps its own lr functions, so a run resumed with more
    iterations decays to its new end, and sets the optimizer's lr from them. A checkpoint without
    ``scheduler.pt`` (written before schedulers were saved) resumes at its iteration count.
    """
    # map_location: a checkpoint written on a GPU also resumes on a CPU (load_state_dict moves the state to the parameters)
    load_optimizer_state(optimizer, torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    if scheduler is not None:
        if (path / "scheduler.pt").is_file():
            scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False))
        else:
            scheduler.last_epoch = iteration(path) + 1
        for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * fn(scheduler.last_epoch)
    rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return iteration(path), ema_state(path)


def adapter_state(path: Path) -> dict[str, torch.Tensor]:
    """The adapter state (peft's keys) of checkpoint ``path``."""
    return load_file(path / "adapter.safetensors")


def ema_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The EMA of the adapter's parameters (by parameter name) of checkpoint ``path``; None if not kept."""
    return load_file(path / "ema.safetensors") if (path / "ema.safetensors").is_file() else None


def iteration(path: Path) -> int:
    """The (0-based) iteration after which checkpoint ``path`` was written."""
    return json.loads((Path(path) / "state.json").read_text())["iteration"]


def trained(ckpt_root: Path) -> int:
    """How many iterations the run of ``ckpt_root`` has trained, by its latest checkpoint (0 if none)."""
    last = latest(ckpt_root)
    return 0 if last is None else iteration(last) + 1
