"""Plots: learning curves, paired training-reward differences, dense reward per timestep (paper Fig. 3), psi(t),
ODE latent reward, and a grid of evaluation samples per model."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from dgx.eval.benchmarks import VERDICT_FIELDS  # noqa: E402


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _rows(metrics_files: list[Path]) -> list[list[dict]]:
    return [[json.loads(ln) for ln in f.read_text().splitlines()] for f in metrics_files if f.is_file()]


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start), along the last axis."""
    c = np.cumsum(np.pad(y, [(0, 0)] * (y.ndim - 1) + [(1, 0)]), axis=-1)
    i = np.arange(1, y.shape[-1] + 1)
    lo = np.maximum(i - window, 0)
    return (c[..., i] - c[..., lo]) / (i - lo)


# metric -> (panel title, smoothed, y axis from 0): noisy per-iteration metrics get a moving average
LEARNING_CURVES = {
    "reward_mean": ("training reward", True, False),
    "kl": ("KL to the reference", False, True),
    "clip_frac": ("clipped fraction", True, True),
    "lr": ("learning rate", False, True),
}


def plot_learning_curves(
    runs: dict[str, list[Path]], out: Path, keys: dict[str, tuple[str, bool, bool]] = LEARNING_CURVES
) -> Path:
    """One panel per metric in ``keys``: per iteration the mean over seeds, the min-max band over seeds,
    and for smoothed metrics the mean faint under its trailing moving average over a tenth of the run."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    for ax, (key, (title, smooth, from_zero)) in zip(axes[0], keys.items()):
        for color, (method, files) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4, runs.items()):
            rows = [r for r in _rows(files) if r and key in r[0]]
            if not rows:
                continue
            n = min(len(r) for r in rows)
            y = np.array([[row[key] for row in r[:n]] for r in rows], dtype=float)
            x, window = np.arange(n), max(1, n // 10) if smooth else 1
            faint = window > 1
            ax.plot(
                x, y.mean(0), color=color, alpha=0.3 if faint else 1.0, linewidth=0.8, label=None if faint else method
            )
            if faint:
                ax.plot(x, moving_average(y.mean(0), window), color=color, label=method)
            if len(y) > 1:
                ax.fill_between(x, y.min(0), y.max(0), color=color, alpha=0.15)
        ax.set(xlabel="iteration", title=title)
        if from_zero:
            ax.set_ylim(bottom=0)
        if ax.lines:
            ax.legend(fontsize=7)
    return _save(fig, out)


def reward_difference(ref: Path, other: Path) -> np.ndarray:
    """``other``'s training reward minus ``ref``'s at each iteration both metrics files have, in order."""

    def by_iteration(path: Path) -> dict[int, float]:
        return {r["iteration"]: r["reward_mean"] for r in _rows([path])[0]} if path.is_file() else {}

    a, b = by_iteration(ref), by_iteration(other)
    return np.array([b[i] - a[i] for i in sorted(set(a) & set(b))])


def plot_reward_difference(runs: dict[str, list[Path]], out: Path) -> Path | None:
    """Each method's training reward minus the first method's at the same seed and iteration, and its mean so far.

    For runs that draw the same prompts at each iteration: how hard those prompts are moves every run's reward
    alike, so a training reward that climbs may be the prompt mix; the difference cancels it. None for one method.
    """
    names = list(runs)
    if len(names) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for color, name in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"][1:] * 4, names[1:]):
        diffs = [reward_difference(a, b) for a, b in zip(runs[names[0]], runs[name])]
        n = min((len(d) for d in diffs), default=0)
        if n == 0:
            continue
        d = np.mean([x[:n] for x in diffs], 0)
        ax.plot(d, color=color, alpha=0.3, linewidth=0.8)
        ax.plot(np.cumsum(d) / np.arange(1, n + 1), color=color, label=f"{name}: mean so far")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(
        xlabel="iteration",
        ylabel=f"training reward minus {names[0]}'s",
        title="Training reward, paired by iteration (same prompts)",
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _save(fig, out)


def plot_dense_per_timestep(runs: dict[str, list[Path]], out: Path) -> Path | None:
    """Mean dense signal and share of positive dR per step (averaged over iterations and seeds)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for method, files in runs.items():
        rows = [row for r in _rows(files) for row in r if "dense_mean" in row]
        if not rows:
            continue
        drawn = True
        a1.plot(np.mean([r["dense_mean"] for r in rows], 0), marker="o", label=method)
        a2.plot(np.mean([r["dense_pos"] for r in rows], 0), marker="o", label=method)
    if not drawn:
        plt.close(fig)
        return None
    a1.set(xlabel="step index i (x_i -> x_i+1)", ylabel="mean per-step signal", title="Dense reward per timestep")
    a2.set(xlabel="step index", ylabel="share of dR > 0", title="Positive dense rewards")
    a2.axhline(0.5, color="grey", lw=0.5)
    a1.legend(fontsize=7)
    return _save(fig, out)


