"""`dgx run` and `dgx eval`: every variant x seed of an ablation into one results folder.

Layout of ``OUT``:
    base/seed_S/eval/            the untrained model's evaluation (per seed)
    VARIANT/seed_S/config.yaml   resolved config
    VARIANT/seed_S/calibration/  psi.json + psi.png (calibrated variants)
    VARIANT/seed_S/metrics.*     JSONL / CSV / tensorboard
    VARIANT/seed_S/checkpoints/  atomic checkpoints (for --resume)
    VARIANT/seed_S/eval/         per_image.jsonl + summary.json + samples/ (a few images as PNG)
    summary.md / summary.csv     methods x metrics, mean +/- std over seeds
    cost.md / cost.csv           seconds and model calls per iteration, ratio to the first variant (and peak GPU memory)
    *.png, report.md             plots (samples.png: the same test images from every model) and a report linking them

Under `accelerate launch` every process runs this loop: training, calibration and evaluation split
their samples over the processes (``distributed.py``) and only the main process writes shared files.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from dgx.grpo import checkpoint
from dgx.grpo.assembly import Assembler, Assembly, assemble
from dgx.grpo.build import build_reward, choose_prompts, entry_arguments, load_prompts
from dgx.grpo.calibrate import calibrate, mean_imbalance, psi_matches
from dgx.grpo.config import RewardConfig, RunConfig, load
from dgx.grpo.distributed import accelerate_mode, check_supported, process_state, shard
from dgx.grpo.errors import ConfigError
from dgx.grpo.registry import accepted_arguments, suggest
from dgx.grpo.trainer import adapter_disabled, load_adapter, train
from dgx.rewards.base import load_now
from dgx.sampler import ode_step, rollout, sample_generator
from tqdm.auto import tqdm

EVAL_SEED = 12345


def evaluate(parts: Assembly, out: Path, cfg: RunConfig | None = None, seed: int | None = None) -> dict[str, float]:
    """The benchmark of ``cfg`` (default the run's, ``parts.cfg``) on the run's generator; image i's noise is keyed by
    (seed, i), seed = EVAL_SEED + cfg.seed unless given.

    Under several processes the benchmark gets ``shard=`` (each process scores its share of the images)
    and only the main process writes ``out``. The entry's registry ``defaults`` fill the eval keys the config leaves
    unset.
    """
    cfg = cfg or parts.cfg
    ev = cfg.eval
    entry = parts.registry.get("evaluations", ev.name)
    fn = entry.load()
    part = shard(cfg)
    takes = accepted_arguments(fn)
    given = {
        "steps": ev.steps,
        "guidance": cfg.eval_guidance,
        "images_per_prompt": ev.images_per_prompt,
        "min_images_per_tag": ev.min_images_per_tag,
        "seed": EVAL_SEED + cfg.seed if seed is None else seed,
        "batch": ev.batch,
        "max_prompts": ev.max_prompts,
        "prompts_file": ev.prompts_file,
        "metrics": ev.metrics,
        **{k: getattr(ev, k) for k in ("path", "processor_path") if getattr(ev, k)},
        "out": out if part.index == 0 else None,
        **({"shard": part} if part.count > 1 else {}),
        **({"scorers": parts.scorers} if takes is None or "scorers" in takes else {}),
        **({"reward": evaluation_reward(parts, ev.reward)} if "reward" in inspect.signature(fn).parameters else {}),
    }
    explicit = ev.model_fields_set | {"seed", "out", "shard", "scorers", "reward"}
    return fn(parts.model, **entry_arguments(entry, "evaluations", fn, given, explicit))


def evaluation_reward(parts: Assembly, name: str | None):
    """The reward an evaluation scores: the registry reward ``name`` (its registry defaults, on the run's device,
    loaded once per run in ``parts.scorers``), or the run's own reward when ``name`` is None."""
    if name is None:
        return parts.reward
    key = ("reward", name, str(parts.device))

    def build():
        reward = build_reward(RewardConfig(name=name), parts.registry, device=parts.device, where="eval.reward")
        load_now(reward)
        return reward

    return parts.scorers.get(key, build)


def headline(summary: dict) -> str:
    """The score an evaluation is judged by: its first number (the benchmarks put their scores first: a reward's, or
    GenEval's ``overall``)."""
    return next(k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool))


