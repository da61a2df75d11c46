"""Run under `accelerate launch --num_processes N`: one training iteration, dump the result."""

import json
import sys
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict

sys.path.insert(0, str(Path(__file__).parent))
from dgx.grpo.assembly import assemble  # noqa: E402
from dgx.grpo.registry import Registry  # noqa: E402
from dgx.grpo.trainer import train  # noqa: E402
from dgx_test_helpers import tiny_config  # noqa: E402

tmp, pipe_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cfg = tiny_config(tmp, pipe_dir, iterations=1)
model = train(assemble(cfg, Registry([tmp / "reg.yaml"])), tmp / "run")
from accelerate import PartialState  # noqa: E402

if PartialState().is_main_process:
    torch.save(get_peft_model_state_dict(model.transformer), out)
    row = json.loads((tmp / "run" / "metrics.jsonl").read_text().splitlines()[0])
    row["num_processes"] = PartialState().num_processes
    out.with_suffix(".json").write_text(json.dumps(row))
