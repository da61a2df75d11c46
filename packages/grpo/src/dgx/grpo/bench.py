"""`dgx bench` (and `nox -s bench`): the paper's comparisons on the shapes world, as two tasks -> BENCHMARKS.md.

    dgx bench                       # both tasks: mechanism, then preference
    dgx bench --task mechanism      # configs/shapes_mechanism.yaml: the smooth `ink` reward, resolves on a CPU
    dgx bench --task preference     # configs/shapes_preference.yaml: the shapes PickScore, needs GPU-scale samples
    dgx bench --quick               # CI smoke: 1 iteration, few eval prompts

Paths are relative to the working directory (the repository root): a task's runs land in runs/bench[_quick]/TASK/
(see `dgx run`), its section of the report and its plots in runs/bench[_quick]/TASK/report/, and the report of every
task's latest section, mechanism first, in runs/bench[_quick]/BENCHMARKS.md. With ``publish`` (`--publish`) they go
to the tracked files instead: docs/bench[_quick]/TASK/ and BENCHMARKS[_quick].md at the root, so that benching one
task keeps the other's published section.
Each claim's verdict is computed from the numbers, whatever they show.
"""

from __future__ import annotations

import datetime
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from dgx.grpo.config import load
from dgx.grpo.results import headline, iteration_seconds, paired_gains, report
from dgx.grpo.runner import run_ablation

TASKS = {  # name -> (config, what it shows)
    "mechanism": (
        "configs/shapes_mechanism.yaml",
        "The shapes world trained on `ink`, the mean distance of the pixels from the grey background: a smooth "
        "reward that a LoRA moves within minutes, as DDPO's JPEG compressibility. It tests credit assignment, "
        "whether a method moves the reward it is trained on for the same samples, and it resolves the paper's "
        "comparisons on a CPU. It does not test alignment: ink rewards more or darker paint whatever the prompt asks "
        "for, so the strict GenEval score beside it is there to show what the ink gain costs the prompt's rules.",
    ),
    "methods": (
        "configs/shapes_methods.yaml",
        "The mechanism task's `ink` reward on 10 denoising steps, with the field's methods beside Flow-GRPO and "
        "DenseGRPO as config swaps of one base: MixGRPO's sliding noise window (with the sparse reward, and with "
        "DenseGRPO's dense gain scored on the window only), Flow-GRPO-Fast's drawn window, Flow-DPPO's KL trust "
        "region, GRPO-Guard's normalised ratio, TP-GRPO's turning points and Stepwise-Flow-GRPO's one-step gains. Gains are paired differences on the same test images; costs are "
        "measured in the same run.",
    ),
    "preference": (
        "configs/shapes_preference.yaml",
        "The shapes world trained on its PickScore (a small CLIP preference model), the analogue of the paper's "
        "PickScore task. The CPU budget's 480 samples per run move the test mean by at most about 0.1 against a "
        "per-image paired SD of about 2.6, so its comparisons need GPU-scale samples: the verdicts below say what "
        "this budget resolves.",
    ),
}
QUICK = {
    "train": {"iterations": 1, "prompts_per_iter": 2, "group_size": 4},
    "calibrate": {"iterations": 1, "prompts": 2, "group_size": 2, "check_prompts": 2},
    "eval": {"max_prompts": 12, "images_per_prompt": 1, "min_images_per_tag": 0, "every": None},
}
CLAIMS = [  # (claim, better, worse)
    ("DenseGRPO improves on the base model", "dense_grpo", "base"),
    ("Flow-GRPO improves on the base model", "flow_grpo", "base"),
    ("dense > sparse (DenseGRPO beats Flow-GRPO)", "dense_grpo", "flow_grpo"),
    ("calibrated psi(t) > uniform a = 0.7", "dense_grpo", "dense_uniform"),
    ("dense gain > dense latent baseline", "dense_grpo", "dense_latent"),
    ("DenseGRPO > Flow-GRPO + CoCA", "dense_grpo", "coca"),
    ("n = t > n = 2", "dense_grpo", "dense_grpo_n2"),
    ("n = 2 > n = 1", "dense_grpo_n2", "dense_grpo_n1"),
    ("uniform dense > Flow-GRPO", "dense_uniform", "flow_grpo"),
    ("windowed DenseGRPO > MixGRPO (same sliding window, sparse reward)", "dense_window", "mixgrpo"),
    ("DenseGRPO on every step > on a sliding window of 2", "dense_grpo", "dense_window"),
    ("MixGRPO > Flow-GRPO", "mixgrpo", "flow_grpo"),
    ("Flow-GRPO-Fast > Flow-GRPO", "flow_grpo_fast", "flow_grpo"),
    ("Flow-DPPO > Flow-GRPO", "flow_dppo", "flow_grpo"),
    ("GRPO-Guard > Flow-GRPO", "grpo_guard", "flow_grpo"),
    ("TP-GRPO > Flow-GRPO", "tp_grpo", "flow_grpo"),
    ("DenseGRPO > TP-GRPO", "dense_grpo", "tp_grpo"),
    ("DenseGRPO (n = t) > Stepwise-Flow-GRPO's one-step gains (n = 1)", "dense_grpo", "stepwise"),
]


