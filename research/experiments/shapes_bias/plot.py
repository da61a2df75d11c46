"""Training reward per iteration of the quick ablation on the caption-swap model, with the control run
(lr 1e-12: the base model's own reward on the same prompts and noise as Flow-GRPO).

    python research/experiments/shapes_bias/plot.py   # writes training_reward.png beside this file
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

HERE = Path(__file__).parent
RUNS = {
    "base model (control, lr 1e-12)": "metrics_lr0.jsonl",
    "Flow-GRPO": "metrics_flow.jsonl",
    "DenseGRPO, calibrated psi": "metrics_dense.jsonl",
}


def reward(name: str) -> np.ndarray:
    return np.array([json.loads(line)["reward_mean"] for line in (HERE / name).read_text().splitlines()])


curves = {label: reward(name) for label, name in RUNS.items()}
base = curves[next(iter(RUNS))]
fig, (ax, dx) = plt.subplots(1, 2, figsize=(11, 4))
for label, r in curves.items():
    ax.plot(r, label=label)
    if r is not base:
        d = r - base
        dx.plot(np.cumsum(d) / np.arange(1, len(d) + 1), label=f"{label}: mean so far")
ax.set(
    xlabel="iteration",
    ylabel="training reward (partial credit, SDE samples)",
    title="same prompts at each iteration: the climb is the prompt mix",
)
dx.axhline(0, color="grey", lw=0.8)
dx.set(xlabel="iteration", ylabel="reward minus the control's", title="trained minus base, same prompts")
for a in (ax, dx):
    a.legend(fontsize=8)
fig.tight_layout()
fig.savefig(HERE / "training_reward.png", dpi=110)
print(f"wrote {HERE / 'training_reward.png'}")
