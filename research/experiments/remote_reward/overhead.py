"""The time a remote reward adds to `dgx run`: the shapes world's quick config (ink reward, 3 iterations, 2 variants)
in-process and through a reward server on this machine, in one process, in the order local, remote, remote, local
(so that a drift of the machine's speed cancels), and their rewards.

    python research/experiments/remote_reward/overhead.py OUT_DIR
"""

import json
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from dgx.grpo.cli import main
from dgx.rewards.ink import Ink
from dgx.rewards.server import Background, app

out = Path(sys.argv[1])
server = Background(app(Ink()))
sets = ["--set", "train.iterations=3", "--set", "eval.every=null", "--set", "calibrate.iterations=2"]
seconds, rewards = {}, {}
for name, reward in (("local", "{name: ink}"), ("remote", f"{{name: remote, url: '{server.url}'}}")):
    t0 = time.perf_counter()
    res = CliRunner().invoke(
        main, ["run", "configs/shapes_quick.yaml", "--out", str(out / name), "--set", f"reward={reward}", *sets]
    )
    assert res.exit_code == 0, res.output
    seconds[name] = time.perf_counter() - t0
    rows = [
        json.loads(x)
        for v in ("flow_grpo", "dense_grpo")
        for x in (out / name / v / "seed_0" / "metrics.jsonl").read_text().splitlines()
    ]
    rewards[name] = [r["reward_mean"] for r in rows]
    seconds[f"{name}_credit"] = sum(r["seconds_credit"] for r in rows)
server.stop()
result = {
    "same_rewards": rewards["local"] == rewards["remote"],
    "seconds": {k: round(v, 2) for k, v in seconds.items()},
    "run_ratio": round(seconds["remote"] / seconds["local"], 3),
    "credit_ratio": round(seconds["remote_credit"] / seconds["local_credit"], 3),
}
print(json.dumps(result, indent=2))
(out / "overhead.json").write_text(json.dumps(result, indent=2))
