"""This process's device and share of the work when `dgx run` runs under `accelerate launch`.

One process (a plain `dgx run`) is the special case of ``count == 1``: nothing is split or gathered.
Training splits each iteration's samples itself (trainer.py), with DDP or FSDP2 from accelerate's
configuration; calibration and evaluation split their images with ``shard`` and gather per-sample
results, so every process computes the same psi(t) and the same scores a single process would; only
the main process writes shared files.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
from accelerate import PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, gather_object
from dgx.eval.benchmarks import Shard
from dgx.grpo.config import RunConfig
from dgx.grpo.errors import ConfigError
from torch.distributed.fsdp import CPUOffloadPolicy


def process_state(cfg: RunConfig) -> PartialState:
    """accelerate's state of this process (on the CPU when ``cfg.device`` is 'cpu'); the first call of a process
    starts its process group, with ``cfg.process_group_timeout``."""
    return PartialState(cpu=cfg.device == "cpu", timeout=timedelta(minutes=cfg.process_group_timeout))


EXPERIMENTAL_OFFLOAD = "DGX_EXPERIMENTAL_FSDP_OFFLOAD"


def check_supported(state: AcceleratorState) -> None:
    """Refuse accelerate modes the trainer does not handle: DeepSpeed and Megatron-LM, FSDP version 1
    (it flattens each wrapped block's parameters into one tensor of one dtype, while the adapter trains in
    float32 on a base model in its own dtype), and FSDP2's CPU offload unless ``DGX_EXPERIMENTAL_FSDP_OFFLOAD=1``
    (on a GPU it departed from unsharded training, cause not found: research/experiments/fsdp/README.md).
    DDP, FSDP2 and one process pass."""
    mode = state.distributed_type
    if mode in (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise ConfigError(
            f"accelerate is configured for {mode.value}; dgx trains with DDP, FSDP2 or one process: "
            "launch without --use_deepspeed / --use_megatron_lm"
        )
    if mode == DistributedType.FSDP and state.fsdp_plugin.fsdp_version != 2:
        raise ConfigError(
            f"accelerate is configured for FSDP version {state.fsdp_plugin.fsdp_version}; dgx shards its "
            "training with FSDP2: launch with --use_fsdp --fsdp_version 2"
        )
    if fsdp_offloaded(state) and os.environ.get(EXPERIMENTAL_OFFLOAD) != "1":
        raise ConfigError(
            "accelerate is configured for FSDP2 with parameters offloaded to the CPU (--fsdp_offload_params), "
            "which is experimental in dgx: on an H100 it matched unsharded training after one iteration "
            "but departed from it after the second (2.5e-3 on the test model, where FSDP2 without offload "
            "matched exactly), and the cause is not found (research/experiments/fsdp/README.md). Launch "
            f"without --fsdp_offload_params, or set {EXPERIMENTAL_OFFLOAD}=1 to run it anyway"
        )


def accelerate_mode(state: AcceleratorState) -> dict:
    """accelerate's mode as a run records it: distributed type, processes, mixed precision and, under FSDP2,
    whether the parameters are offloaded to the CPU."""
    mode = {
        "distributed": state.distributed_type.value,
        "processes": state.num_processes,
        "mixed_precision": state.mixed_precision,
    }
    if state.distributed_type == DistributedType.FSDP:
        mode["fsdp_cpu_offload"] = fsdp_offloaded(state)
    return mode


def fsdp_offloaded(state: AcceleratorState) -> bool:
    """Whether accelerate runs FSDP with the parameters offloaded to the CPU (``--fsdp_offload_params true``)."""
    return state.distributed_type == DistributedType.FSDP and isinstance(
        state.fsdp_plugin.cpu_offload, CPUOffloadPolicy
    )


def device_for(cfg: RunConfig) -> torch.device:
    """The device models run on: accelerate's for this process (its GPU under `accelerate launch`, the GPU
    of a single-process run where there is one, else the CPU), or the CPU when ``cfg.device`` is 'cpu'."""
    return process_state(cfg).device


def shard(cfg: RunConfig) -> Shard:
    """This process's share of a benchmark's or a calibration's samples and how to gather them."""
    state = process_state(cfg)
    return Shard(state.process_index, state.num_processes, gather_object)
