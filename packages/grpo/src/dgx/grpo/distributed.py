"""This process's device and share of the work when `dgx run` runs under `accelerate launch`.

One process (a plain `dgx run`) is the special case of ``count == 1``: nothing is split or gathered.
Training splits each iteration's samples itself (trainer.py); calibration and evaluation split their
images with ``shard`` and gather per-sample results, so every process computes the same psi(t) and
the same scores a single process would; only the main process writes shared files.
"""

from __future__ import annotations

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, gather_object
from dgx.eval.benchmarks import Shard
from dgx.grpo.config import RunConfig
from dgx.grpo.errors import ConfigError

# accelerate modes that shard the trained parameters across processes
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)


def process_state(cfg: RunConfig) -> PartialState:
    """accelerate's state of this process (on the CPU when ``cfg.device`` is 'cpu')."""
    return PartialState(cpu=cfg.device == "cpu")


def check_supported(state: PartialState) -> None:
    """Refuse accelerate modes that shard parameters: the trainer's checkpoints, EMA and gradient clipping
    read the LoRA weights as whole tensors on every process (DDP, or one process)."""
    if state.distributed_type in SHARDED:
        raise ConfigError(f"accelerate is configured for {state.distributed_type.value}, which shards the trained "
                          "parameters; dgx trains with DDP or one process (its checkpoints, EMA and gradient clipping "
                          "do not handle sharded LoRA weights yet): launch without --use_fsdp / --use_deepspeed")


def device_for(cfg: RunConfig) -> torch.device:
    """The device models run on: accelerate's for this process (its GPU under `accelerate launch`, the GPU
    of a single-process run where there is one, else the CPU), or the CPU when ``cfg.device`` is 'cpu'."""
    return process_state(cfg).device


def shard(cfg: RunConfig) -> Shard:
    """This process's share of a benchmark's or a calibration's samples and how to gather them."""
    state = process_state(cfg)
    return Shard(state.process_index, state.num_processes, gather_object)
