"""This process's device and share of the work when `dgx run` runs under `accelerate launch`.

One process (a plain `dgx run`) is the special case of ``count == 1``: nothing is split or gathered.
Training splits each iteration's samples itself (trainer.py); calibration and evaluation split their
images with ``shard`` and gather per-sample results, so every process computes the same psi(t) and
the same scores a single process would; only the main process writes shared files.
"""

from __future__ import annotations

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from dgx.eval.benchmarks import Shard
from dgx.grpo.config import RunConfig


def process_state(cfg: RunConfig) -> PartialState:
    """accelerate's state of this process (on the CPU when ``cfg.device`` is 'cpu')."""
    return PartialState(cpu=cfg.device == "cpu")


def device_for(cfg: RunConfig) -> torch.device:
    """The device models run on: accelerate's for this process (its GPU under `accelerate launch`, the GPU
    of a single-process run where there is one, else the CPU), or the CPU when ``cfg.device`` is 'cpu'."""
    return process_state(cfg).device


def shard(cfg: RunConfig) -> Shard:
    """This process's share of a benchmark's or a calibration's samples and how to gather them."""
    state = process_state(cfg)
    return Shard(state.process_index, state.num_processes, gather_object)
