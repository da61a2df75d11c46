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
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from dgx.eval.benchmarks import Protocol
from dgx.grpo import checkpoint
from dgx.grpo.adapter import adapter_disabled, check_targets, load_adapter, trained_checkpoint
from dgx.grpo.assembly import Assembler, Assembly, assemble
from dgx.grpo.build import build_nested, build_reward, node_arguments
from dgx.grpo.calibrate import calibrate, psi_matches
from dgx.grpo.config import Ablation, RewardConfig, RunConfig, load
from dgx.grpo.distributed import accelerate_mode, check_supported, process_state, shard
from dgx.grpo.errors import ConfigError, TrainingError
from dgx.grpo.folders import held, read_json, writable_folder
from dgx.grpo.memory import memory_problem
from dgx.grpo.nodes import component, parameters, signature
from dgx.grpo.prompts import choose_prompts
from dgx.grpo.registry import suggest
from dgx.grpo.results import headline, report
from dgx.grpo.stopping import Stopped
from dgx.grpo.trainer import train
from dgx.rewards.base import load_now
from dgx.sampler import ode_step, rollout, sample_generator
from tqdm.auto import tqdm

EVAL_SEED = 12345


def evaluate(parts: Assembly, out: Path, cfg: RunConfig | None = None, seed: int | None = None) -> dict[str, float]:
    """The evaluation of ``cfg`` (default the run's, ``parts.cfg``) on the run's generator: its registry entry called
    with the sampling protocol of ``cfg.eval`` (image i's noise keyed by (seed, i), seed = EVAL_SEED + cfg.seed unless
    given) and its own arguments (the entry's ``defaults`` for those the node leaves out; a reward node built on the
    run's device, a reward argument left out being the run's own reward).

    Under several processes each process scores its share of the images (``protocol.shard``) and only the main one
    writes ``out``.
    """
    cfg = cfg or parts.cfg
    ev, part = cfg.eval, shard(cfg)
    fn, own = node_arguments(ev, "evaluations", parts.registry)
    protocol = Protocol(
        steps=ev.steps,
        guidance=cfg.eval_guidance,
        images_per_prompt=ev.images_per_prompt,
        min_images_per_tag=ev.min_images_per_tag,
        max_prompts=ev.max_prompts,
        seed=EVAL_SEED + cfg.seed if seed is None else seed,
        batch=ev.batch,
        out=out if part.index == 0 else None,
        shard=part,
    )
    own = build_nested(fn, "evaluations", own, lambda node, at: evaluation_reward(parts, node, at), "eval")
    for key, p in parameters(fn, "evaluations")[0].items():  # a reward argument left out: the run's own reward
        if key not in own and component(p.annotation) == ("rewards", False) and p.default is inspect.Parameter.empty:
            own[key] = parts.reward
    if "scorers" in signature(fn).parameters:
        own["scorers"] = parts.scorers
    return fn(parts.model, protocol, **own)


def evaluation_reward(parts: Assembly, node: RewardConfig, where: str = "eval.reward"):
    """The reward node ``node`` of an evaluation, built on the run's device and loaded once per run (kept in
    ``parts.scorers``)."""
    key = ("reward", json.dumps(node.model_dump(mode="json"), sort_keys=True), str(parts.device))

    def build():
        reward = build_reward(node, parts.registry, device=parts.device, where=where)
        load_now(reward)
        return reward

    return parts.scorers.get(key, build)


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
            with adapter_disabled(model):
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


def paired_reward_gain(model, cfg: RunConfig, reward, prompts: list[dict], n: int, seed: int = 4321) -> dict:
    """``reward`` of ``n`` ODE samples of ``prompts`` (eval steps and guidance; the test split,
    ``load_prompts(cfg, registry, "test")``), the enabled adapter minus the base model (adapter disabled) on the same
    prompts and noise: means, gain and the gain's standard error."""
    metas = [prompts[i] for i in choose_prompts(prompts, n, np.random.default_rng(seed), cfg.train.prompt_sampling)]
    texts = [m["prompt"] for m in metas]

    @torch.no_grad()
    def score() -> torch.Tensor:
        gens = [sample_generator(seed, i) for i in range(n)]
        traj = rollout(model, model.encode(texts), texts, cfg.eval.steps, ode_step, None, gens, cfg.eval_guidance)
        return reward(model.decode(traj.latents[:, -1]), texts, metas).float()

    trained = score()
    with adapter_disabled(model):
        base = score()
    d = trained - base
    return {
        "trained": round(trained.mean().item(), 4),
        "base": round(base.mean().item(), 4),
        "gain": round(d.mean().item(), 4),
        "gain_se": round(d.std().item() / n**0.5, 4),
    }


