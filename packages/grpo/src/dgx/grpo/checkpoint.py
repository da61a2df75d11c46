"""Atomic checkpoints: adapter, EMA, optimizer, learning-rate scheduler, RNG states, iteration, psi(t).

A checkpoint is written into a temporary folder and renamed into place, then the
``latest`` pointer file is replaced atomically, so a crash never leaves a half checkpoint
that ``--resume`` would pick up; SIGINT and SIGTERM wait until it is written (``stopping``).
Its ``manifest.json`` holds every file's sha256: a checkpoint without one, or whose files do
not match (a flipped byte, a truncated file), is reported and skipped in favour of the newest
one that is whole. Its ``adapter_config.json`` (PEFT's) holds the LoRA settings it was trained
with, which ``dgx eval`` and ``dgx push`` use.

Under FSDP2 each process writes its own rows of every sharded tensor (``adapter-00001-of-00002.safetensors``, ...;
the same for the EMA and the optimizer's moments), so no process gathers the whole model; otherwise the files hold
whole tensors. Either reads back whole (``adapter_state``: what `dgx eval` and `dgx push` load) or row by row
(``stored``), so a checkpoint moves between FSDP2, DDP and one process, and a run resumed on as many processes reads
only its own rows.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from dgx.grpo.folders import digest
from dgx.grpo.stopping import signals_wait
from safetensors import safe_open
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor, Shard
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

if TYPE_CHECKING:
    from peft import LoraConfig


def rows(value: torch.Tensor) -> slice | None:
    """The rows of the whole tensor this process holds of ``value`` (FSDP2 shards a tensor's first dimension in
    chunks of ceil(rows / processes), in process order), or None for a tensor held whole."""
    if not isinstance(value, DTensor):
        return None
    if list(value.placements) != [Shard(0)]:
        raise ValueError(f"expected a tensor sharded on its first dimension, got placements {value.placements}")
    mesh, n = value.device_mesh, value.shape[0]
    chunk = -(-n // mesh.size())
    start = min(mesh.get_local_rank() * chunk, n)
    return slice(start, min(start + chunk, n))


def whole(state: dict) -> dict:
    """``state`` with its FSDP2 shards gathered into whole tensors, other values as they are (a collective
    under FSDP: every process calls it, in the same order)."""
    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}


def local(value: torch.Tensor) -> torch.Tensor:
    """This process's part of ``value``: its rows of a DTensor, else the tensor."""
    return value.to_local() if isinstance(value, DTensor) else value


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (this process's rows of ``param``'s whole tensor, as ``rows(param)`` says) laid out as ``param``: a
    DTensor of its shards under FSDP2, else a tensor on its device."""
    if isinstance(param, DTensor):
        value = value.to(param.to_local().device)
        return DTensor.from_local(value, param.device_mesh, param.placements, shape=param.shape, stride=param.stride())
    return value.to(param.device)


def process() -> tuple[int, int]:
    """(this process's index, the process count) of the process group, (0, 1) without one."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def piece_name(stem: str, rank: int, world: int, suffix: str) -> str:
    return f"{stem}-{rank + 1:05d}-of-{world:05d}{suffix}"


def write_tensors(folder: Path, stem: str, state: dict[str, torch.Tensor], sharded: bool) -> None:
    """``stem``.safetensors with the whole tensors of ``state`` or, ``sharded``, this process's piece: its rows of
    every DTensor (where they start, in the file's metadata) and, on the first process, the tensors held whole."""
    if not sharded:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, folder / f"{stem}.safetensors")
        return
    rank, world = process()
    mine = {k: v for k, v in state.items() if isinstance(v, DTensor) or rank == 0}
    starts = {k: [rows(v).start, v.shape[0]] for k, v in mine.items() if isinstance(v, DTensor)}
    save_file(
        {k: local(v).detach().contiguous().cpu() for k, v in mine.items()},
        folder / piece_name(stem, rank, world, ".safetensors"),
        metadata={"rows": json.dumps(starts)},
    )


def pieces(path: Path, stem: str, suffix: str = ".safetensors") -> list[Path]:
    """The files of ``stem`` in checkpoint ``path``: its whole file, or its per-process pieces in process order."""
    if (path / f"{stem}{suffix}").is_file():
        return [path / f"{stem}{suffix}"]
    return sorted(path.glob(f"{stem}-*-of-*{suffix}"))


