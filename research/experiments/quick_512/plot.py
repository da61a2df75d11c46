"""Plot this folder's 512-samples-per-iteration runs: training curves, the paired test-score gain over
the base model against the samples trained on, and each DenseGRPO run's training reward minus
Flow-GRPO's at the same iteration (the runs draw the same prompts at each iteration).

    python research/experiments/quick_512/plot.py   # writes training.png, gain.png, reward_vs_flow.png beside this file
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from dgx.eval.plots import plot_learning_curves

HERE = Path(__file__).parent
SAMPLES_PER_ITERATION = 512
# (paired-evaluation file, model name in it, iterations trained) per method, in training order
GAINS = {
    "Flow-GRPO": [("paired.jsonl", "quick512_flow_512", 60), ("paired_gpu.jsonl", "quick512_flow_512", 205)],
    "DenseGRPO, calibrated psi": [
        ("paired_dense.jsonl", "dense_grpo_seed_0", 40),
        ("paired_dense_60.jsonl", "dense_grpo_seed_0", 60),
        ("paired_gpu.jsonl", "dense_grpo_seed_0", 105),
        ("paired_dense_150.jsonl", "dense_grpo_seed_0", 150),
        ("paired_dense_205.jsonl", "dense_grpo_seed_0", 205),
    ],
    "DenseGRPO, uniform a = 0.7": [
        ("paired_uniform_95.jsonl", "dense_grpo_seed_0", 95),
        ("paired_uniform_145.jsonl", "dense_grpo_seed_0", 145),
        ("paired_uniform_205.jsonl", "dense_grpo_seed_0", 205),
    ],
}
METRICS = {
    "Flow-GRPO": "metrics_flow_512.jsonl",
    "DenseGRPO, calibrated psi": "metrics_dense_512.jsonl",
    "DenseGRPO, uniform a = 0.7": "metrics_dense_uniform_512.jsonl",
}
COLORS = dict(zip(METRICS, ["C0", "C1", "C2"]))  # the order plot_learning_curves colours them in training.png


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
        ax.errorbar(
            x,
            [g for _, (g, _) in found],
            yerr=[se for _, (_, se) in found],
            marker="o",
            capsize=3,
            label=method,
            color=COLORS[method],
        )
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(0.10, color="grey", lw=0.5, ls="--", label="+0.10 (the issue's target)")
    ax.set(
        xlabel="training samples (thousands)",
        ylabel="test score gain over base (pooled, 3 seeds)",
        title="Paired strict test-score gain, +- 1 standard error",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def rewards(name: str) -> np.ndarray:
    return np.array([json.loads(line)["reward_mean"] for line in (HERE / METRICS[name]).read_text().splitlines()])


def plot_reward_vs_flow(out: Path, window: int = 20) -> Path:
    """Per iteration, a DenseGRPO run's mean training reward minus Flow-GRPO's (same prompts), as a running mean
    over ``window`` iterations and as the cumulative mean with +- 1 standard error."""
    flow = rewards("Flow-GRPO")
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in list(METRICS)[1:]:
        if not (HERE / METRICS[name]).is_file():
            continue
        r = rewards(name)
        d = r[: len(flow)] - flow[: len(r)]
        it = np.arange(1, len(d) + 1)
        ax.plot(
            it[window - 1 :],
            np.convolve(d, np.ones(window) / window, "valid"),
            alpha=0.5,
            color=COLORS[name],
            label=f"{name}: running mean of {window}",
        )
        cum = np.cumsum(d) / it
        se = np.array([d[:k].std(ddof=1) / np.sqrt(k) if k > 1 else np.nan for k in it])
        ax.plot(it, cum, color=COLORS[name], lw=2, label=f"{name}: mean so far")
        ax.fill_between(it, cum - se, cum + se, color=COLORS[name], alpha=0.2)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(
        xlabel="iteration",
        ylabel="training reward minus Flow-GRPO's",
        title="Same prompts per iteration; uniform a = 0.7 also samples as Flow-GRPO does",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    keys = {"reward_mean": ("training reward (SDE samples)", True, False), "kl": ("KL to the reference", False, True)}
    runs = {name: [HERE / f] for name, f in METRICS.items() if (HERE / f).is_file()}
    print(plot_learning_curves(runs, HERE / "training.png", keys))
    print(plot_gains(HERE / "gain.png"))
    print(plot_reward_vs_flow(HERE / "reward_vs_flow.png"))