def _summary(path: Path) -> dict | None:
    return read_json(path, "the evaluation is redone")


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
        if (run_dir / "checkpoints").is_dir() or (run_dir / "calibration").is_dir():
            raise ConfigError(f"{path} is missing, so --resume cannot compare the settings: {REDO}")
        return []
    try:
        written = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        written = None
    if not isinstance(written, dict) or not isinstance(written.get("train"), dict):
        raise ConfigError(f"{path} is damaged, so --resume cannot compare the settings: {REDO}")
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
    check_psi(run_dir)
    return changed


REDO = "restore it, or start the run again with --overwrite"


def check_psi(run_dir: Path) -> None:
    """A ConfigError if the run's ``calibration/psi.json`` is not the psi(t) its last checkpoint trained with (the
    checkpoint keeps a copy, listed in its manifest)."""
    psi, last = run_dir / "calibration" / "psi.json", checkpoint.latest(run_dir / "checkpoints")
    kept = None if last is None else last / "psi.json"
    if kept is not None and kept.is_file() and psi.is_file() and checkpoint.sha256(psi) != checkpoint.sha256(kept):
        raise ConfigError(f"{psi} is not the psi(t) checkpoint {last.name} trained with: {REDO} (its copy: {kept})")


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


def warn(lines: list[str]) -> None:
    """Print config warnings, one line each, above any progress bar."""
    for line in lines:
        tqdm.write(f"warning: {line}", file=sys.stderr)


@dataclass
class Plan:
    """What a `dgx run` will do, checked before any work: the ablation, its output folder, the variants and seeds to
    run, the accelerator, whether it resumes (and what each resumed run changed), and the assembler that keeps the
    generator and the reward across runs."""

    abl: Ablation
    out: Path
    variants: dict[str, RunConfig]
    seeds: list[int]
    acc: Accelerator
    resume: bool
    changed: dict[tuple[str, int], list[str]]
    assembler: Assembler


def run_ablation(
    file: Path,
    out: Path | None = None,
    only: list[str] = (),
    seeds: list[int] = (),
    resume: bool = False,
    overrides: dict | None = None,
    overwrite: bool = False,
    accept_memory: bool = False,
) -> Path:
    """Train + evaluate; ``overrides`` (a config fragment, e.g. from ``--set``) is deep-merged into every variant.
    ``overwrite``: replace the earlier results of these runs in ``out`` (else they are refused, unless ``resume``);
    ``accept_memory``: run a batch whose memory estimate exceeds the machine's."""
    plan = plan_runs(Path(file), out, only, seeds, resume, overrides, accept_memory)
    with held(plan.out, "dgx run", plan.acc.is_main_process):
        begin(plan, overwrite)
        at = "during the base model's evaluation"
        try:
            results: dict[str, list[dict]] = {"base": [base_evaluation(plan, seed) for seed in plan.seeds]}
            total = len(plan.seeds) * len(plan.variants)  # the whole run's place and ETA, above each run's own bar
            runs = tqdm(total=total, unit="run", disable=not plan.acc.is_main_process, position=0, dynamic_ncols=True)
            for seed in plan.seeds:  # seed by seed, so that an interrupted run has every variant for the first seeds
                for name, vcfg in plan.variants.items():
                    runs.set_description(f"dgx run {runs.n + 1}/{total}: {name}, seed {seed}")
                    at = f"in {plan.out / name / f'seed_{seed}'}"
                    run_cfg = vcfg.model_copy(deep=True, update={"seed": seed})
                    results.setdefault(name, []).append(one_run(plan, name, run_cfg))
                    runs.update()
            runs.close()
        except Stopped as stop:
            stop.where = f"{at}{progress(plan)}; `{resume_command()}` continues"
            raise
        if plan.acc.is_main_process:
            report(plan.out, results, {n: [plan.out / n / f"seed_{s}" for s in plan.seeds] for n in plan.variants})
        plan.acc.wait_for_everyone()
    return plan.out


