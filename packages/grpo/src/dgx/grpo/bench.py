"""`dgx bench` (and `nox -s bench`): the shapes-world ablation of the paper's comparisons -> BENCHMARKS.md.

    dgx bench                 # configs/shapes_full.yaml (7 variants x 3 seeds, shapes PickScore)
    dgx bench --quick         # CI smoke: 1 iteration, few eval prompts (~3 min)

Paths are relative to the working directory (the repository root): results land in runs/bench[_quick]/ (see
`dgx run`); BENCHMARKS.md (or BENCHMARKS_quick.md) gets the tables, the plots (copied to docs/bench[_quick]/),
machine, date, command, and which of the paper's claims the run reproduces, computed from the numbers whatever they
show.
"""

from __future__ import annotations

import datetime
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from dgx.grpo.config import load
from dgx.grpo.runner import report, run_ablation

QUICK = {
    "train": {"iterations": 1, "prompts_per_iter": 2, "group_size": 4},
    "calibrate": {"iterations": 1, "prompts": 2, "group_size": 2, "check_prompts": 2},
    "eval": {"max_prompts": 12, "images_per_prompt": 1, "min_images_per_tag": 0},
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
]


def paired(out: Path, a: str, b: str, key: str) -> tuple[float, float, int] | None:
    """``a`` minus ``b`` on the same test images (per seed: same prompts and initial noise), pooled over the seeds
    both finished: mean, standard error, seeds. ``key``: a score of the records (``pickscore``, all images alike),
    or ``correct`` (the strict GenEval score, the mean over tags)."""
    from dgx.eval.tables import paired_gain, paired_mean, pool
    from dgx.grpo.runner import per_image

    est = []
    for d in sorted((out / a).glob("seed_*")):
        ra, rb = per_image(d), per_image(out / b / d.name)
        if ra is not None and rb is not None:
            est.append(paired_mean(rb, ra, key) if key != "correct" else paired_gain(rb, ra)["overall"])
    return (*pool(est), len(est)) if est else None


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
        geneval = f"; strict GenEval {g[0]:+.3f} ± {g[1]:.3f}" if g else ""
        lines.append(f"- {text}: {key} {diff:+.3f} ± {se:.3f} ({n} seeds){geneval} -> **{verdict}**")
    gain, diff = paired(out, "dense_grpo", "base", key), paired(out, "dense_grpo", "flow_grpo", key)
    if gain and diff:
        ok = diff[1] <= gain[0] / 3
        lines.append(
            f"- resolution: the standard error of DenseGRPO - Flow-GRPO ({diff[1]:.3f}) is "
            f"{'at most' if ok else 'more than'} a third of DenseGRPO's gain over the base model "
            f"({gain[0]:+.3f} / 3 = {gain[0] / 3:.3f}) -> **{'resolved' if ok else 'not resolved'}**"
        )
    return lines


def finished(out: Path, order: list[str]) -> dict[str, list[dict]]:
    """method -> eval summaries of the seeds that finished, base first, then in the config's ``order``."""
    res: dict[str, list[dict]] = {}
    rank = {name: i for i, name in enumerate(["base", *order])}
    for d in sorted(
        out.glob("*/seed_*/eval/summary.json"), key=lambda p: (rank.get(p.parts[-4], len(rank)), p.parts[-3])
    ):
        res.setdefault(d.parts[-4], []).append(json.loads(d.read_text()))
    return res


def bench(
    config: Path, *, quick: bool = False, resume: bool = False, report_only: bool = False, root: Path = Path(".")
) -> Path:
    """Run (or with ``report_only`` only report) the bench of ``config`` under ``root``; returns BENCHMARKS[_quick].md."""
    config, root = Path(config), Path(root)
    abl = load(config)  # a config error stops here, before any work
    tag = "_quick" if quick else ""
    out = root / f"runs/bench{tag}"
    t0 = time.time()
    if not report_only:
        if not resume:
            shutil.rmtree(out, ignore_errors=True)
        run_ablation(
            config,
            out=out,
            seeds=[0] if quick else [],
            overrides=QUICK if quick else None,
            resume=resume,
        )
    minutes = (time.time() - t0) / 60
    planned = len(abl.variants) * (1 if quick else len(abl.seeds))
    done = finished(out, list(abl.variants))
    n_done = sum(len(v) for k, v in done.items() if k != "base")
    key = "pickscore" if "pickscore" in next(iter(done.get("base", [{}])), {}) else "correct"
    if report_only:
        report(out, done, {n: sorted((out / n).glob("seed_*")) for n in done if n != "base"})
    docs = root / f"docs/bench{tag}"
    docs.mkdir(parents=True, exist_ok=True)
    for png in out.glob("*.png"):
        shutil.copy(png, docs / png.name)
    cmd = f"dgx bench{' --quick' if quick else ''}"
    md = [
        f"# Benchmarks{' (quick smoke)' if quick else ''}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {platform.platform()}, "
        f"Python {sys.version.split()[0]}, torch {torch.__version__}",
        f"- command: `{cmd}` (config `{config}`)"
        + (
            ""
            if report_only
            else f", wall time {minutes:.1f} min" + (" (this resumed invocation only)" if resume else "")
        ),
        f"- runs finished: {n_done} of {planned}"
        + (" (PARTIAL: written from the runs finished so far)" if n_done < planned else ""),
        "",
        f"## Test {'shapes PickScore and ' if key == 'pickscore' else ''}GenEval-style score (shapes world, ODE sampler)",
        "",
        "Mean ± std over seeds (`overall`: the strict GenEval score, then its tags):",
        "",
        (out / "summary.md").read_text(),
    ]
    if (out / "gain.md").is_file():
        md += [
            "## Gain over the base model on the same images (± standard error, seeds pooled)",
            "",
            (out / "gain.md").read_text(),
        ]
    if (out / "cost.md").is_file():
        md += ["## Cost per training iteration (same run; ratio to Flow-GRPO)", "", (out / "cost.md").read_text()]
    if (out / "calibration_balance.md").is_file():
        md += [
            "## Calibration balance (Algorithm 1 vs uniform a = 0.7)",
            "",
            "Mean over steps of |#(dR > 0) - #(dR < 0)| / N on the same fresh samples (lower = better balanced):",
            "",
            (out / "calibration_balance.md").read_text(),
        ]
    if quick:
        md += [
            "## The paper's claims",
            "",
            "Not evaluated: a smoke run (1 iteration, 12 prompts, 1 image each) says nothing about them.",
            "",
        ]
    else:
        md += (
            [
                "## The paper's claims on the shapes world",
                "",
                f"Each claim is a paired difference of the {key} on the same test images, pooled over the seeds, against "
                "twice its standard error:",
                "",
            ]
            + (claims(out, key) or ["- (too few variants in this run)"])
            + [""]
        )
    md += [f"![{p.stem}](docs/bench{tag}/{p.name})" for p in sorted(docs.glob("*.png"))]
    path = root / f"BENCHMARKS{tag}.md"
    path.write_text("\n".join(md) + "\n")
    return path
