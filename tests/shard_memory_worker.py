"""Build the generator of a full fine-tune as `dgx run` does, read each of its weights once, and report this
process's memory: the rise of its peak resident set (VmHWM) above the peak after the imports and the process
group. Run under `accelerate launch`
with FSDP2 (the transformer built sharded) or as one plain process (the whole model). Arguments: folder (with
``reg.yaml``), pipeline, output JSON."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
if "WORLD_SIZE" in os.environ:  # launched: the shim, before accelerate builds its state
    import fsdp_shim  # noqa: F401
from accelerate import Accelerator  # noqa: E402
from dgx.grpo.build import build_model  # noqa: E402
from dgx.grpo.checkpoint import local  # noqa: E402
from dgx.grpo.registry import Registry  # noqa: E402
from dgx.grpo.shards import is_sharded  # noqa: E402
from dgx_test_helpers import tiny_config  # noqa: E402


def peak_mib() -> float:
    """This process's peak resident set (VmHWM: its own since exec, unlike ``ru_maxrss``, which starts at the
    parent's peak)."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


tmp, pipe_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cfg = tiny_config(tmp, pipe_dir, adapter="full")
cfg.device = "auto"  # accelerate's device: the CPU here (ACCELERATE_TORCH_DEVICE=cpu)
acc = Accelerator()
before = peak_mib()
model = build_model(cfg, Registry([tmp / "reg.yaml"]), acc.device)
for p in model.transformer.parameters():  # every weight read once, as a forward pass would (pages in memory)
    local(p).sum()
rise = peak_mib() - before
held = sum(local(p).numel() * p.element_size() for p in model.transformer.parameters()) / 2**20
record = {"rise_mib": rise, "held_mib": held, "sharded": is_sharded(model.transformer)}
(out.parent / f"{out.stem}-{acc.process_index}.json").write_text(json.dumps(record))