def progress(plan: Plan) -> str:
    """How far the runs of ``plan`` have trained, by their last whole checkpoints."""
    done = [
        f"{name}/seed_{s} {checkpoint.trained(plan.out / name / f'seed_{s}' / 'checkpoints')}/{v.train.iterations}"
        for s in plan.seeds
        for name, v in plan.variants.items()
    ]
    return f" (iterations in checkpoints: {', '.join(done)})"


def resume_command() -> str:
    """This command line with ``--resume``, to continue it."""
    args = ["dgx", *sys.argv[1:]]
    return shlex.join(args if "--resume" in args else [*args, "--resume"])


def plan_runs(
    file: Path, out: Path | None, only, seeds, resume: bool, overrides: dict | None, accept_memory: bool = False
) -> Plan:
    """Load and check everything a `dgx run` needs before any work: the variants (``--only``) and seeds, that each
    batch divides over the processes and fits in memory (unless ``accept_memory``), that ``out`` is writable, and
    with ``resume`` that every run may continue (a refused resume stops here, every file as it was)."""
    abl = load(file, overrides=overrides)
    out = out or Path("runs") / file.stem
    for v in only:
        if v not in abl.variants:
            raise ConfigError(f"{file}: --only {v}: no such variant{suggest(v, abl.variants)}")
    variants = {k: v for k, v in abl.variants.items() if not only or k in only}
    run_seeds = [s for s in abl.seeds if not seeds or s in seeds] or list(seeds)
    first = next(iter(variants.values()))
    process_state(first)  # the process group starts here, with the first variant's timeout
    acc = Accelerator(cpu=first.device == "cpu")  # accelerate mode as the trainer will see it
    check_supported(acc.state)
    for name, v in variants.items():  # checked before hours of calibration and evaluation, not when training starts
        if (n := v.train.prompts_per_iter * v.train.group_size) % acc.num_processes:
            raise ConfigError(
                f"{file}: variant {name}: train.prompts_per_iter x group_size = {n} samples per iteration "
                f"do not divide over {acc.num_processes} processes"
            )
        if not accept_memory and (why := memory_problem(v, acc.num_processes)):
            raise ConfigError(f"{file}: variant {name}: {why}; or accept it with --accept-memory-estimate")
    warn(abl.warnings)
    writable_folder(out, "--out")
    changed = {  # what each resumed run changed since it was written
        (name, seed): check_resume(out / name / f"seed_{seed}", vcfg.model_copy(update={"seed": seed}))
        for seed in run_seeds
        for name, vcfg in variants.items()
        if resume
    }
    return Plan(abl, out, variants, run_seeds, acc, resume, changed, Assembler(abl.registry()))


def begin(plan: Plan, overwrite: bool) -> None:
    """With the folder held: refuse earlier results of these runs (unless resumed), or delete them with
    ``overwrite``; record the invocation."""
    dirs = [plan.out / "base" / f"seed_{s}" for s in plan.seeds]
    dirs += [plan.out / n / f"seed_{s}" for s in plan.seeds for n in plan.variants]
    earlier = [d for d in dirs if d.is_dir() and any(d.iterdir())] if not plan.resume else []
    if earlier and not overwrite:
        more = f" and {len(earlier) - 1} more" if len(earlier) > 1 else ""
        raise ConfigError(
            f"{plan.out} holds earlier results ({earlier[0].relative_to(plan.out)}{more}): --resume continues "
            "them, --overwrite replaces them, or give another --out"
        )
    if plan.acc.is_main_process:
        for d in earlier:
            shutil.rmtree(d)
        with open(plan.out / "invocations.jsonl", "a") as f:  # one line per `dgx run` into this folder
            env = {**environment(), **accelerate_mode(plan.acc.state), "registry": plan.assembler.registry.sources}
            f.write(json.dumps(env) + "\n")
    plan.acc.wait_for_everyone()


MEMORY_FAILURE = re.compile(r"out of memory|can't allocate memory|DefaultCPUAllocator", re.IGNORECASE)