@contextmanager
def stored(path: Path, stem: str) -> Iterator[Callable[[str, slice | None], torch.Tensor] | None]:
    """A reader of the tensors ``stem`` of checkpoint ``path`` by name (its ``names``): whole (rows None) or only the
    rows asked for, from whichever pieces hold them; None where the checkpoint has none."""
    files = pieces(path, stem)
    if not files:
        yield None
        return
    with ExitStack() as stack:
        where: dict[str, list[tuple[int | None, object]]] = {}  # name -> (its first row, or None if whole; file)
        for f in files:
            h = stack.enter_context(safe_open(f, "pt"))
            starts = json.loads((h.metadata() or {}).get("rows", "{}"))
            for k in h.keys():
                where.setdefault(k, []).append((starts[k][0] if k in starts else None, h))

        def read(name: str, part: slice | None = None) -> torch.Tensor:
            held = where[name]
            if held[0][0] is None:  # held whole
                whole = held[0][1].get_tensor(name)
                return whole if part is None else whole[part]
            out = []
            for start, h in sorted(held, key=lambda x: x[0]):
                piece = h.get_slice(name)
                n = piece.get_shape()[0]
                lo, hi = (0, n) if part is None else (max(part.start - start, 0), min(part.stop - start, n))
                out.append(piece[lo : max(lo, hi)])
            return torch.cat(out)

        read.names = sorted(where)
        yield read


def read_whole(path: Path, stem: str) -> dict[str, torch.Tensor] | None:
    """Every tensor of ``stem`` in checkpoint ``path``, whole; None where the checkpoint has none."""
    with stored(path, stem) as read:
        return None if read is None else {k: read(k) for k in read.names}