def paired(out: Path, a: str, b: str, key: str) -> tuple[float, float, int] | None:
    """``a`` minus ``b`` on the same test images (per seed: same prompts and initial noise), pooled over the seeds
    both finished: mean, standard error, seeds. ``key``: a score of the records (``ink``, ``pickscore``: all images
    alike), or ``correct`` (the strict GenEval score, the mean over tags)."""
    from dgx.eval.tables import pool

    per_seed = paired_gains(out, {a: sorted((out / a).glob("seed_*"))}, reference=b).get(a, [])
    est = [gain["overall" if key == "correct" else key] for gain in per_seed]
    return (*pool(est), len(est)) if est else None


def pm(value: float, se: float) -> str:
    """``+x ± se`` with the standard error to two significant digits (at least 3 decimals)."""
    digits = max(3, 1 - int(np.floor(np.log10(se)))) if se > 0 else 3
    return f"{value:+.{digits}f} ± {se:.{digits}f}"


def claims(out: Path, key: str) -> list[str]:
    """Each claim's paired difference on ``key`` against twice its standard error, the strict GenEval difference of
    the same images beside it; then whether the bench resolves DenseGRPO from Flow-GRPO."""
    lines = []
    for text, a, b in CLAIMS:
        d = paired(out, a, b, key)
        if d is None:
            continue
        diff, se, n = d
        verdict = (
            "reproduced"
            if diff > 2 * se
            else ("not reproduced" if diff <= 0 else "same direction, within 2 standard errors")
        )
        g = paired(out, a, b, "correct") if key != "correct" else None
        geneval = f"; strict GenEval {pm(*g[:2])}" if g else ""
        lines.append(f"- {text}: {key} {pm(diff, se)} ({n} seeds){geneval} -> **{verdict}**")
    gain, diff = paired(out, "dense_grpo", "base", key), paired(out, "dense_grpo", "flow_grpo", key)
    if gain and diff:
        ok = diff[1] <= gain[0] / 3
        lines.append(
            f"- resolution: the standard error of DenseGRPO - Flow-GRPO ({diff[1]:.3g}) is "
            f"{'at most' if ok else 'more than'} a third of DenseGRPO's gain over the base model "
            f"({gain[0]:+.3g} / 3 = {gain[0] / 3:.3g}) -> **{'resolved' if ok else 'not resolved'}**"
        )
    return lines


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []


def test_curve(run_dirs: list[Path]) -> dict[str, list[float]] | None:
    """The ``eval.every`` test gain of one method against its cost, averaged over its seeds (the evaluation points
    the seeds share): ``seconds`` of training to each point (rollout + credit + update, and calibration where the run
    calibrated), ``samples`` drawn, ``gain`` over the base model and its ``gain_se`` (seeds pooled)."""
    seeds = []
    for d in run_dirs:
        curve, rows = _jsonl(d / "eval_curve.jsonl"), _jsonl(d / "metrics.jsonl")
        if not curve or "gain" not in curve[0] or not rows:
            continue
        t = yaml.safe_load((d / "config.yaml").read_text())["train"]
        psi = d / "calibration" / "psi.json"
        start = sum(json.loads(psi.read_text()).get("seconds", [])) if psi.is_file() else 0.0
        spent = start + np.cumsum([iteration_seconds(r) for r in rows])
        per_iter = t["prompts_per_iter"] * t["group_size"]
        seeds.append(
            [
                (spent[c["iteration"]], (c["iteration"] + 1) * per_iter, c["gain"], c["gain_se"])
                for c in curve
                if c["iteration"] < len(spent)
            ]
        )
    if not seeds:
        return None
    n = min(len(s) for s in seeds)
    a = np.array([s[:n] for s in seeds])  # seeds x points x (seconds, samples, gain, se)
    return {
        "seconds": a[..., 0].mean(0).tolist(),
        "samples": a[0, :, 1].tolist(),
        "gain": a[..., 2].mean(0).tolist(),
        "gain_se": (np.sqrt((a[..., 3] ** 2).sum(0)) / len(seeds)).tolist(),
    }