def evaluation_during_training(parts: Assembly, run_dir: Path):
    """``eval.every``'s evaluation for ``train(evaluate_during=)``, or None: the first ``eval.every_images`` test
    prompts, one image each, with the same initial noise every time, into ``run_dir/eval_during/iter_N``; the base
    model's images of the same prompts and noise (adapter disabled) once per call of train, into ``.../base``. Each
    returns the scores, the headline ``score``, its ``gain`` over the base model image by image ± ``gain_se``, and
    ``grid.png`` (the base model above the trained one) as an image for the trackers."""
    cfg = parts.cfg
    if cfg.eval.every is None:
        return None
    from dgx.eval.plots import plot_samples
    from dgx.eval.tables import paired_mean
    from PIL import Image

    sub = cfg.model_copy(deep=True)
    sub.eval.max_prompts, sub.eval.images_per_prompt, sub.eval.min_images_per_tag = cfg.eval.every_images, 1, 0
    folder, main = run_dir / "eval_during", process_state(cfg).is_main_process
    base_done = []

    def records(d: Path) -> list[dict]:
        return [json.loads(ln) for ln in (d / "per_image.jsonl").read_text().splitlines()]

    def at(model, iteration: int) -> tuple[dict, np.ndarray | None]:
        now = replace(parts, model=model)  # the trainer's unwrapped transformer
        if not base_done:
            with adapter_disabled(model.transformer):
                evaluate(now, folder / "base", sub)
            base_done.append(True)
        out = folder / f"iter_{iteration:05d}"
        summary = evaluate(now, out, sub)
        metric = headline(summary)
        row = {"metric": metric, "score": summary[metric]}
        row.update({k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if not main:
            return row, None
        base, mine = records(folder / "base"), records(out)
        key = "correct" if metric == "overall" else metric
        if mine and key in mine[0]:
            row["gain"], row["gain_se"] = paired_mean(base, mine, key)
        grid = plot_samples({"base": folder / "base", f"iteration {iteration + 1}": out}, out / "grid.png")
        images = np.asarray(Image.open(grid).convert("RGB"))[None] if grid else None
        return row, images

    return at


def paired_reward_gain(model, cfg: RunConfig, reward, n: int, seed: int = 4321) -> dict[str, float]:
    """The config's reward of ``n`` ODE samples (eval steps and guidance, test prompts), the enabled
    adapter minus the base model (adapter disabled) on the same prompts and noise: means, gain and
    the gain's standard error."""
    prompts = load_prompts(cfg, "test")
    metas = [prompts[i] for i in choose_prompts(prompts, n, np.random.default_rng(seed), cfg.train.prompt_sampling)]
    texts = [m["prompt"] for m in metas]

    @torch.no_grad()
    def score() -> torch.Tensor:
        gens = [sample_generator(seed, i) for i in range(n)]
        traj = rollout(model, model.encode(texts), texts, cfg.eval.steps, ode_step, None, gens, cfg.eval_guidance)
        return reward(model.decode(traj.latents[:, -1]), texts, metas).float()

    trained = score()
    with adapter_disabled(model.transformer):
        base = score()
    d = trained - base
    return {
        "trained": round(trained.mean().item(), 4),
        "base": round(base.mean().item(), 4),
        "gain": round(d.mean().item(), 4),
        "gain_se": round(d.std().item() / n**0.5, 4),
    }


def _summary(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# keys a resumed run may change: how long it trains, how often it saves, how it is evaluated
RESUMABLE_CHANGES = ("train.iterations", "train.save_every", "eval")


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs (as dicts)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, key = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, key + ".")
        elif a != b:
            out.append(key)
    return out


def check_resume(run_dir: Path, cfg: RunConfig) -> list[str]:
    """The keys changed since ``run_dir/config.yaml`` was written; a resumed run may only change its
    length (not below what it has trained), save interval or evaluation (RESUMABLE_CHANGES)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    written = yaml.safe_load(path.read_text())
    try:  # fields added to dgx since the run was written take their defaults
        old = RunConfig.model_validate(written).model_dump(mode="json")
    except ValueError:
        old = written  # a field since removed or renamed: every difference shows
    changed = config_changes(old, cfg.model_dump(mode="json"))
    bad = [k for k in changed if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)]
    if bad:
        raise ConfigError(
            f"{run_dir}: --resume with a different config ({', '.join(bad)} changed since "
            f"{path.name} was written); resume with the same settings or give a new --out"
        )
    if cfg.train.iterations < old["train"]["iterations"]:  # shorter: only if it has not trained past the new end
        done = checkpoint.trained(run_dir / "checkpoints")
        if done > cfg.train.iterations:  # a finished run has trained its old length, so it is refused here too
            raise ConfigError(
                f"{run_dir}: --resume cannot shorten a run to {cfg.train.iterations} iterations: it has "
                f"trained {done} of {old['train']['iterations']}; give a new --out"
            )
    return changed


def environment() -> dict:
    """Command line, library versions and device, to tell runs of different setups apart."""
    import platform
    import sys
    from datetime import datetime, timezone
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    libs = ["dgx-grpo", "torch", "diffusers", "transformers", "peft", "accelerate"]
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "python": platform.python_version(),
        **{n: ver(n) for n in libs},
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
    }


def writable_folder(path: Path, what: str) -> Path:
    """Create folder ``path`` and check that files can be written in it, before any work; a ConfigError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".dgx_write_check_{os.getpid()}"  # one per process under accelerate launch
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path


def warn(lines: list[str]) -> None:
    """Print config warnings, one line each, above any progress bar."""
    for line in lines:
        tqdm.write(f"warning: {line}", file=sys.stderr)


def run_ablation(
    file: Path,
    out: Path | None = None,
    only: list[str] = (),
    seeds: list[int] = (),
    resume: bool = False,
    overrides: dict | None = None,
) -> Path:
    """Train + evaluate; ``overrides`` (a config fragment, e.g. from ``--set``) is deep-merged into every variant."""
    abl = load(file, overrides=overrides)
    registry = abl.registry()
    out = out or Path("runs") / Path(file).stem
    warn(abl.warnings)
    for v in only:
        if v not in abl.variants:
            raise ConfigError(f"{file}: --only {v}: no such variant{suggest(v, abl.variants)}")
    variants = {k: v for k, v in abl.variants.items() if not only or k in only}
    run_seeds = [s for s in abl.seeds if not seeds or s in seeds] or list(seeds)
    acc = Accelerator(cpu=next(iter(variants.values())).device == "cpu")  # accelerate mode as the trainer will see it
    check_supported(acc.state)
    main = acc.is_main_process
    for name, v in variants.items():  # checked before hours of calibration and evaluation, not when training starts
        if (n := v.train.prompts_per_iter * v.train.group_size) % acc.num_processes:
            raise ConfigError(
                f"{file}: variant {name}: train.prompts_per_iter x group_size = {n} samples per iteration "
                f"do not divide over {acc.num_processes} processes"
            )
    writable_folder(out, "--out")
    # a refused resume stops here, before any evaluation, with every file as it was; else: what each run changed
    changed = {
        (name, seed): check_resume(out / name / f"seed_{seed}", vcfg.model_copy(update={"seed": seed}))
        for seed in run_seeds
        for name, vcfg in variants.items()
        if resume
    }
    if main:
        with open(out / "invocations.jsonl", "a") as f:  # one line per `dgx run` into this folder (a resume adds one)
            f.write(json.dumps({**environment(), **accelerate_mode(acc.state), "registry": registry.sources}) + "\n")
    results: dict[str, list[dict]] = {"base": []}
    assembler = Assembler(registry)
    for seed in run_seeds:  # the untrained model, once per seed (same eval config as the first variant)
        cfg = next(iter(variants.values())).model_copy(update={"seed": seed})
        ev_dir = out / "base" / f"seed_{seed}" / "eval"
        dumped = cfg.model_dump(mode="json")
        stamp = yaml.safe_dump({k: dumped[k] for k in ("model", "eval", "seed")}, sort_keys=False)
        same = (ev_dir / "config.yaml").is_file() and (ev_dir / "config.yaml").read_text() == stamp
        summary = _summary(ev_dir / "summary.json") if resume and same else None
        acc.wait_for_everyone()  # every process has read the folder before the main one rewrites it
        if summary is None:
            summary = evaluate(assembler.get(cfg), ev_dir)
            if main:
                (ev_dir / "config.yaml").write_text(stamp)
        results["base"].append(summary)
    total = len(run_seeds) * len(variants)  # the whole run's place and ETA, above each run's own bar
    runs = tqdm(total=total, unit="run", disable=not main, position=0, dynamic_ncols=True)
    for seed in run_seeds:  # seed by seed, so that an interrupted run has every variant for the first seeds
        for name, vcfg in variants.items():
            runs.set_description(f"dgx run {runs.n + 1}/{total}: {name}, seed {seed}")
            cfg = vcfg.model_copy(deep=True, update={"seed": seed})
            run_dir = out / name / f"seed_{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            finished = checkpoint.trained(run_dir / "checkpoints") >= cfg.train.iterations  # not killed while extended
            summary = _summary(run_dir / "eval" / "summary.json") if resume and finished else None
            if changed.get((name, seed)):
                summary = (
                    None  # trained longer or evaluated differently: continue from the last checkpoint, evaluate again
                )
            psi = run_dir / "calibration" / "psi.json"
            have_psi = resume and psi_matches(psi, cfg)  # recalibrated when what it depends on changed
            acc.wait_for_everyone()  # every process has read the folder before the main one rewrites it
            if summary is None:
                if main:
                    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
                    registry_files = [str(Path(f).resolve()) for f in abl.registry_files]  # for dgx push / eval later
                    (run_dir / "registry.json").write_text(json.dumps({"files": registry_files}))
                parts = assembler.get(cfg)
                if parts.needs_calibration:
                    if not have_psi:
                        calibrate(cfg, psi.parent, resume=resume, parts=parts)
                    parts = parts.with_psi(psi)
                model = train(
                    cfg,
                    run_dir,
                    resume=resume,
                    evaluate_during=evaluation_during_training(parts, run_dir),
                    parts=parts,
                )
                summary = evaluate(replace(parts, model=model), run_dir / "eval")
                assembler.done(model)
            results.setdefault(name, []).append(summary)
            runs.update()
    runs.close()
    if main:
        report(out, results, {n: [out / n / f"seed_{s}" for s in run_seeds] for n in variants})
    acc.wait_for_everyone()
    return out


def per_image(run_dir: Path) -> list[dict] | None:
    """A run's GenEval-style per-image eval records (None if absent or not GenEval-style)."""
    path = run_dir / "eval" / "per_image.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    return rows if rows and all("tag" in r and "correct" in r for r in rows) else None


VERDICT_FIELDS = ("index", "tag", "prompt", "correct", "partial", "reasons", "kinds")


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
    """Seconds (rollout + credit + update) and model calls per iteration of one run's metrics rows, and its
    peak GPU memory where every row logged one (``gpu_peak_gib``: building, sharding and training)."""
    cost = {
        "seconds_per_iter": float(np.mean([iteration_seconds(r) for r in rows])),
        "model_calls_per_iter": float(np.mean([r["model_calls"] for r in rows])),
    }
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


def report(out: Path, results: dict[str, list[dict]], run_dirs: dict[str, list[Path]]) -> None:
    """summary/gain/cost tables, plots and report.md."""
    from dgx.eval.plots import (
        plot_dense_per_timestep,
        plot_latent_reward,
        plot_learning_curves,
        plot_psi,
        plot_reward_difference,
        plot_samples,
        plot_test_curve,
    )
    from dgx.eval.tables import write_gain_table, write_tables

    cols = list(results["base"][0]) if results.get("base") else None  # scores, GenEval's overall, its tags
    summary_md = write_tables({k: v for k, v in results.items() if v}, out / "summary", cols)
    gains = paired_gains(out, run_dirs)
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
    if cost:
        ref = next(iter(cost))
        ref_sec = np.mean([c["seconds_per_iter"] for c in cost[ref]])
        ref_calls = np.mean([c["model_calls_per_iter"] for c in cost[ref]])
        for rows in cost.values():
            for c in rows:
                c["time_ratio"] = c["seconds_per_iter"] / ref_sec
                c["calls_ratio"] = c["model_calls_per_iter"] / ref_calls
        cost_md = write_tables(cost, out / "cost", digits=2)
    metrics = {n: [d / "metrics.jsonl" for d in dirs] for n, dirs in run_dirs.items()}
    draws = {n: [prompt_draws(d) for d in dirs] for n, dirs in run_dirs.items()}
    first = next(iter(draws.values()), [])
    paired = {n: metrics[n] for n, d in draws.items() if None not in first and d == first}
    seed_dir = next((d[0].name for d in run_dirs.values() if d), None)  # samples.png: the first seed of every model
    samples = (
        {"base": out / "base" / seed_dir / "eval", **{n: d[0] / "eval" for n, d in run_dirs.items() if d}}
        if seed_dir
        else {}
    )
    plots = [
        plot_samples(samples, out / "samples.png"),
        plot_learning_curves(metrics, out / "learning_curves.png"),
        plot_reward_difference(paired, out / "reward_difference.png"),
        plot_dense_per_timestep(metrics, out / "dense_per_timestep.png"),
        plot_latent_reward(metrics, out / "latent_reward.png"),
        plot_test_curve(
            {n: [d / "eval_curve.jsonl" for d in dirs] for n, dirs in run_dirs.items()}, out / "test_curve.png"
        ),
    ]
    for name, dirs in run_dirs.items():
        psi = dirs[0] / "calibration" / "psi.json"
        if psi.is_file():
            plots.append(plot_psi(psi, out / f"psi_{name}.png"))
    balance: dict[str, list[dict]] = {}  # calibrated runs: the imbalance check written by calibrate()
    silent: list[str] = []  # steps where calibration saw no reward change (psi only grew there)
    for name, dirs in run_dirs.items():
        for d in dirs:
            psi = d / "calibration" / "psi.json"
            if psi.is_file():
                balance.setdefault(name, []).append(mean_imbalance(psi))
                if steps := json.loads(psi.read_text()).get("silent_steps"):
                    silent.append(f"- `{name}/{d.name}`: steps {steps}")
    scored = scores_of(results["base"][0]) if results.get("base") else []
    what = (
        f"{', '.join(scored)} and the strict GenEval score (`overall`, then per tag)"
        if scored
        else "GenEval-style test score"
    )
    lines = ["# Results", "", f"Test {what} of ODE samples, mean ± std over seeds:", "", summary_md]
    if gains:
        gained = next(iter(gains.values()))[0]  # the columns a gain was measured for
        gcols = [c for c in cols or list(gained) if c in gained]
        gain_md = write_gain_table(gains, out / "gain", gcols)
        lines += [
            "Gain over the base model on the same images (same prompt and initial noise per image), ± standard "
            "error (seeds pooled). A gain within two standard errors of 0 is not a measured change:",
            "",
            gain_md,
        ]
        first = next(iter(run_dirs))
        versus = paired_gains(out, run_dirs, reference=first)
        if versus:
            lines += [
                f"Difference from `{first}` on the same images, ± standard error (seeds pooled):",
                "",
                write_gain_table(versus, out / f"versus_{first}", gcols),
            ]
    if cost:
        lines += [f"Cost per training iteration (ratio to `{ref}`, measured in this run):", "", cost_md]
    overhead = evaluation_overhead(run_dirs)
    if overhead:
        lines += ["Evaluation during training (`eval.every`), its seconds against the training's:", "", *overhead, ""]
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
    lines += [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    if (out / "invocations.jsonl").is_file():
        env = json.loads((out / "invocations.jsonl").read_text().splitlines()[-1])
        libs = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("time", "argv", "registry") and v is not None)
        cmd = " ".join([Path(env["argv"][0]).name, *env["argv"][1:]])
        lines += ["", f"Last run {env['time']}: `{cmd}`; {libs} (every invocation: `invocations.jsonl`)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def evaluate_file(
    file: Path,
    adapter: Path | None = None,
    variant: str | None = None,
    out: Path | None = None,
    overrides: dict | None = None,
) -> dict:
    """`dgx eval`: the base model, or a run folder's / checkpoint's adapter; the images it kept in one row
    (``samples.png``)."""
    from dgx.eval.plots import plot_samples

    abl = load(file, overrides=overrides)
    name, cfg = abl.variant(variant)
    warn(abl.warnings)
    out = writable_folder(out or Path("runs") / Path(file).stem / "eval" / name, "--out")  # before minutes of sampling
    parts = assemble(cfg, abl.registry(), load=False)  # the training reward is not used
    if adapter is not None:
        load_adapter(parts.model, cfg, adapter)
    summary = evaluate(parts, out)
    if process_state(cfg).is_main_process:
        plot_samples({"base" if adapter is None else Path(adapter).name: out}, out / "samples.png")
    return summary