def read_like(path: Path, stem: str, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The tensors ``stem`` of checkpoint ``path`` laid out as ``params`` (this process's rows of each under FSDP2);
    None where the checkpoint has none."""
    with stored(path, stem) as read:
        return None if read is None else {k: like(read(k, rows(p)), p) for k, p in params.items()}


def optimizer_state(optimizer: torch.optim.Optimizer, sharded: bool) -> dict:
    """The optimizer's state dict with this process's part of each tensor and, ``sharded``, where each sharded
    moment's rows start (``rows``: index -> key -> [start, whole rows])."""
    sd = optimizer.state_dict()
    state = {i: {k: local(v) if torch.is_tensor(v) else v for k, v in s.items()} for i, s in sd["state"].items()}
    starts = {
        i: {k: [rows(v).start, v.shape[0]] for k, v in s.items() if isinstance(v, DTensor)}
        for i, s in sd["state"].items()
    }
    return {**sd, "state": state, **({"rows": starts} if sharded else {})}


def read_optimizer(path: Path) -> dict:
    """Checkpoint ``path``'s optimizer state dict with whole moments (the pieces of a sharded one joined)."""
    parts = [torch.load(f, map_location="cpu", weights_only=False) for f in pieces(path, "optimizer", ".pt")]
    sd = parts[0]
    for i, keys in sd.pop("rows", {}).items():
        for k in keys:
            sd["state"][i][k] = torch.cat([p["state"][i][k] for p in parts])
    return sd


def _cut(value, param: torch.Tensor):
    """A whole moment laid out as its sharded parameter (this process's rows); anything else as it is."""
    if isinstance(param, DTensor) and torch.is_tensor(value) and value.shape == param.shape:
        return like(value[rows(param)], param)
    return value


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load checkpoint ``path``'s optimizer state, each moment laid out as its parameter: this process's own piece
    when the checkpoint was written by as many processes, else the whole moments cut again."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    files = pieces(path, "optimizer", ".pt")
    rank, world = process()
    if world > 1 and len(files) == world:
        sd = torch.load(files[rank], map_location="cpu", weights_only=False)
        mine = sd.pop("rows", {})
        state = {
            i: {k: like(v, params[i]) if k in mine.get(i, {}) else v for k, v in s.items()}
            for i, s in sd["state"].items()
        }
    else:
        sd = read_optimizer(path)
        state = {i: {k: _cut(v, params[i]) for k, v in s.items()} for i, s in sd["state"].items()}
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
    lora: LoraConfig | None = None,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Write checkpoint ``iter_{iteration}`` and point ``latest`` at it; keep the newest ``keep`` (this one
    included) and the milestones: those after every ``keep_every``-th iteration. ``lora`` (the adapter's peft
    ``LoraConfig``) is kept as ``adapter_config.json``.

    Under several processes every process calls it, with ``barrier`` (accelerate's ``wait_for_everyone``): under
    FSDP2 each writes its pieces into the temporary folder, and the one with ``write`` writes the rest. A SIGINT or
    SIGTERM meanwhile takes effect once the checkpoint is whole.

    Args:
        ckpt_root: The run's ``checkpoints`` folder.
        iteration: The iteration just trained (0-based).
        adapter: What trains (``adapter.trained_state``): whole tensors, or DTensor shards under FSDP2.
        optimizer: The optimizer of the trained parameters.
        scheduler: The learning-rate schedule, or None.
        ema: The EMA of the trained parameters by name, or None.
        psi_path: The calibration's psi table, copied in (None: none).
        keep: How many of the newest checkpoints to keep.
        write: Whether this process writes the shared files (the main process).
        keep_every: Keep the checkpoint after every this many iterations too (None: none).
        lora: The adapter's peft ``LoraConfig`` (None for a full fine-tune).
        barrier: Waits for every process (accelerate's ``wait_for_everyone``).
    """
    final = ckpt_root / f"iter_{iteration:05d}"
    tmp = ckpt_root / f".tmp_iter_{iteration:05d}"
    sharded = any(isinstance(v, DTensor) for v in adapter.values())
    with signals_wait():
        if write:
            ckpt_root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier()
        if write or sharded:
            write_tensors(tmp, "adapter", adapter, sharded)
            if ema is not None:
                write_tensors(tmp, "ema", ema, sharded)
            rank, world = process()
            name = piece_name("optimizer", rank, world, ".pt") if sharded else "optimizer.pt"
            torch.save(optimizer_state(optimizer, sharded), tmp / name)
        barrier()
        if write:
            write_checkpoint(ckpt_root, final, tmp, scheduler, psi_path, lora)
            older = sorted(p for p in ckpt_root.glob("iter_*") if p != final)
            for old in older[: len(older) - (keep - 1)] if keep > 1 else older:
                if keep_every is None or (int(old.name.split("_")[1]) + 1) % keep_every:
                    shutil.rmtree(old, ignore_errors=True)
    return final


def write_checkpoint(ckpt_root: Path, final: Path, tmp: Path, scheduler, psi_path, lora) -> None:
    """Add to ``tmp`` (which holds the tensors) the scheduler, RNG states, psi table, LoRA settings and iteration,
    its manifest last, rename it to ``final`` and point ``latest`` at it."""
    iteration = int(final.name.split("_")[1])
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
        names = {"state.json"} - set(expected)
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"unreadable {MANIFEST}"
    if names or not has_adapter(expected):
        return f"{MANIFEST} does not list {', '.join(sorted(names)) or 'the adapter file(s)'}"
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


def has_adapter(names) -> bool:
    """Whether file ``names`` hold a whole adapter: ``adapter.safetensors``, or every piece of a sharded one."""
    names = {str(n) for n in names}
    if "adapter.safetensors" in names:
        return True
    shards = [n for n in names if n.startswith("adapter-") and n.endswith(".safetensors")]
    return bool(shards) and len(shards) == int(shards[0].split("-of-")[1].split(".")[0])


def holds_adapter(folder: Path) -> bool:
    """Whether ``folder`` is a checkpoint folder with its whole adapter (``has_adapter`` of its files)."""
    return folder.is_dir() and has_adapter(p.name for p in folder.iterdir())


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


def load(path: Path, optimizer: torch.optim.Optimizer, scheduler: LambdaLR | None = None) -> int:
    """Restore optimizer, scheduler and RNG states; return the iteration. The adapter and the EMA are read
    separately (``read_like``).

    ``scheduler`` (stepped once per iteration) keeps its own lr functions, so a run resumed with more
    iterations decays to its new end, and sets the optimizer's lr from them. A checkpoint without
    ``scheduler.pt`` (written before schedulers were saved) resumes at its iteration count.
    """
    load_optimizer_state(optimizer, path)
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
    return iteration(path)


def adapter_state(path: Path) -> dict[str, torch.Tensor]:
    """The adapter state (peft's keys, or the whole transformer's) of checkpoint ``path``, whole."""
    return read_whole(path, "adapter")


def ema_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The EMA of the trained parameters (by parameter name) of checkpoint ``path``, whole; None if not kept."""
    return read_whole(path, "ema")


def iteration(path: Path) -> int:
    """The (0-based) iteration after which checkpoint ``path`` was written."""
    return json.loads((Path(path) / "state.json").read_text())["iteration"]


def trained(ckpt_root: Path) -> int:
    """How many iterations the run of ``ckpt_root`` has trained, by its latest checkpoint (0 if none)."""
    last = latest(ckpt_root)
    return 0 if last is None else iteration(last) + 1
