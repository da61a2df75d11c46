"""A `dgx run` folder's results: per-image records, paired gains, costs, and the report (tables, plots,
report.md) written from the finished runs, also by ``dgx bench --report-only``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from dgx.eval.benchmarks import VERDICT_FIELDS
from dgx.grpo.calibrate import mean_imbalance


def headline(summary: dict) -> str:
    """The score an evaluation is judged by: its first number (the benchmarks put their scores first: a reward's, or
    GenEval's ``overall``)."""
    return next(k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool))


def per_image(run_dir: Path) -> list[dict] | None:
    """A run's GenEval-style per-image eval records (None if absent or not GenEval-style)."""
    path = run_dir / "eval" / "per_image.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    return rows if rows and all("tag" in r and "correct" in r for r in rows) else None


def paired_gains(out: Path, run_dirs: dict[str, list[Path]], reference: str = "base") -> dict[str, list[dict]]:
    """Per variant, its gain over ``reference`` (the base model, ``out/base/seed_S``, or a variant) on the same
    images, one per seed, for GenEval-style evaluations: each extra score of the records (a preference model's)
    paired over all images, then the strict verdicts per tag and ``overall``."""
    from dgx.eval.tables import paired_gain, paired_mean

    gains: dict[str, list[dict]] = {}
    for name, dirs in run_dirs.items():
        if name == reference:
            continue
        for d in dirs:
            ref, other = per_image(out / reference / d.name), per_image(d)
            if ref is not None and other is not None:
                scores = [k for k, v in ref[0].items() if k not in VERDICT_FIELDS and isinstance(v, (int, float))]
                gains.setdefault(name, []).append(
                    {**{k: paired_mean(ref, other, k) for k in scores}, **paired_gain(ref, other)}
                )
    return gains


def prompt_draws(run_dir: Path) -> str | None:
    """What decides the prompts a run draws at each iteration (the trainer keys them by seed and iteration), from
    its ``config.yaml``; runs with equal values train on the same prompts in the same order."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    c = yaml.safe_load(path.read_text())
    t = c.get("train", {})
    return json.dumps(
        [c.get("seed"), c.get("prompts"), t.get("prompts_per_iter"), t.get("prompt_sampling")], sort_keys=True
    )


def iteration_seconds(row: dict) -> float:
    """One metrics row's training seconds: rollout + credit + update."""
    return sum(row.get(k, 0.0) for k in ("seconds_rollout", "seconds_credit", "seconds_train"))


def training_cost(rows: list[dict]) -> dict[str, float]:
    """Seconds (rollout + credit + update; the median over the iterations after the first, which pays the warm-up),
    model calls and decoded (= scored) images per iteration of one run's metrics rows, and its peak GPU memory where
    every row logged one (``gpu_peak_gib``: building, sharding and training)."""
    timed = rows[1:] or rows
    cost = {
        "seconds_per_iter": float(np.median([iteration_seconds(r) for r in timed])),
        "model_calls_per_iter": float(np.mean([r["model_calls"] for r in rows])),
    }
    if all("decoded_images" in r for r in rows):
        cost["decodes_per_iter"] = float(np.mean([r["decoded_images"] for r in rows]))
    if all("gpu_peak_gib" in r for r in rows):
        cost["gpu_peak_gib"] = max(r["gpu_peak_gib"] for r in rows)
    return cost


def scores_of(summary: dict) -> list[str]:
    """A GenEval-style summary's scores (a reward's, which the benchmarks put before ``overall``); [] otherwise."""
    keys = list(summary)
    return keys[: keys.index("overall")] if "overall" in keys else []


def evaluation_overhead(run_dirs: dict[str, list[Path]]) -> list[str]:
    """Per run with ``eval_curve.jsonl``: the seconds its evaluations during training took, against the seconds of
    its training iterations (metrics.jsonl), as one line each."""
    lines = []
    for name, dirs in run_dirs.items():
        for d in dirs:
            if not (d / "eval_curve.jsonl").is_file() or not (d / "metrics.jsonl").is_file():
                continue
            ev = sum(json.loads(ln)["seconds"] for ln in (d / "eval_curve.jsonl").read_text().splitlines())
            rows = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
            tr = sum(iteration_seconds(r) for r in rows)
            lines.append(f"- {name}/{d.name}: {ev:.1f} s of evaluation, {tr:.1f} s of training ({ev / tr:.1%})")
    return lines