def plot_psi(psi_json: Path, out: Path) -> Path:
    """Calibrated psi(t) against Flow-GRPO's uniform a * sqrt(t / (1 - t)), the imbalance of both, and
    the share of samples whose step changed the reward (dR != 0), with the steps calibration saw none change."""
    d = json.loads(Path(psi_json).read_text())
    t = np.array(d["timesteps"][:-1])
    panels = {
        "imbalance": ("|#dR>0 - #dR<0| / N", "Imbalance of dense rewards"),
        "changed": ("#(dR != 0) / N", "Steps that changed the reward"),
    }
    checks = [(key, *labels) for key, labels in panels.items() if key in d]  # the final checks psi.json holds
    fig, axes = plt.subplots(1, 1 + len(checks), figsize=(5 * (1 + len(checks)), 4), squeeze=False)
    axes = axes[0]
    a1 = axes[0]
    a1.plot(t, d["psi"], marker="o", label="calibrated psi(t)")
    if "uniform_sigma" in d:
        a1.plot(t, d["uniform_sigma"], marker="x", label="uniform a=0.7")
    silent = d.get("silent_steps", [])
    if silent:
        a1.plot(
            t[silent],
            np.array(d["psi"])[silent],
            "o",
            mfc="none",
            mec="red",
            ms=11,
            label="no change seen in calibration",
        )
    a1.set(xlabel="t", ylabel="sigma_t", title="Noise level per timestep")
    a1.legend()
    for ax, (key, ylabel, title) in zip(axes[1:], checks):
        ax.plot(t, d[key]["calibrated"], marker="o", label="calibrated")
        ax.plot(t, d[key]["uniform_a0.7"], marker="x", label="uniform a=0.7")
        ax.set(xlabel="t", ylabel=ylabel, title=title)
        ax.legend()
    for ax in axes:
        ax.invert_xaxis()
    return _save(fig, out)


def plot_latent_reward(runs: dict[str, list[Path]], out: Path) -> Path | None:
    """Mean ODE latent reward R(ODE_n(x_t)) against t, per method (paper Figs. 4 / 8)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for method, files in runs.items():
        rows = [row for r in _rows(files) for row in r if "latent_reward_mean" in row]
        if rows:
            drawn = True
            ax.plot(rows[0]["grid"], np.mean([r["latent_reward_mean"] for r in rows], 0), marker="o", label=method)
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="t", ylabel="mean R(ODE_n(x_t))", title="ODE latent reward along trajectories")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    return _save(fig, out)


def sample_grid(
    rows: dict[str, list[np.ndarray]],
    prompts: list[str],
    out: Path,
    verdicts: dict[str, list[bool | None]] | None = None,
    notes: dict[str, list[str]] | None = None,
) -> Path:
    """Images (uint8 HWC) in rows, one row per model, under their column's prompt; a verdict frames an image green
    (True) or red (False), a note is written under it."""
    cols = len(prompts)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.25 * cols, 1.45 * len(rows) + 0.4), squeeze=False)
    for ax_row, (name, images) in zip(axes, rows.items()):
        for j, (ax, img) in enumerate(zip(ax_row, images)):
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            verdict = (verdicts or {}).get(name, [None] * cols)[j]
            if verdict is not None:
                for spine in ax.spines.values():
                    spine.set(color="tab:green" if verdict else "tab:red", linewidth=2.5)
            if notes and notes.get(name):
                ax.set_xlabel(notes[name][j], fontsize=6)
        ax_row[0].set_ylabel(name, fontsize=8)
    for ax, prompt in zip(axes[0], prompts):
        ax.set_title("\n".join(textwrap.wrap(prompt, 16)[:3]), fontsize=6)
    return _save(fig, out)


def plot_samples(evals: dict[str, Path], out: Path, max_columns: int = 12) -> Path | None:
    """``sample_grid`` of the images every evaluation folder in ``evals`` (model name -> eval dir) kept in
    ``samples/``: one column per image index (the same prompt and noise in every row). GenEval verdicts frame the
    images; a reward benchmark's first score is written under them. None if no index is common."""
    from PIL import Image

    records = {name: _records(d / "per_image.jsonl") for name, d in evals.items()}
    names = [sorted(p.stem for p in (d / "samples").glob("*.png")) for d in evals.values()]
    common = sorted(set.intersection(*map(set, names))) if names else []
    common = [int(c) for c in common if all(int(c) in r for r in records.values())][:max_columns]
    if not common:
        return None
    rows = {n: [np.array(Image.open(d / "samples" / f"{i:05d}.png")) for i in common] for n, d in evals.items()}
    recs = {n: [records[n][i] for i in common] for n in evals}
    verdicts = {n: [r.get("correct") for r in rs] for n, rs in recs.items()}
    score = caption_score(recs[next(iter(recs))][0])
    notes = {n: [f"{score} {r[score]:.3g}" for r in rs] for n, rs in recs.items()} if score else None
    return sample_grid(rows, [r["prompt"] for r in next(iter(recs.values()))], out, verdicts, notes)