@contextmanager
def phase(what: str, sizes: str) -> Iterator[None]:
    """A memory failure inside (the allocator's, a MemoryError) becomes one TrainingError naming the phase and the
    ``sizes`` to lower (config keys with their values)."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not (isinstance(e, MemoryError) or MEMORY_FAILURE.search(str(e))):
            raise
        raise TrainingError(f"{what}: out of memory ({type(e).__name__}); lower {sizes}") from None


def sizes(cfg: RunConfig, what: str) -> str:
    """The config keys (and their values) that set the memory of phase ``what``."""
    t, c = cfg.train, cfg.calibrate
    return {
        "evaluation": f"eval.batch (now {cfg.eval.batch})",
        "calibration": f"calibrate.prompts x group_size (now {c.prompts} x {c.group_size})",
        "training": f"train.prompts_per_iter x group_size (now {t.prompts_per_iter} x {t.group_size}, rolled out at "
        f"once) or train.micro_batch (now {t.micro_batch})",
    }[what]


def base_evaluation(plan: Plan, seed: int) -> dict:
    """The untrained model's evaluation for ``seed`` (the first variant's eval config), reused on --resume when that
    config has not changed."""
    cfg = next(iter(plan.variants.values())).model_copy(update={"seed": seed})
    ev_dir = plan.out / "base" / f"seed_{seed}" / "eval"
    dumped = cfg.model_dump(mode="json")
    stamp = yaml.safe_dump({k: dumped[k] for k in ("model", "eval", "seed")}, sort_keys=False)
    same = (ev_dir / "config.yaml").is_file() and (ev_dir / "config.yaml").read_text() == stamp
    summary = _summary(ev_dir / "summary.json") if plan.resume and same else None
    plan.acc.wait_for_everyone()  # every process has read the folder before the main one rewrites it
    if summary is None:
        parts = plan.assembler.get(cfg)
        for v in plan.variants.values():  # every variant's LoRA targets, before the first run starts
            if v.model == cfg.model:
                check_targets(parts.model, v)
        with phase("the base model's evaluation", sizes(cfg, "evaluation")):
            summary = evaluate(parts, ev_dir)
        if plan.acc.is_main_process:
            (ev_dir / "config.yaml").write_text(stamp)
    return summary


def one_run(plan: Plan, name: str, cfg: RunConfig) -> dict:
    """Variant ``name`` with ``cfg`` (its seed set): calibrate where its noise schedule reads a psi table, train,
    evaluate; a finished run is reused on --resume unless it was extended or evaluated differently."""
    run_dir = plan.out / name / f"seed_{cfg.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    finished = checkpoint.trained(run_dir / "checkpoints") >= cfg.train.iterations  # not killed while extended
    summary = _summary(run_dir / "eval" / "summary.json") if plan.resume and finished else None
    if plan.changed.get((name, cfg.seed)):
        summary = None  # trained longer or evaluated differently: continue from the last checkpoint, evaluate again
    psi = run_dir / "calibration" / "psi.json"
    have_psi = plan.resume and psi_matches(psi, cfg)  # recalibrated when what it depends on changed
    plan.acc.wait_for_everyone()  # every process has read the folder before the main one rewrites it
    if summary is not None:
        return summary
    if plan.acc.is_main_process:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        registry_files = [str(Path(f).resolve()) for f in plan.abl.registry_files]  # for dgx push / eval later
        (run_dir / "registry.json").write_text(json.dumps({"files": registry_files}))
    parts = plan.assembler.get(cfg)
    if parts.needs_calibration:
        if not have_psi:
            with phase("calibration", sizes(cfg, "calibration")):
                calibrate(parts, psi.parent, resume=plan.resume)
        parts = parts.with_psi(psi)
    evaluating = evaluation_during_training(parts, run_dir)
    with phase("training", sizes(cfg, "training")):
        model = train(parts, run_dir, resume=plan.resume, evaluate_during=evaluating)
    with phase("evaluation", sizes(cfg, "evaluation")):
        summary = evaluate(replace(parts, model=model), run_dir / "eval")
    plan.assembler.done(model)
    return summary


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
    if adapter is not None:  # its checkpoint found and checked before the pipeline loads or OUT is made
        try:
            trained_checkpoint(adapter)
        except ConfigError as e:
            raise ConfigError(f"--adapter {e}") from None
    out = writable_folder(out or Path("runs") / Path(file).stem / "eval" / name, "--out")  # before minutes of sampling
    main = process_state(cfg).is_main_process
    with held(out, "dgx eval", main):
        parts = assemble(cfg, abl.registry(), load=False)  # the training reward is not used
        if adapter is not None:
            load_adapter(parts.model, cfg, adapter)
        try:
            with phase("evaluation", sizes(cfg, "evaluation")):
                summary = evaluate(parts, out)
        except Stopped as stop:
            stop.where = f"during the evaluation into {out}; run it again (an evaluation is not resumed)"
            raise
        if main:
            plot_samples({"base" if adapter is None else Path(adapter).name: out}, out / "samples.png")
    return summary
