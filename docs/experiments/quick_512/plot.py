"""Plot this folder's two 512-samples-per-iteration runs: training curves, and the paired test-score
gain over the base model against the samples trained on.

    python docs/experiments/quick_512/plot.py      # writes training.png and gain.png beside this file
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
from dgx.eval.plots import plot_learning_curves

HERE = Path(__file__).parent
SAMPLES_PER_ITERATION = 512
# (paired-evaluation file, model name in it, iterations trained) per method, in training order
GAINS = {
    "Flow-GRPO": [("paired.jsonl", "quick512_flow_512", 60), ("paired_gpu.jsonl", "quick512_flow_512", 205)],
    "DenseGRPO": [("paired_dense.jsonl", "dense_grpo_seed_0", 40), ("paired_dense_60.jsonl", "dense_grpo_seed_0", 60),
                  ("paired_gpu.jsonl", "dense_grpo_seed_0", 105), ("paired_dense_150.jsonl", "dense_grpo_seed_0", 150),
                  ("paired_dense_205.jsonl", "dense_grpo_seed_0", 205)],
}


def pooled_gain(path: Path, model: str) -> tuple[float, float] | None:
    """(pooled gain, standard error) of ``model`` in a paired_eval.py output, None if absent."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("model") == model and "pooled_gain" in row:
            return row["pooled_gain"], row["se"]
    return None


def plot_gains(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, points in GAINS.items():
        found = [(it, g) for f, m, it in points if (g := pooled_gain(HERE / f, m))]
        x = [it * SAMPLES_PER_ITERATION / 1000 for it, _ in found]
        ax.errorbar(x, [g for _, (g, _) in found], yerr=[se for _, (_, se) in found], marker="o", capsize=3, label=method)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(0.10, color="grey", lw=0.5, ls="--", label="+0.10 (the issue's target)")
    ax.set(xlabel="training samples (thousands)", ylabel="test score gain over base (pooled, 3 seeds)",
           title="Paired strict test-score gain, +- 1 standard error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    keys = {"reward_mean": ("training reward (SDE samples)", True, False), "kl": ("KL to the reference", False, True)}
    runs = {"Flow-GRPO": [HERE / "metrics_flow_512.jsonl"], "DenseGRPO": [HERE / "metrics_dense_512.jsonl"]}
    print(plot_learning_curves(runs, HERE / "training.png", keys))
    print(plot_gains(HERE / "gain.png"))