def time_to_target(out: Path, fast: str = "dense_grpo", slow: str = "flow_grpo") -> tuple[list[str], Path | None]:
    """From the ``eval.every`` curves: the training time and samples at which ``fast`` first reaches ``slow``'s final
    test gain, as ratios of ``slow``'s, where that gain exceeds 2 SE; otherwise the time ``fast`` took to its own
    first gain above 2 SE. Returns the report's lines and the plot of both curves."""
    from dgx.eval.plots import plot_time_to_target

    curves = {n: test_curve(sorted((out / n).glob("seed_*"))) for n in (slow, fast)}
    curves = {n: c for n, c in curves.items() if c}
    if len(curves) < 2:
        return [], None
    s, f = curves[slow], curves[fast]
    target, target_se = s["gain"][-1], s["gain_se"][-1]
    improved = target > 2 * target_se
    goal = [g >= target if improved else g > 2 * se for g, se in zip(f["gain"], f["gain_se"])]
    hit = goal.index(True) if any(goal) else None
    lines = [
        f"- `{slow}`'s final test gain: {pm(target, target_se)} after {s['seconds'][-1]:.0f} s, "
        f"{s['samples'][-1]:.0f} samples"
    ]
    if hit is None:
        what = f"`{slow}`'s final gain" if improved else "a gain above 2 SE"
        lines.append(f"- `{fast}` did not reach {what} in {f['seconds'][-1]:.0f} s ({f['samples'][-1]:.0f} samples)")
    elif improved:
        lines.append(
            f"- `{fast}` first reached it ({pm(f['gain'][hit], f['gain_se'][hit])}) after {f['seconds'][hit]:.0f} s "
            f"and {f['samples'][hit]:.0f} samples: **{f['seconds'][hit] / s['seconds'][-1]:.2f}x the time and "
            f"{f['samples'][hit] / s['samples'][-1]:.2f}x the samples** of `{slow}`"
        )
    else:
        lines.append(
            f"- `{slow}` did not improve (its final gain is within 2 SE of 0), so there is no target to reach; "
            f"`{fast}`'s first gain above 2 SE ({pm(f['gain'][hit], f['gain_se'][hit])}) came after "
            f"{f['seconds'][hit]:.0f} s and {f['samples'][hit]:.0f} samples"
        )
    return lines, plot_time_to_target(curves, target if improved else None, out / "time_to_target.png")


def finished(out: Path, order: list[str]) -> dict[str, list[dict]]:
    """method -> eval summaries of the seeds that finished, base first, then in the config's ``order``."""
    res: dict[str, list[dict]] = {}
    rank = {name: i for i, name in enumerate(["base", *order])}
    for d in sorted(
        out.glob("*/seed_*/eval/summary.json"), key=lambda p: (rank.get(p.parts[-4], len(rank)), p.parts[-3])
    ):
        res.setdefault(d.parts[-4], []).append(json.loads(d.read_text()))
    return res


def _table(out: Path, name: str, title: str, intro: str = "") -> list[str]:
    path = out / f"{name}.md"
    return [f"### {title}", "", *([intro, ""] if intro else []), path.read_text()] if path.is_file() else []