def cost_table(out: Path, run_dirs: dict[str, list[Path]]) -> tuple[str, str] | None:
    """``cost.md`` / ``cost.csv``: each run's seconds (median), model calls and decoded images per iteration and the
    ratios to the first variant's, measured in the same run; returns (that variant, the Markdown table), or None
    without metrics."""
    from dgx.eval.tables import write_tables

    cost: dict[str, list[dict]] = {}
    for name, dirs in run_dirs.items():
        for d in dirs:
            rows = (
                [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
                if (d / "metrics.jsonl").is_file()
                else []
            )
            if rows:
                cost.setdefault(name, []).append(training_cost(rows))
    if not cost:
        return None
    ref = next(iter(cost))
    ref_sec = np.mean([c["seconds_per_iter"] for c in cost[ref]])
    ref_calls = np.mean([c["model_calls_per_iter"] for c in cost[ref]])
    for rows in cost.values():
        for c in rows:
            c["time_ratio"] = c["seconds_per_iter"] / ref_sec
            c["calls_ratio"] = c["model_calls_per_iter"] / ref_calls
    return ref, write_tables(cost, out / "cost", digits=2)


def plots(out: Path, run_dirs: dict[str, list[Path]]) -> list[Path]:
    """Every plot of the report that has data: the same test images from every model, learning curves, reward
    differences on the same prompts, dense rewards per step, latent rewards, the test curve and each psi(t)."""
    from dgx.eval.plots import (
        plot_dense_per_timestep,
        plot_latent_reward,
        plot_learning_curves,
        plot_psi,
        plot_reward_difference,
        plot_samples,
        plot_test_curve,
    )

    metrics = {n: [d / "metrics.jsonl" for d in dirs] for n, dirs in run_dirs.items()}
    draws = {n: [prompt_draws(d) for d in dirs] for n, dirs in run_dirs.items()}
    first = next(iter(draws.values()), [])
    paired = {n: metrics[n] for n, d in draws.items() if None not in first and d == first}
    firsts = {n: dirs[0] for n, dirs in run_dirs.items() if dirs}  # samples.png and psi(t): each model's first seed
    samples = {"base": out / "base" / next(iter(firsts.values())).name / "eval"} if firsts else {}
    made = [
        plot_samples(samples | {n: d / "eval" for n, d in firsts.items()}, out / "samples.png"),
        plot_learning_curves(metrics, out / "learning_curves.png"),
        plot_reward_difference(paired, out / "reward_difference.png"),
        plot_dense_per_timestep(metrics, out / "dense_per_timestep.png"),
        plot_latent_reward(metrics, out / "latent_reward.png"),
        plot_test_curve(
            {n: [d / "eval_curve.jsonl" for d in dirs] for n, dirs in run_dirs.items()}, out / "test_curve.png"
        ),
    ]
    psis = {n: d / "calibration" / "psi.json" for n, d in firsts.items()}
    made += [plot_psi(psi, out / f"psi_{n}.png") for n, psi in psis.items() if psi.is_file()]
    return [p for p in made if p is not None]


def calibration_lines(out: Path, run_dirs: dict[str, list[Path]]) -> list[str]:
    """The calibrated runs' balance check (written by calibration) as a table, and the steps where it saw no reward
    change (psi only grew there)."""
    from dgx.eval.tables import write_tables

    balance: dict[str, list[dict]] = {}
    silent: list[str] = []
    for name, dirs in run_dirs.items():
        for d in dirs:
            psi = d / "calibration" / "psi.json"
            if psi.is_file():
                balance.setdefault(name, []).append(mean_imbalance(psi))
                if steps := json.loads(psi.read_text()).get("silent_steps"):
                    silent.append(f"- `{name}/{d.name}`: steps {steps}")
    lines = []
    if balance:
        lines += [
            "Calibration: mean over steps of |#(dR > 0) - #(dR < 0)| / N on the same fresh samples, for the "
            "calibrated psi(t) and the uniform a = 0.7 schedule (lower = better balanced):",
            "",
            write_tables(balance, out / "calibration_balance"),
        ]
    if silent:
        lines += [
            "No dense reward changed at these steps in any calibration iteration. 0 = 0 counts as balanced, so "
            "psi(t) there only grew; `calibrate.prompts` gives Algorithm 1 more samples to balance "
            "(psi.json: `changed`, `silent_steps`):",
            "",
            *silent,
            "",
        ]
    return lines


def gain_lines(out: Path, run_dirs: dict[str, list[Path]], cols: list[str] | None) -> list[str]:
    """Each variant against the base model, and against the first variant, on the same images (GenEval-style)."""
    from dgx.eval.tables import write_gain_table

    gains = paired_gains(out, run_dirs)
    if not gains:
        return []
    gained = next(iter(gains.values()))[0]  # the columns a gain was measured for
    gcols = [c for c in cols or list(gained) if c in gained]
    lines = [
        "Gain over the base model on the same images (same prompt and initial noise per image), ± standard "
        "error (seeds pooled). A gain within two standard errors of 0 is not a measured change:",
        "",
        write_gain_table(gains, out / "gain", gcols),
    ]
    first = next(iter(run_dirs))
    if versus := paired_gains(out, run_dirs, reference=first):
        lines += [
            f"Difference from `{first}` on the same images, ± standard error (seeds pooled):",
            "",
            write_gain_table(versus, out / f"versus_{first}", gcols),
        ]
    return lines


def report(out: Path, results: dict[str, list[dict]], run_dirs: dict[str, list[Path]]) -> None:
    """summary / gain / cost tables, plots and report.md of a `dgx run` folder."""
    from dgx.eval.tables import write_tables

    base = results.get("base") or []
    cols = list(base[0]) if base else None  # the benchmark's scores, GenEval's overall, its tags
    scored = scores_of(base[0]) if base else []
    what = (
        f"{', '.join(scored)} and the strict GenEval score (`overall`, then per tag)"
        if scored
        else ("GenEval-style test score")
    )
    summary_md = write_tables({k: v for k, v in results.items() if v}, out / "summary", cols)
    lines = ["# Results", "", f"Test {what} of ODE samples, mean ± std over seeds:", "", summary_md]
    lines += gain_lines(out, run_dirs, cols)
    if cost := cost_table(out, run_dirs):
        lines += [f"Cost per training iteration (ratio to `{cost[0]}`, measured in this run):", "", cost[1]]
    if overhead := evaluation_overhead(run_dirs):
        lines += ["Evaluation during training (`eval.every`), its seconds against the training's:", "", *overhead, ""]
    lines += calibration_lines(out, run_dirs)
    lines += [f"![{p.stem}]({p.name})" for p in plots(out, run_dirs)]
    if (out / "invocations.jsonl").is_file():
        env = json.loads((out / "invocations.jsonl").read_text().splitlines()[-1])
        libs = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("time", "argv", "registry") and v is not None)
        cmd = " ".join([Path(env["argv"][0]).name, *env["argv"][1:]])
        lines += ["", f"Last run {env['time']}: `{cmd}`; {libs} (every invocation: `invocations.jsonl`)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
