"""Peak memory across accelerate's `prepare` of the 2-block FLUX transformer, on the CPU, with and without FSDP2.

    for mode in plain fsdp; do
      ACCELERATE_TORCH_DEVICE=cpu accelerate launch $([ $mode = fsdp ] && echo --use_fsdp --fsdp_version 2 \
        --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP) --num_processes 1 --mixed_precision no \
        research/experiments/fsdp/prepare_memory.py runs/prepare_memory_$mode $mode
    done

Trains one tiny iteration and prints the transformer's weight size, and the process's resident memory before and
after `prepare` and its peak (ru_maxrss) before and after. Under `fsdp` accelerate is made to take the gloo CPU
group for an accelerator one, as in tests/fsdp_worker.py. Commit ebf5130: the peak rose by the weights' 2.04 GiB under
FSDP2 and by 0 without it (README.md).
"""

import json
import resource
import sys
from pathlib import Path

import accelerate
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from dgx.grpo.assembly import assemble
from dgx.grpo.config import RunConfig, deep_merge, load
from dgx.grpo.trainer import train

if sys.argv[2] == "fsdp":
    PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: (
        "gloo",
        DistributedType.MULTI_GPU,
    )


def gib_resident() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**30


def gib_peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


prepare, log = accelerate.Accelerator.prepare, []


def measured(self, *objects):
    before = {
        "weights": sum(p.numel() * p.element_size() for p in objects[0].parameters()) / 2**30,
        "resident_before": gib_resident(),
        "peak_before": gib_peak(),
    }
    out = prepare(self, *objects)
    log.append(
        {k: round(v, 2) for k, v in {**before, "peak_after": gib_peak(), "resident_after": gib_resident()}.items()}
    )
    return out


accelerate.Accelerator.prepare = measured
abl = load(Path(__file__).parents[1] / "flux_iteration" / "flux_dev_random.yaml")
_, variant = abl.variant("flow_grpo")
small = {
    "model": {"name": "flux_dev_random_2blocks", "dtype": "float32", "resolution": 128, "max_sequence_length": 16},
    "sampler": {"steps": 2},
    "train": {"group_size": 2, "micro_batch": 2, "iterations": 1, "timestep_fraction": 0.5},
    "device": "auto",
}
train(assemble(RunConfig.model_validate(deep_merge(variant.model_dump(), small)), abl.registry()), Path(sys.argv[1]))
print(json.dumps({"mode": sys.argv[2], "prepare_gib": log}))