def task_section(task: str, out: Path, docs: Path, header: list[str], quick: bool, root: Path = Path(".")) -> str:
    """One task's section of BENCHMARKS.md from its runs in ``out``; its plots are copied to ``docs``, which the
    section's image links are relative to."""
    config, about = TASKS[task]
    abl = load(root / config)
    done = finished(out, list(abl.variants))
    n_done = sum(len(v) for k, v in done.items() if k != "base")
    planned = len(abl.variants) * (1 if quick else len(abl.seeds))
    metric = headline(next(iter(done.get("base", [])), {"overall": 0.0}))
    key = "correct" if metric == "overall" else metric
    ttt, _ = time_to_target(out) if not quick else ([], None)
    if docs.is_dir():
        shutil.rmtree(docs)
    docs.mkdir(parents=True)
    for png in out.glob("*.png"):
        shutil.copy(png, docs / png.name)
    md = [f"## The {task} task (`{config}`)", "", about, "", *header]
    md += [
        f"- runs finished: {n_done} of {planned}"
        + (" (PARTIAL: written from the runs finished so far)" if n_done < planned else ""),
        "",
    ]
    md += _table(out, "summary", f"Test {metric} and strict GenEval score", "Mean ± std over seeds:")
    md += _table(out, "gain", "Gain over the base model on the same images (± standard error, seeds pooled)")
    if ttt:
        md += ["### Time to target (DenseGRPO against Flow-GRPO, the `eval.every` curves)", "", *ttt, ""]
    md += _table(out, "cost", "Cost per training iteration (same run; ratio to Flow-GRPO)")
    md += _table(
        out,
        "calibration_balance",
        "Calibration balance (Algorithm 1 vs uniform a = 0.7)",
        "Mean over steps of |#(dR > 0) - #(dR < 0)| / N on the same fresh samples (lower = better balanced):",
    )
    md += ["### The paper's claims", ""]
    if quick:
        md += ["Not evaluated: a smoke run (1 iteration, 12 prompts, 1 image each) says nothing about them.", ""]
    else:
        md += [
            f"Each claim is a paired difference of the test {key} on the same images, pooled over the seeds, "
            "against twice its standard error:",
            "",
            *(claims(out, key) or ["- (too few variants in this run)"]),
            "",
        ]
    md += [f"![{p.stem}]({p.name})" for p in sorted(docs.glob("*.png"))]
    text = "\n".join(md) + "\n"
    (docs / "section.md").write_text(text)
    return text


def bench(
    tasks: list[str] | tuple[str, ...] = tuple(TASKS),
    *,
    quick: bool = False,
    resume: bool = False,
    report_only: bool = False,
    root: Path = Path("."),
    publish: bool = False,
) -> Path:
    """Run (or with ``report_only`` only report) each task under ``root``; returns the report (runs/bench[_quick]/
    BENCHMARKS.md, or with ``publish`` the tracked BENCHMARKS[_quick].md), which holds the latest section of every
    task that has one."""
    root, tag = Path(root), "_quick" if quick else ""

    def sections_of(task: str) -> str:  # where a task's section and plots go, relative to root
        return f"docs/bench{tag}/{task}/" if publish else f"runs/bench{tag}/{task}/report/"

    for task in tasks:
        load(root / TASKS[task][0])  # a config error stops here, before any work
    for task in tasks:
        config = root / TASKS[task][0]
        out = root / f"runs/bench{tag}/{task}"
        t0 = time.time()
        if not report_only:
            if not resume:
                shutil.rmtree(out, ignore_errors=True)
            run_ablation(config, out=out, seeds=[0] if quick else [], overrides=QUICK if quick else None, resume=resume)
        else:
            abl = load(config)
            done = finished(out, list(abl.variants))
            report(out, done, {n: sorted((out / n).glob("seed_*")) for n in done if n != "base"})
        cmd = f"dgx bench --task {task}{' --quick' if quick else ''}"
        wall = "" if report_only else f", wall time {(time.time() - t0) / 60:.1f} min"
        header = [
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {platform.platform()}, "
            f"Python {sys.version.split()[0]}, torch {torch.__version__}",
            f"- command: `{cmd}`{wall}" + (" (this resumed invocation only)" if resume and wall else ""),
        ]
        task_section(task, out, root / sections_of(task), header, quick, root)
    home = root if publish else root / f"runs/bench{tag}"  # where the report is; its links are relative to it
    sections = []
    for task in TASKS:
        folder = root / sections_of(task)
        if (folder / "section.md").is_file():
            link = folder.relative_to(home).as_posix() + "/"
            text = (folder / "section.md").read_text()
            sections.append(text.replace("](", "](" + link).replace("](" + link + "http", "](http"))
    title = f"# Benchmarks{' (quick smoke)' if quick else ''}\n\n"
    path = home / (f"BENCHMARKS{tag}.md" if publish else "BENCHMARKS.md")
    path.write_text(title + "\n".join(sections))
    return path
