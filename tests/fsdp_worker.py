"""Run under `accelerate launch --use_fsdp --fsdp_version 2 --num_processes N`: train 1 iteration, resume for
a 2nd (folder/run), train 2 iterations uninterrupted (folder/whole), then dump the resumed run's returned adapter
and what accelerate selected. Arguments: folder, tiny pipeline, output, and optionally what trains (``train.adapter``:
lora, the default, or full).
On CPUs, fsdp_shim makes accelerate select FSDP; on a GPU nothing is patched.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dgx.grpo.trainer as trainer  # noqa: E402
import fsdp_shim  # noqa: E402, F401  (before accelerate builds its state)
import torch  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402
from dgx.grpo.adapter import trained_state  # noqa: E402
from dgx.grpo.assembly import assemble  # noqa: E402
from dgx.grpo.checkpoint import whole  # noqa: E402
from dgx.grpo.registry import Registry  # noqa: E402
from dgx_test_helpers import tiny_config  # noqa: E402
from torch.distributed.fsdp import FSDPModule  # noqa: E402

tmp, pipe_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
adapter = sys.argv[4] if len(sys.argv) > 4 else "lora"
cfg = tiny_config(
    tmp,
    pipe_dir,
    iterations=2,
    ema={"decay": 0.5, "every": 1, "warmup": False},
    gradient_checkpointing=True,
    adapter=adapter,
)
cfg.device = "auto"  # accelerate's device: the GPU, else the CPU
# in each update: the class of the trained parameters, the device of their shards and the FSDP units' classes
seen, where, units = [], [], []
update = trainer.update


def spy(policy, *rest):
    seen.append(type(policy.params[0]).__name__)
    where.append(policy.params[0].device.type)
    units.append(sorted(type(m).__name__ for m in policy.base.modules() if isinstance(m, FSDPModule)))
    return update(policy, *rest)


trainer.update = spy
trainer.train(assemble(cfg, Registry([tmp / "reg.yaml"])), tmp / "run", stop_after=1)
model = trainer.train(assemble(cfg, Registry([tmp / "reg.yaml"])), tmp / "run", resume=True)
trainer.train(assemble(cfg, Registry([tmp / "reg.yaml"])), tmp / "whole")
state = AcceleratorState()
returned = whole(trained_state(model))  # a full fine-tune's model comes back sharded: gathered on every process
if state.is_main_process:
    torch.save(returned, out)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "distributed_type": state.distributed_type.value,
                "fsdp_version": state.fsdp_plugin.fsdp_version,
                "num_processes": state.num_processes,
                "updates": seen,
                "shards_on": where,
                "units": units,
                "offload": type(state.fsdp_plugin.cpu_offload).__name__,
                "returned": type(next(p for p in model.transformer.parameters() if p.requires_grad)).__name__,
            }
        )
    )
