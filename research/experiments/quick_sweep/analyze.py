"""Paired test-score gain of every run of gpu_sweep.sh over the base model, per config, over training seeds.

    i=0; for f in OUT1/qsweep.tgz OUT2/qsweep.tgz; do i=$((i + 1)); mkdir -p x/$i && tar xzf "$f" -C x/$i; done
    python research/experiments/quick_sweep/analyze.py x/*/runs/qsweep

Run NAME_sS (training seed S) was scored at eval seed 12345 + S and is paired image by image with the base model's
records at that seed (DIR/paired/base/seed_*). A config's gain is the mean over its seeds, with the standard error
from the spread between seeds (training and evaluation noise together). Each config NAME_random (the random-reward
control) is compared with NAME seed by seed. Writes runs.jsonl, gain.md and gain.png beside this script.
"""

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from dgx.eval.tables import paired_gain
from dgx.grpo.results import per_image
from dgx.grpo.runner import EVAL_SEED

here = Path(__file__).parent
rows = []
for runs in map(Path, sys.argv[1:] or ["runs/qsweep"]):
    seconds = {}
    if (runs / "results.jsonl").is_file():
        seconds = {r["name"]: r["train_s"] for r in map(json.loads, (runs / "results.jsonl").read_text().splitlines())}
    for d in sorted(runs.iterdir()):
        m = re.fullmatch(r"(.+)_s(\d+)", d.name)
        if not m:
            continue
        mine, base = per_image(d), per_image(runs / "paired" / "base" / f"seed_{EVAL_SEED + int(m[2])}")
        if mine is None or base is None:  # killed at the deadline, or the base was not scored
            continue
        metrics = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
        gain, se = paired_gain(base, mine)["overall"]
        rows.append(
            {
                "config": m[1],
                "seed": int(m[2]),
                "gain": round(gain, 4),
                "se": round(se, 4),
                "kl_last10": round(float(np.mean([r["kl"] for r in metrics[-10:]])), 4),
                "iterations": len(metrics),
                "train_s": seconds.get(d.name),
            }
        )
(here / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

gains: dict[str, dict[int, float]] = {}
for r in rows:
    gains.setdefault(r["config"], {})[r["seed"]] = r["gain"]


def mean_se(x: list[float]) -> tuple[float, float]:
    return float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


order = sorted(gains, key=lambda n: -mean_se(list(gains[n].values()))[0])
lines = [
    "| config | seeds | gain (mean ± SE over seeds) | seeds above 0 | KL to the reference, last 10 iterations |",
    "|---|---|---|---|---|",
]
for n in order:
    g = list(gains[n].values())
    mean, se = mean_se(g)
    kl = np.mean([r["kl_last10"] for r in rows if r["config"] == n])
    lines.append(f"| {n} | {len(g)} | **{mean:+.3f} ± {se:.3f}** | {sum(x > 0 for x in g)} | {kl:.3f} |")
lines += [
    "",
    "| config minus its random-reward control (same seeds: same prompts, noise and eval images) | seeds | difference |",
    "|---|---|---|",
]
for n in order:
    ctrl = gains.get(f"{n}_random")
    if ctrl:
        both = sorted(set(gains[n]) & set(ctrl))
        mean, se = mean_se([gains[n][s] - ctrl[s] for s in both])
        lines.append(f"| {n} - {n}_random | {len(both)} | {mean:+.3f} ± {se:.3f} |")
(here / "gain.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))

fig, ax = plt.subplots(figsize=(7, 0.4 * len(order) + 1.2))
for i, n in enumerate(order):
    g = list(gains[n].values())
    mean, se = mean_se(g)
    ax.plot(g, [i] * len(g), "x", color="tab:red" if n.endswith("_random") else "tab:blue", alpha=0.6)
    ax.errorbar(mean, i, xerr=se, fmt="o", color="k")
ax.axvline(0, color="grey", lw=0.8)
ax.axvline(0.10, color="tab:red", lw=0.8, ls="--", label="the issue's +0.10")
ax.set_yticks(range(len(order)), order)
ax.invert_yaxis()
ax.set_xlabel("paired test-score gain over the base model\n(x: one training seed, red: random reward; o: mean ± SE)")
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(here / "gain.png", dpi=120)
