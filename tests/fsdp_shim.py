"""FSDP on CPUs for the tests: accelerate turns FSDP on only for accelerator process groups, so this module has it
take the gloo CPU group for one (``_prepare_backend``); ACCELERATE_TORCH_DEVICE=cpu (set by the tests) keeps every
tensor on the CPU. Everything else (the launcher's FSDP options, accelerate's FSDP2 preparation, torch's
fully_shard) is real. FSDP2's CPU offload pins its CPU shards in memory, which needs an accelerator, so here the
offload policy's pinning defaults to off (also with a GPU when FSDP_SHIM_UNPINNED=1, for
research/experiments/fsdp/offload_diff.py). With a GPU nothing else is patched. Import it before accelerate builds its
state, or run ``python -m fsdp_shim ARGS`` for ``dgx ARGS``.
"""

import os
import sys

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from torch.distributed.fsdp import CPUOffloadPolicy

if not torch.cuda.is_available():
    PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: (
        "gloo",
        DistributedType.MULTI_GPU,
    )
if not torch.cuda.is_available() or os.environ.get("FSDP_SHIM_UNPINNED") == "1":
    CPUOffloadPolicy.__init__.__defaults__ = (False,)  # pin_memory

if __name__ == "__main__":
    from dgx.grpo.cli import main

    sys.argv = ["dgx", *sys.argv[1:]]
    main()