def _records(path: Path) -> dict[int, dict]:
    """An evaluation's per-image records by image index ({} if it wrote none)."""
    return {r["index"]: r for r in map(json.loads, path.read_text().splitlines())} if path.is_file() else {}


def caption_score(record: dict) -> str | None:
    """The score written under each image: the evaluation's own (a reward's), else GenEval's partial credit."""
    floats = [k for k, v in record.items() if k != "index" and isinstance(v, float)]
    own = [k for k in floats if k not in VERDICT_FIELDS]
    return (own or floats or [None])[0]


def plot_test_curve(runs: dict[str, list[Path]], out: Path) -> Path | None:
    """The evaluation during training (``eval_curve.jsonl``, one row per evaluation): per method the test score
    (mean over seeds) and its gain over the base model on the same images (± standard error, first seed)."""
    curves = {name: [r for r in _rows(files) if r] for name, files in runs.items()}
    curves = {name: rows for name, rows in curves.items() if rows}
    if not curves:
        return None
    fig, (score_ax, gain_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    metric = next(iter(curves.values()))[0][0]["metric"]
    for name, rows in curves.items():
        n = min(len(r) for r in rows)
        x = np.array([row["iteration"] + 1 for row in rows[0][:n]])
        score_ax.plot(x, np.mean([[row["score"] for row in r[:n]] for r in rows], axis=0), marker="o", label=name)
        if "gain" in rows[0][0]:
            gain = np.array([row["gain"] for row in rows[0][:n]])
            se = np.array([row["gain_se"] for row in rows[0][:n]])
            gain_ax.errorbar(x, gain, yerr=se, marker="o", capsize=3, label=name)
    gain_ax.axhline(0, color="grey", linewidth=0.8)
    score_ax.set(xlabel="iterations trained", title=f"test {metric} (subset)")
    gain_ax.set(xlabel="iterations trained", title="gain over the base model (± SE)")
    for ax in (score_ax, gain_ax):
        if ax.lines:
            ax.legend(fontsize=7)
    return _save(fig, out)


def plot_time_to_target(curves: dict[str, dict[str, list[float]]], target: float | None, out: Path) -> Path | None:
    """Test gain over the base model (± SE) against training seconds and against samples drawn, one line per method
    (``curves``: name -> ``seconds``, ``samples``, ``gain``, ``gain_se`` lists); ``target``: a dashed line (the
    reference method's final gain), or None."""
    if not curves:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, x, label in zip(axes, ("seconds", "samples"), ("training seconds", "training samples")):
        for name, c in curves.items():
            ax.errorbar(c[x], c["gain"], yerr=c["gain_se"], marker="o", capsize=3, label=name)
        ax.axhline(0, color="grey", linewidth=0.8)
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        ax.set(xlabel=label)
    axes[0].set(ylabel="test gain over the base model (± SE)")
    axes[0].legend(fontsize=7)
    return _save(fig, out)
