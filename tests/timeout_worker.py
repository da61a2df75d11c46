"""Run under `accelerate launch --num_processes 2`: start the process group through dgx with a timeout of
``sys.argv[1]`` minutes; rank 1 arrives at a barrier ``sys.argv[2]`` seconds late; rank 0 writes how long it waited
and what ended the wait to ``sys.argv[3]``."""

import json
import sys
import time

import torch.distributed as dist
from dgx.grpo.config import RunConfig
from dgx.grpo.distributed import process_state

minutes, late, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
state = process_state(RunConfig(model={"name": "shapes"}, device="cpu", process_group_timeout=minutes))
t0 = time.perf_counter()
if state.process_index == 1:
    time.sleep(late)
try:
    dist.barrier()
    ended = "barrier"
except Exception as e:  # noqa: BLE001  (gloo's timeout error, whatever its class)
    ended = f"{type(e).__name__}: {str(e)[:200]}"
if state.process_index == 0:
    with open(out, "w") as f:
        json.dump({"waited": time.perf_counter() - t0, "ended": ended, "processes": state.num_processes}, f)
